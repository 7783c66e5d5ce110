"""Faults the loop must survive, one line each: what clients were served before, during and after, and what was lost.

Each scenario runs the whole loop as ``tideline run`` does (:mod:`tideline.demo.harness`:
a real Redis, the learner, two servers and the monitor as the processes a pod runs,
restarted after a back-off when they exit as Kubernetes restarts them, the operator's
own Reconciler every half second, predictions over HTTP and their labels later through
feedback) on examples/fraud.yaml, and breaks it under traffic - issue 30's table:

* ``redis-restarted-empty``: Redis stopped, its data gone, started again empty 3 s later.
* ``pointers-evicted``: the stable revision's pointers hash deleted alone (as
  ``allkeys-lru`` evicts it).
* ``redis-full``: ``maxmemory`` set just above what Redis uses, under ``noeviction``,
  for ``--full-for`` seconds, then lifted.
* ``group-deleted-then-poison``: the monitor's consumer groups deleted, then
  ``--group-lead`` seconds later a poisoning (flipped labels through ``:learn`` for
  ``--poison-for``): rolled back as with a working monitor?
* ``monitor-killed``: the monitor killed (SIGKILL) while it holds read feedback entries
  unacknowledged: does the ``feedback`` stream still trim?
* ``operator-restart-after-rollback``: a poisoning, and the operator's turn that rolls it
  back lost before its status is written (a new Reconciler and ModelMemory from the status
  written before): no second ``RolledBack``, and unpinned once the poisoning ends.
* ``drift-then-poison``: a concept drift at ``--drift-at``, the poisoning
  ``--poison-after`` seconds later (2,000 predictions/s, fraud.yaml as it is): rolled back
  within 2 s of the poisoning, even when it is first read as concept drift? Over seeds.
* ``allkeys-lru``: ``maxmemory`` set to ``--evict-to`` of what Redis uses, under
  ``allkeys-lru``, for ``--full-for`` seconds, then lifted: keys evicted, ``StoreReset``
  and ``StoreDurable`` seen, no second "first version proven".
* ``operator-restart-after-promotion``: a new revision applied (as ``tideline run
  --canary-at`` does), and the operator's turn that promotes its canary lost before its
  status is written: exactly one ``Promoted``?

And at the door, each on a ``tideline server`` process (its default limits) on a Redis
of its own (examples/fraud.yaml, a trained version published), what the row is about:

* ``503-storm``: ``--storm`` predictions with no version loaded (a fresh store; a
  ``tideline monitor`` beside it): the errors in the servers hash and the monitor's
  health error rate.
* ``padded-body``: 48 one-row predictions padded to just under 8 MiB: the bytes the
  log holds (``MEMORY USAGE``) against the bytes sent.
* ``id-reuse``: a client id reused by another request: refused, and the first caller's
  label joins its own row?
* ``forged-ids``: ``--forged`` labels naming a server log that does not exist, then a
  genuine label whose prediction is logged after it came (the learner's join, the
  default waiting room): the forged unmatched at once, the genuine joined?
* ``empty-token``: ``feedbackAuth`` in the spec, the token empty: the exit status.
* ``big-chunked-body``: 96 MiB chunked to ``/feedback``: what the server read before its
  413 (``rchar``), and its resident memory after.
* ``idle-and-slow-connections``: 200 idle connections and 100 slowloris ones (a header
  line a second): how many are still open after 15 s, and a 4 MB header block's answer.

The other whole-loop ones run at 1,000 predictions/s with a version every 4,000 samples, and break the
loop once a version is proven on labels and a trained one served. Reported per run:
served accuracy (what clients got, against their true labels) in the 5 s before the
fault, during it (to its recovery: the event that says so, the rollback, or the process
ready again; 3 s at least) and from 2 s after that to the end; the rollback's delay after
a poisoning; what was lost - versions the store held that were gone at the end, lastGood
(kept, or gone at some point, and back or not at the end), labels the servers refused, predictions not answered,
answers from a cold version (one that learned nothing), process restarts - the
Reconciler's events from the fault on, and a note of the scenario's own measure.
``python bench/faults.py --scenarios all --seeds 1`` runs each once (about 6 minutes: the
whole-loop ones 30-55 s each, those at the door 1-20 s);
``--scenarios drift-then-poison --seeds 20`` about 15.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis
import yaml

from tideline import health, predlog
from tideline.algorithms import make_learner
from tideline.contracts import Keys
from tideline.demo.embedded import EmbeddedRedis, free_port
from tideline.demo.harness import Loop
from tideline.demo.local import DEMO_ROLLOUT
from tideline.demo.simulate import SyntheticStream
from tideline.pods.join import LogJoin
from tideline.spec import parse
from tideline.store import ModelStore

ROOT = Path(__file__).resolve().parents[1]
GOAL = 2.0  # seconds from a poisoning to its rollback
AFTER = 6.0  # seconds a run goes on after its recovery (served accuracy after)
MIN_DURING = 3.0  # seconds of served accuracy "during", at least


@dataclass
class Run:
    """What one scenario's run measured."""

    scenario: str
    seed: int
    before: float | None = None
    during: float | None = None
    after: float | None = None
    delay: float | None = None  # s from the poisoning to its rollback (poisoning scenarios)
    concept_first: bool = False  # the poisoning read as concept drift before its rollback
    versions_lost: list[int] = field(default_factory=list)
    last_good: str = "-"  # kept, or gone at some point after the fault (and back at the end)
    labels_refused: int = 0
    predictions_failed: int = 0
    cold_answers: int = 0
    restarts: list[str] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)
    note: str = ""


class Fault:
    """One run's bookkeeping: what stood before the fault, and what it cost after."""

    def __init__(self, loop: Loop, run: Run) -> None:
        self.loop, self.run = loop, run
        self.at = time.monotonic()
        self.held = self._held()
        self.refused, self.failed = loop.sim.refused_labels, loop.sim.failed
        self.restarts = len(loop.restarts)
        self.good = loop.pointers().lastGood
        run.before = _mean(loop.accuracy(self.at - 5, self.at))

    def _held(self) -> set[int]:
        with contextlib.suppress(redis.RedisError):
            return {
                int(v) for v in self.loop.client.hkeys(self.loop.keys.vmeta(self.loop.revision))
            }
        return set()

    def end(self, recovered: float, *, after: float = AFTER) -> None:
        """The fault's effect ended at ``recovered`` (monotonic): measure to the end."""
        loop, run = self.loop, self.run
        recovered = max(recovered, self.at + MIN_DURING)
        loop.wait(max(0.0, recovered + 2 + after - time.monotonic()))
        run.during = _mean(loop.accuracy(self.at, recovered))
        run.after = _mean(loop.accuracy(recovered + 2))
        keep = int(loop.model.spec.learning.keepVersions)
        latest = loop.pointers().latest or 0
        run.versions_lost = sorted(v for v in self.held - self._held() if v > latest - keep)
        if self.good is not None:
            kept = all(s.pointers is None or s.pointers.lastGood is not None
                       for s in loop.samples if s.t >= self.at)  # fmt: skip
            back = loop.pointers().lastGood is not None
            run.last_good = f"v{self.good} " + (
                "kept" if kept else "gone, back" if back else "gone"
            )
        run.labels_refused = loop.sim.refused_labels - self.refused
        run.predictions_failed = loop.sim.failed - self.failed
        run.cold_answers = sum(1 for a in loop.sim.answers if a.t >= self.at  # (the revision
                               and a.revision in (None, loop.revision)  # the store's metas hold)
                               and a.version is not None and loop.cold(a.version))  # fmt: skip
        run.restarts = [f"{r.workload} (exit {r.code})" for r in loop.restarts[self.restarts :]]
        run.events = Counter(e.reason for e in loop.events if e.t >= self.at)


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def _first(loop: Loop, reason: str, since: float, timeout: float) -> float | None:
    """When the first ``reason`` event since ``since`` came (monotonic), waiting up to
    ``timeout`` s for it; None: none came."""
    deadline = time.monotonic() + timeout
    while True:
        loop.check()
        if got := loop.reasons(reason, since):
            return got[0].t
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def _proven(loop: Loop) -> None:
    """Wait for a lastGood and a trained version served (v2 or later), then 3 s more."""

    def ready() -> bool:
        p = loop.pointers()
        return p.lastGood is not None and p.served is not None and p.served >= 2

    loop.until(ready, "a version proven on labels and a trained one served", 60)
    loop.wait(3)


def _component(loop: Loop, component: str) -> tuple[str, int]:
    """The workload of one component of the stable revision, and its first process's pid."""
    name, w = next((n, w) for n, w in loop.cluster.workloads.items()
                   if w.obj["metadata"]["labels"].get("tideline.dev/component") == component)  # fmt: skip
    return name, w.procs[0].popen.pid


# -- the scenarios --------------------------------------------------------------------------
def redis_restarted_empty(loop: Loop, run: Run, args: argparse.Namespace) -> None:
    _proven(loop)
    fault = Fault(loop, run)
    loop.redis.stop()  # its data gone with its directory: no AOF, no RDB
    time.sleep(3)
    loop.redis.start()  # the same port, empty
    reset = _first(loop, "StoreReset", fault.at, 20)
    recovered = _first(loop, "StoreRecovered", fault.at, 40)
    run.note = (f"StoreReset {_after(reset, fault.at)}, StoreRecovered {_after(recovered, fault.at)}; "
                f"latest v{loop.pointers().latest}")  # fmt: skip
    fault.end(recovered or time.monotonic())


def pointers_evicted(loop: Loop, run: Run, args: argparse.Namespace) -> None:
    _proven(loop)
    fault = Fault(loop, run)
    loop.client.delete(loop.keys.pointers(loop.revision))
    recovered = _first(loop, "StoreRecovered", fault.at, 30)
    first = [e for e in loop.reasons("Proven", fault.at) if "first version" in e.message]
    run.note = (f"StoreReset {_after(_first(loop, 'StoreReset', fault.at, 0), fault.at)}, "
                f"StoreRecovered {_after(recovered, fault.at)}; "
                f"'first version proven' again: {'yes' if first else 'no'}")  # fmt: skip
    fault.end(recovered or time.monotonic())


def redis_full(loop: Loop, run: Run, args: argparse.Namespace) -> None:
    _proven(loop)
    was = loop.client.config_get("maxmemory*")
    loop.client.config_set("maxmemory-policy", "noeviction")
    fault = Fault(loop, run)
    ooms = _ooms(loop)
    used = int(loop.client.info("memory")["used_memory"])
    loop.client.config_set("maxmemory", used + 256 * 1024)
    capacity: set[str] = set()
    end = time.monotonic() + args.full_for
    while time.monotonic() < end:
        loop.wait(0.2)
        st = loop.condition("LogCapacity")
        capacity.add(st["reason"] if st else "none")
    loop.client.config_set("maxmemory", was.get("maxmemory", "0"))
    loop.client.config_set("maxmemory-policy", was.get("maxmemory-policy", "noeviction"))
    lifted = time.monotonic()
    refused = _ooms(loop) - ooms
    run.note = (f"maxmemory {used / 2**20:.1f} MiB + 256 KiB for {args.full_for:.0f} s: "
                f"{refused} commands refused (OOM); LogCapacity while full: "
                f"{'/'.join(sorted(capacity))}")  # fmt: skip
    fault.end(lifted)


def _ooms(loop: Loop) -> int:
    """Commands Redis refused for lack of memory since it started."""
    return int((loop.client.info("errorstats").get("errorstat_OOM") or {}).get("count", 0))


def group_deleted_then_poison(loop: Loop, run: Run, args: argparse.Namespace) -> None:
    _proven(loop)
    fault = Fault(loop, run)
    streams = (loop.keys.feedback, loop.keys.samples)
    for stream in streams:
        with contextlib.suppress(redis.ResponseError):
            loop.client.xgroup_destroy(stream, "monitor")
    back = None
    while (now := time.monotonic()) < fault.at + args.group_lead:
        if back is None and all("monitor" in _groups(loop, s) for s in streams):
            back = now
        loop.wait(0.1)
    run.note = f"the monitor's groups made again {_after(back, fault.at)}"
    _poison(loop, run, args, fault)


def _groups(loop: Loop, stream: str) -> set[str]:
    try:
        return {g["name"].decode() for g in loop.client.xinfo_groups(stream)}
    except redis.ResponseError:
        return set()


def operator_restart_after_rollback(loop: Loop, run: Run, args: argparse.Namespace) -> None:
    _proven(loop)
    loop.operator.crash_after = "RolledBack"
    fault = Fault(loop, run)
    end = _poison(loop, run, args, fault, measure=False)
    crashed = loop.operator.crashes[0] if loop.operator.crashes else None
    until = fault.at + args.poison_for + args.unpin_within
    unpinned = _first(loop, "Unpinned", fault.at, max(0.0, until - time.monotonic()))
    rolled = len(loop.reasons("RolledBack", fault.at))
    run.note = (f"operator restarted {_after(crashed, fault.at)} from the status before; "
                f"RolledBack x{rolled}; Unpinned {_after(unpinned, fault.at)} "
                f"(the poisoning ended at +{args.poison_for:.0f} s); served v{loop.pointers().served} "
                f"latest v{loop.pointers().latest} at the end")  # fmt: skip
    fault.end(end, after=max(AFTER, (unpinned or 0) + 2 - end))


def _poison(loop: Loop, run: Run, args: argparse.Namespace, fault: Fault,
            measure: bool = True) -> float:  # fmt: skip
    """A poisoning from now; its rollback's delay, and the run's end measured unless not
    ``measure``. The monotonic time the poisoning's effect ended (its rollback, or none)."""
    at, start = time.monotonic(), loop.elapsed()
    loop.sim.poison = (start, start + args.poison_for)
    rolled = _first(loop, "RolledBack", at, args.poison_for + 6)
    end = rolled if rolled is not None else time.monotonic()
    run.delay = None if rolled is None else rolled - at
    run.concept_first = bool([e for e in loop.reasons("ConceptDrift", at) if e.t <= end])
    if measure:
        fault.end(end)
    return end


def monitor_killed(loop: Loop, run: Run, args: argparse.Namespace) -> None:
    loop.wait(12)
    lengths = [s.feedback_len for s in loop.samples if s.t >= time.monotonic() - 10]
    before = max((x for x in lengths if x is not None), default=0)
    name, pid = _component(loop, "monitor")
    fault = Fault(loop, run)
    held: list[bytes] = []
    for _ in range(200):  # killed while it holds read entries it has not acknowledged
        os.kill(pid, signal.SIGSTOP)
        pending = loop.client.xpending_range(loop.keys.feedback, "monitor", "-", "+", 1000)
        if pending:
            held = [p["message_id"] for p in pending]
            os.kill(pid, signal.SIGKILL)
            break
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.013)
    else:
        os.kill(pid, signal.SIGKILL)
    loop.until(lambda: [r for r in loop.restarts if r.workload == name]
               and loop.cluster.endpoints("monitor"), "the monitor ready again", 30)  # fmt: skip
    ready = time.monotonic()
    loop.wait(15)
    after = [
        s.feedback_len for s in loop.samples if s.t >= ready + 5 and s.feedback_len is not None
    ]
    first = loop.client.xinfo_stream(loop.keys.feedback)["first-entry"][0]
    past = "-" if not held else "yes" if _id(first) > max(map(_id, held)) else "no"
    run.note = (f"feedback stream: at most {before} entries in the 10 s before, {len(held)} "
                f"pending at the kill; from 5 s after the restart {min(after, default=0)} to "
                f"{max(after, default=0)}; trimmed past the entries pending: {past}")  # fmt: skip
    fault.end(ready, after=0)


def _id(entry: bytes) -> tuple[int, int]:
    ms, seq = entry.split(b"-")
    return int(ms), int(seq)


def drift_then_poison(loop: Loop, run: Run, args: argparse.Namespace) -> None:
    """The drift is the simulator's (``Loop.drift_at``); the poisoning at its time."""
    poison_at = args.drift_at + args.poison_after
    loop.wait(max(0.0, poison_at - loop.elapsed()))
    fault = Fault(loop, run)
    _poison(loop, run, args, fault)
    concept = loop.reasons("ConceptDrift")
    run.note = (
        "ConceptDrift at " + (", ".join(f"{loop.elapsed(e.t):.1f}" for e in concept) or "-") + " s"
    )


def allkeys_lru(loop: Loop, run: Run, args: argparse.Namespace) -> None:
    _proven(loop)
    was = loop.client.config_get("maxmemory*")
    evicted = int(loop.client.info("stats")["evicted_keys"])
    fault = Fault(loop, run)
    used = int(loop.client.info("memory")["used_memory"])
    loop.client.config_set("maxmemory-policy", "allkeys-lru")
    loop.client.config_set("maxmemory", int(used * args.evict_to))
    durable: set[str] = set()
    end = time.monotonic() + args.full_for
    while time.monotonic() < end:
        loop.wait(0.2)
        st = loop.condition("StoreDurable")
        durable.add(f"{st['status']}/{st['reason']}" if st else "none")
    loop.client.config_set("maxmemory", was.get("maxmemory", "0"))
    loop.client.config_set("maxmemory-policy", was.get("maxmemory-policy", "noeviction"))
    lifted = time.monotonic()
    evicted = int(loop.client.info("stats")["evicted_keys"]) - evicted
    reset = _first(loop, "StoreReset", fault.at, 3)
    recovered = _first(loop, "StoreRecovered", fault.at, 30) if reset is not None else None
    first = [e for e in loop.reasons("Proven", fault.at) if "first version" in e.message]
    run.note = (f"maxmemory {used * args.evict_to / 2**20:.1f} MiB ({args.evict_to:.0%} of what was "
                f"used) for {args.full_for:.0f} s: {evicted} keys evicted; StoreDurable while evicting "
                f"{'/'.join(sorted(durable))}; StoreReset {_after(reset, fault.at)}, StoreRecovered "
                f"{_after(recovered, fault.at)}; 'first version proven' again: "
                f"{'yes' if first else 'no'}")  # fmt: skip
    fault.end(recovered or lifted)


def operator_restart_after_promotion(loop: Loop, run: Run, args: argparse.Namespace) -> None:
    _proven(loop)
    loop.operator.crash_after = "Promoted"
    fault = Fault(loop, run)
    changed = copy.deepcopy(loop.manifest)  # a new revision, as tideline run --canary-at makes
    learning = changed["spec"].setdefault("learning", {})
    learning["batchSize"] = 2 * int(learning.get("batchSize", 64))
    loop.operator.apply(changed)
    promoted = _first(loop, "Promoted", fault.at, args.promote_within)
    loop.wait(5)  # the restarted operator's turns
    crashed = loop.operator.crashes[0] if loop.operator.crashes else None
    stable = loop.client.hget(loop.keys.routing, "stable")
    run.note = (f"canary applied; Promoted {_after(promoted, fault.at)} "
                f"x{len(loop.reasons('Promoted', fault.at))}, the operator restarted "
                f"{_after(crashed, fault.at)} from the status before; stable at the end: "
                f"{'the new revision' if stable and stable.decode() != loop.revision else 'the old one'}")  # fmt: skip
    fault.end(promoted or time.monotonic())


# -- the server at its door: a `tideline server` process on a Redis of its own -------------
PREDICT = "/v1/models/fraud:predict"
FEEDBACK = "/v1/models/fraud/feedback"
ROW = {"amount": 12.5, "hour": 3.0, "distance_km": 4.0, "account_age_days": 90.0,
       "merchant": "m-7", "country": "fr"}  # fmt: skip


class Door:
    """``with Door(tmp) as d:`` a ``tideline server`` process (one worker, its default limits)
    on an :class:`EmbeddedRedis` of its own, serving examples/fraud.yaml (with the demo's
    rollout timescale) - a trained version published first unless not ``trained``; with
    ``monitor``, a ``tideline monitor`` process beside it."""

    def __init__(self, tmp: Path, *, trained: bool = True, monitor: bool = False) -> None:
        manifest = yaml.safe_load((ROOT / "examples" / "fraud.yaml").read_text())
        manifest["spec"]["rollout"] = {**manifest["spec"]["rollout"], **DEMO_ROLLOUT}
        self.model = parse(manifest)
        self.keys = Keys(self.model.namespace, self.model.name)
        self.config = tmp / "fraud.yaml"
        self.config.write_text(yaml.safe_dump(manifest))
        self.trained, self.monitor = trained, monitor
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Door:
        self.redis = EmbeddedRedis().start()
        self.client: Any = redis.Redis.from_url(self.redis.url, socket_timeout=10.0)
        try:
            if self.trained:
                learner = make_learner(self.model.spec.model.to_dict())
                rows, y = SyntheticStream([f.to_dict() for f in self.model.spec.model.features],
                                          "binary", seed=0).take(2000)  # fmt: skip
                learner.learn_many(learner.schema.encode(rows), y)
                ModelStore(self.client, self.model.namespace, self.model.name).publish(
                    self.model.revision, 1, learner
                )
            self.port = free_port()
            self.server = self.start("server", "--port", str(self.port))
            if self.monitor:
                self.start("monitor")
            deadline = time.monotonic() + 30
            while self.get("/v2/health/live") != 200:
                if self.server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"tideline server did not start (exit {self.server.poll()})"
                    )
                time.sleep(0.1)
        except BaseException:
            self.__exit__()
            raise
        return self

    def start(self, command: str, *flags: str, env: dict[str, str] | None = None,
              log: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "tideline.cli", "--log-level", "WARNING", command,
             "--config", str(self.config), "--redis", self.redis.url, *flags],
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self.client.close()
        self.redis.stop()

    def _http(self, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            with contextlib.suppress(orjson.JSONDecodeError):
                return resp.status, orjson.loads(data) if data else None
            return resp.status, data
        except (OSError, http.client.HTTPException):
            return 0, None
        finally:
            conn.close()

    def get(self, path: str) -> int:
        return self._http("GET", path)[0]

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        return self._http("POST", path, raw, {"content-type": "application/json"})

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def tracks(self) -> dict[str, dict[str, int]]:
        """The servers hash's per-track counters, summed over the server processes."""
        out: dict[str, dict[str, int]] = {}
        for raw in self.client.hvals(self.keys.servers):
            for track, c in orjson.loads(raw).get("tracks", {}).items():
                mine = out.setdefault(track, {})
                for k in ("requests", "errors", "refused", "shed"):
                    mine[k] = mine.get(k, 0) + int(c.get(k, 0))
        return out

    def logs_bytes(self) -> int:
        """What the servers' prediction logs hold in Redis (``MEMORY USAGE ... SAMPLES 0``)."""
        return sum(int(self.client.memory_usage(self.keys.log(i.decode()), samples=0) or 0)
                   for i in self.client.zrange(self.keys.logs, 0, -1))  # fmt: skip


def _rss(pid: int) -> int:
    """A process's resident memory, bytes."""
    for text in Path(f"/proc/{pid}/status").read_text().splitlines():
        if text.startswith("VmRSS:"):
            return int(text.split()[1]) * 1024
    return 0


def _read_bytes(pid: int) -> int:
    """Bytes a process has read from files and sockets (``rchar``)."""
    for text in Path(f"/proc/{pid}/io").read_text().splitlines():
        if text.startswith("rchar:"):
            return int(text.split()[1])
    return 0


def _until(cond: Callable[[], Any], timeout: float) -> Any:
    """Poll ``cond`` until it is truthy (returned) or ``timeout`` s pass (its last value)."""
    deadline = time.monotonic() + timeout
    while not (got := cond()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return got


def _status(answer: bytes) -> str:
    return answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "closed"


def _answer(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """What the server sends before it closes the connection (or ``timeout`` s pass)."""
    sock.settimeout(timeout)
    got = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            got += chunk
    return got


def storm_503(tmp: Path, run: Run, args: argparse.Namespace) -> None:
    with Door(tmp, trained=False, monitor=True) as d:
        codes = Counter(d.post(PREDICT, {"instances": [ROW]})[0] for _ in range(args.storm))

        def seen() -> tuple[dict[str, int], Any] | None:
            stable = d.tracks().get("stable", {})
            h = health.decode(d.client.get(d.keys.health))
            t = h.track("stable") if h is not None else None
            ok = stable.get("errors", 0) >= args.storm and t is not None and t.errors > 0
            return (stable, t) if ok else None

        got = _until(seen, 15)
        stable = d.tracks().get("stable", {})
        h = health.decode(d.client.get(d.keys.health))
        t = h.track("stable") if h is not None else None
    answers = ", ".join(f"{n} x{c}" for c, n in sorted(codes.items()))
    rate = "no health" if t is None else (
        f"error rate {t.error_rate if t.error_rate is None else f'{t.error_rate:.2f}'} "
        f"({t.errors} errors of {t.requests} requests)")  # fmt: skip
    run.note = (f"{args.storm} predictions with no version loaded: answered {answers}; the servers "
                f"hash: {stable.get('requests', 0)} requests, {stable.get('errors', 0)} errors; "
                f"the monitor's health: {rate}{'' if got else ' (not all within 15 s)'}")  # fmt: skip


def padded_body(tmp: Path, run: Run, args: argparse.Namespace) -> None:
    with Door(tmp) as d:
        used = int(d.client.info("memory")["used_memory"])
        sent, codes = 0, Counter[int]()
        for i in range(48):  # one row each, whitespace to just under the 8 MiB body limit
            row = orjson.dumps({**ROW, "amount": float(i)})
            pad = b" " * ((8 << 20) - 1024 - len(row))
            body = b'{"instances":[' + pad + row + b"]}"
            sent += len(body)
            codes[d.post(PREDICT, body)[0]] += 1
        _until(lambda: d.client.zcard(d.keys.logs) and d.logs_bytes() > 0, 5)
        time.sleep(1)  # the log writer's last flush
        held = d.logs_bytes()
        grew = int(d.client.info("memory")["used_memory"]) - used
    answers = ", ".join(f"{n} x{c}" for c, n in sorted(codes.items()))
    run.note = (f"48 one-row predictions, {sent / 2**20:.0f} MiB sent (answered {answers}): the log "
                f"holds {held / 1024:.1f} KiB (MEMORY USAGE), {held / 48:.0f} B a prediction; "
                f"Redis used memory {grew / 1024:+.0f} KiB")  # fmt: skip


def id_reuse(tmp: Path, run: Run, args: argparse.Namespace) -> None:
    victim = {**ROW, "merchant": "m-victim"}
    attacker = {**ROW, "amount": 999.0, "merchant": "m-attacker"}
    with Door(tmp) as d:
        first, _ = d.post(PREDICT, {"instances": [victim], "ids": ["order-42"]})
        second, why = d.post(PREDICT, {"instances": [attacker], "ids": ["order-42"]})
        join = LogJoin(d.client, d.keys, d.model.spec.learning.labelWindow, "bench")
        join.add("label-1", "order-42", 1, time.time())  # the first caller's label
        joined = _until(join.resolve, 5) or []
    rows = [x.features() for x in joined]
    whose = ("its own row" if rows == [[victim]] else "the other caller's row"
             if rows == [[attacker]] else f"{rows or 'nothing'}")  # fmt: skip
    error = (why.get("error", "") if isinstance(why, dict) else "").split(";")[0]
    run.note = (f"ids ['order-42'] answered {first}; the same id from another request: {second}"
                f"{f' ({error})' if error else ''}; the first caller's label joined {whose}")  # fmt: skip


def forged_ids(tmp: Path, run: Run, args: argparse.Namespace) -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "fraud.yaml").read_text())
    model = parse(manifest)
    keys = Keys(model.namespace, model.name)
    with EmbeddedRedis() as server:
        r = server.client()
        join = LogJoin(r, keys, model.spec.learning.labelWindow, "bench")  # the default room
        now = time.time()
        forged = os.urandom(predlog.INSTANCE_HEX // 2).hex()  # a log no server writes
        prefix = predlog.id_prefix(forged, f"{int(now * 1000)}-0", 0,
                                   os.urandom(predlog.SECRET_HEX // 2).hex())  # fmt: skip
        began = time.monotonic()
        for i in range(args.forged):
            join.add(f"forged-{i}", f"{prefix}{i}", 1, now)
        # a genuine prediction: answered (its log listed) before its log entry is written
        instance = os.urandom(predlog.INSTANCE_HEX // 2).hex()
        entry, secret = f"{int(time.time() * 1000)}-0", os.urandom(predlog.SECRET_HEX // 2).hex()
        r.zadd(keys.logs, {instance: time.time()})
        join.add("genuine", f"{predlog.id_prefix(instance, entry, 0, secret)}0", 1, time.time())
        joined = join.resolve()
        took = time.monotonic() - began
        rejected = join.take_rejected()
        waiting, overflow = join.waiting, join.overflow
        meta = predlog.Meta(secret=secret, track="stable", models={"stable": (model.revision, 1)})
        r.xadd(keys.log(instance), predlog.encode([meta], [orjson.dumps([0.5])],
                                                  [orjson.dumps({"instances": [ROW]})]), id=entry)  # fmt: skip
        later = time.monotonic()
        joined += _until(join.resolve, 5) or []
        late = time.monotonic() - later
    reasons = Counter(x.reason for x in rejected)
    run.note = (f"{args.forged:,} labels naming a log no server writes: {len(rejected):,} unmatched at "
                f"the first resolve ({took:.1f} s with the adds; "
                f"{'; '.join(f'{r!r} x{n}' for r, n in reasons.items())}), {waiting} waiting, "
                f"{overflow} pushed out; the genuine label "
                f"{'joined' if [x.feedback_ids for x in joined] == [['genuine']] else 'NOT joined'}"
                f" {late:.1f} s after its prediction was logged")  # fmt: skip


def empty_token(tmp: Path, run: Run, args: argparse.Namespace) -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "fraud.yaml").read_text())
    manifest["spec"]["serving"]["feedbackAuth"] = {"secretRef": {"name": "fraud-labels"}}
    config = tmp / "fraud.yaml"
    config.write_text(yaml.safe_dump(manifest))
    with EmbeddedRedis() as server:
        out = subprocess.run(
            [sys.executable, "-m", "tideline.cli", "server", "--config", str(config), "--redis",
             server.url, "--port", str(free_port())],
            env={**os.environ, "TIDELINE_FEEDBACK_TOKEN": ""}, capture_output=True, timeout=60,
        )  # fmt: skip
    last = (out.stderr.decode().strip().splitlines() or ["(nothing)"])[-1].split(": the ")[0]
    run.note = (
        f"tideline server with an empty TIDELINE_FEEDBACK_TOKEN: exit {out.returncode}: {last}"
    )


def big_chunked_body(tmp: Path, run: Run, args: argparse.Namespace) -> None:
    total = 96 << 20
    with Door(tmp) as d:
        pid = d.server.pid
        rss, read = _rss(pid), _read_bytes(pid)
        sock = d.connect()
        sock.sendall(f"POST {FEEDBACK} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
                     "\r\ntransfer-encoding: chunked\r\n\r\n".encode())  # fmt: skip
        piece = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
        sent = 0
        with contextlib.suppress(OSError):
            while sent < total:
                sock.sendall(piece)
                sent += 65536
        answer = _answer(sock)
        sock.close()
        time.sleep(0.5)
        read, grew = _read_bytes(pid) - read, _rss(pid) - rss
        ok = d.post(PREDICT, {"instances": [ROW]})[0]
    run.note = (f"a 96 MiB chunked body to /feedback: {_status(answer)} after {sent / 2**20:.1f} MiB "
                f"sent, {read / 2**20:.1f} MiB read by the server; its RSS {grew / 2**20:+.1f} MiB "
                f"({rss / 2**20:.0f} MiB before); a prediction after: {ok}")  # fmt: skip


def idle_and_slow_connections(tmp: Path, run: Run, args: argparse.Namespace) -> None:
    with Door(tmp) as d:
        idle = [d.connect() for _ in range(200)]
        slow = [d.connect() for _ in range(100)]
        for sock in slow:
            sock.sendall(f"POST {PREDICT} HTTP/1.1\r\n".encode())
        open_slow = set(range(len(slow)))
        began = time.monotonic()
        served = Counter[int]()
        closed: dict[str, float] = {}  # all of a kind closed, s after they were opened
        for i in range(15):  # a header line a second from each slow one, never the last
            for k in list(open_slow):
                try:
                    slow[k].sendall(b"x-slow-%d: y\r\n" % i)
                except OSError:
                    open_slow.discard(k)
            served[d.post(PREDICT, {"instances": [ROW]})[0]] += 1
            time.sleep(max(0.0, began + i + 1 - time.monotonic()))
            for kind, socks in (("idle", idle), ("slow", slow)):
                if kind not in closed and not any(_open(sock) for sock in socks):
                    closed[kind] = time.monotonic() - began
        still = [sock for sock in idle + slow if _open(sock)]
        n_idle = sum(1 for sock in idle if sock in still)
        for sock in idle + slow:
            sock.close()
        big = d.connect()
        with contextlib.suppress(OSError):
            big.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-pad: " + b"p" * (4 << 20)
                        + b"\r\n\r\n")  # fmt: skip
        answer = _answer(big)
        big.close()
    answers = ", ".join(f"{n} x{c}" for c, n in sorted(served.items()))
    run.note = (f"200 idle and 100 slowloris connections: after 15 s {n_idle} idle and "
                f"{len(still) - n_idle} slow still open (all idle closed {_within(closed.get('idle'))}, all "
                f"slow {_within(closed.get('slow'))}); predictions meanwhile answered {answers}; "
                f"a 4 MB header block: {_status(answer)}")  # fmt: skip


def _within(t: float | None) -> str:
    return "never" if t is None else f"within {np.ceil(t):.0f} s"


def _open(sock: socket.socket) -> bool:
    """Whether the server has not closed the connection (nothing, or unread bytes, to read)."""
    sock.setblocking(False)
    try:
        got = sock.recv(1 << 16)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)
    return bool(got) and not got.startswith(b"HTTP/1.1 4")


@dataclass(frozen=True)
class Scenario:
    play: Callable[[Any, Run, argparse.Namespace], None]  # a Loop, or a directory (not loop)
    loop: bool = True  # the whole loop runs (served accuracy measured); else the play's own
    rate: float = 1000.0
    publish_every: int | None = 4000  # None: fraud.yaml's
    drift: bool = False
    poisons: bool = False  # a poisoning follows the fault: its rollback is measured


SCENARIOS = {
    "redis-restarted-empty": Scenario(redis_restarted_empty),
    "pointers-evicted": Scenario(pointers_evicted),
    "redis-full": Scenario(redis_full),
    "group-deleted-then-poison": Scenario(group_deleted_then_poison, poisons=True),
    "monitor-killed": Scenario(monitor_killed),
    "operator-restart-after-rollback": Scenario(operator_restart_after_rollback, poisons=True),
    "drift-then-poison": Scenario(
        drift_then_poison, rate=2000.0, publish_every=None, drift=True, poisons=True
    ),
    "allkeys-lru": Scenario(allkeys_lru),
    "operator-restart-after-promotion": Scenario(operator_restart_after_promotion),
    "503-storm": Scenario(storm_503, loop=False),
    "padded-body": Scenario(padded_body, loop=False),
    "id-reuse": Scenario(id_reuse, loop=False),
    "forged-ids": Scenario(forged_ids, loop=False),
    "empty-token": Scenario(empty_token, loop=False),
    "big-chunked-body": Scenario(big_chunked_body, loop=False),
    "idle-and-slow-connections": Scenario(idle_and_slow_connections, loop=False),
}


def play(name: str, seed: int, args: argparse.Namespace) -> Run:
    scenario = SCENARIOS[name]
    manifest = yaml.safe_load((ROOT / "examples" / "fraud.yaml").read_text())
    if scenario.publish_every is not None:
        manifest["spec"]["learning"]["publishEvery"] = scenario.publish_every
    run = Run(name, seed)
    with tempfile.TemporaryDirectory(prefix="tideline-faults-") as tmp:
        if not scenario.loop:
            try:
                scenario.play(Path(tmp), run, args)
            except (AssertionError, OSError, redis.RedisError, subprocess.SubprocessError) as e:
                run.note = (run.note + "; " if run.note else "") + f"failed: {e!r}"
            return run
        loop = Loop(Path(tmp) / "cluster", manifest, rate=args.rate or scenario.rate, seed=seed,
                    drift_at=args.drift_at if scenario.drift else None)  # fmt: skip
        with loop:
            try:
                scenario.play(loop, run, args)
            except AssertionError as e:  # a wait that timed out, or the operator's loop stopped
                run.note = (run.note + "; " if run.note else "") + str(e).splitlines()[0]
    return run


# -- printing -------------------------------------------------------------------------------
def _after(t: float | None, since: float) -> str:
    return "never" if t is None else f"+{t - since:.1f} s"


def _acc(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _lost(r: Run) -> str:
    parts = [f"versions {','.join(f'v{v}' for v in r.versions_lost) or 'none'}",
             f"lastGood {r.last_good}", f"labels refused {r.labels_refused}",
             f"predictions failed {r.predictions_failed}", f"cold answers {r.cold_answers}",
             f"restarts {', '.join(r.restarts) or 'none'}"]  # fmt: skip
    return "; ".join(parts)


def _events(r: Run) -> str:
    return ", ".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(r.events.items())) or "none"


def line(r: Run) -> str:
    if not SCENARIOS[r.scenario].loop:
        return f"seed {r.seed}  {r.note}"
    delay = "" if not SCENARIOS[r.scenario].poisons else (
        f"  rollback {'-' if r.delay is None else f'{r.delay:.1f} s'}"
        f"{' (concept drift first)' if r.concept_first else ''}")  # fmt: skip
    return (f"seed {r.seed}  served accuracy {_acc(r.before)} before, {_acc(r.during)} during, "
            f"{_acc(r.after)} after{delay}\n    lost: {_lost(r)}\n    events: {_events(r)}\n"
            f"    {r.note}")  # fmt: skip


def table(rows: dict[str, list[Run]]) -> str:
    head = ("scenario", "seeds", "served accuracy before / during / after",
            "rollback after poisoning s (median, slowest; over 2 s; none)",
            "versions lost", "lastGood", "labels refused", "predictions failed",
            "cold answers", "restarts", "events")  # fmt: skip
    out = [" | ".join(head), " | ".join("---" for _ in head)]
    door = ["", "scenario | seeds | what happened", "--- | --- | ---"]
    for name, runs in rows.items():
        if not SCENARIOS[name].loop:
            notes = list(dict.fromkeys(r.note for r in runs))  # the distinct ones, in order
            door.append(f"{name} | {len(runs)} | {' // '.join(notes)}")
            continue

        def avg(key: str, runs: list[Run] = runs) -> str:
            xs = [getattr(r, key) for r in runs if getattr(r, key) is not None]
            return _acc(float(np.mean(xs)) if xs else None)

        delays = [r.delay for r in runs if r.delay is not None]
        rollback = "-"
        if SCENARIOS[name].poisons:
            rollback = (f"{np.median(delays):.1f}, {max(delays):.1f}; " if delays else "") + (
                f"{sum(d > GOAL for d in delays)}; {sum(r.delay is None for r in runs)}"
            )
            if any(r.concept_first for r in runs):
                rollback += f" ({sum(r.concept_first for r in runs)} read as concept drift first)"
        events: Counter[str] = sum((r.events for r in runs), Counter())
        out.append(" | ".join([
            name, str(len(runs)), " / ".join(avg(k) for k in ("before", "during", "after")),
            rollback,
            str(sum(len(r.versions_lost) for r in runs)),
            ", ".join(sorted({r.last_good for r in runs})),
            str(sum(r.labels_refused for r in runs)),
            str(sum(r.predictions_failed for r in runs)),
            str(sum(r.cold_answers for r in runs)),
            str(sum(len(r.restarts) for r in runs)),
            ", ".join(f"{k} {n}" for k, n in sorted(events.items())) or "none",
        ]))  # fmt: skip
    return "\n".join((out if len(out) > 2 else []) + (door if len(door) > 3 else []))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", default="all",
                    help=f"comma-separated, or all: {', '.join(SCENARIOS)}")  # fmt: skip
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--rate", type=float, default=None,
                    help="predictions/s (default: 2,000 for drift-then-poison, 1,000 otherwise)")  # fmt: skip
    ap.add_argument("--drift-at", type=float, default=10.0)
    ap.add_argument("--poison-after", type=float, default=20.0,
                    help="seconds from the drift to the poisoning (issue 30: 20)")  # fmt: skip
    ap.add_argument("--poison-for", type=float, default=10.0)
    ap.add_argument("--group-lead", type=float, default=5.0,
                    help="seconds the monitor's groups are gone before the poisoning")  # fmt: skip
    ap.add_argument("--full-for", type=float, default=5.0, help="seconds Redis is full")
    ap.add_argument("--evict-to", type=float, default=0.8,
                    help="allkeys-lru: maxmemory as a share of the memory Redis used")  # fmt: skip
    ap.add_argument("--promote-within", type=float, default=60.0,
                    help="seconds to wait for the canary's Promoted")  # fmt: skip
    ap.add_argument("--storm", type=int, default=200, help="predictions in the 503 storm")
    ap.add_argument("--forged", type=int, default=110_000, help="forged labels")
    ap.add_argument("--unpin-within", type=float, default=30.0,
                    help="seconds after the poisoning ends to wait for Unpinned")  # fmt: skip
    args = ap.parse_args()
    # the operator's warnings while Redis is down or full, a line a turn: the events say it
    logging.getLogger("tideline.operator").setLevel(logging.ERROR)
    names = list(SCENARIOS) if args.scenarios == "all" else args.scenarios.split(",")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenarios {unknown}: {', '.join(SCENARIOS)}")
    rows: dict[str, list[Run]] = {}
    began = time.monotonic()
    for name in names:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            r = play(name, seed, args)
            rows.setdefault(name, []).append(r)
            print(f"[{time.monotonic() - began:5.0f}s] {name}  {line(r)}", flush=True)
    print(f"\n{args.seeds} seed(s); poisoning for {args.poison_for:.0f} s: {args.poison_after:.0f} s "
          f"after the drift (drift-then-poison), {args.group_lead:.0f} s after the groups went "
          f"(group-deleted-then-poison).\n")  # fmt: skip
    print(table(rows))


if __name__ == "__main__":
    main()
