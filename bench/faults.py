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

The others run at 1,000 predictions/s with a version every 4,000 samples, and break the
loop once a version is proven on labels and a trained one served. Reported per run:
served accuracy (what clients got, against their true labels) in the 5 s before the
fault, during it (to its recovery: the event that says so, the rollback, or the process
ready again; 3 s at least) and from 2 s after that to the end; the rollback's delay after
a poisoning; what was lost - versions the store held that were gone at the end, lastGood
(kept, or gone at some point, and back or not at the end), labels the servers refused, predictions not answered,
answers from a cold version (one that learned nothing), process restarts - the
Reconciler's events from the fault on, and a note of the scenario's own measure.
``python bench/faults.py --scenarios all --seeds 1`` runs each once (about 4 minutes);
``--scenarios drift-then-poison --seeds 20`` about 15.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis
import yaml

from tideline.demo.harness import Loop

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
        run.cold_answers = sum(1 for a in loop.sim.answers if a.t >= self.at
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


@dataclass(frozen=True)
class Scenario:
    play: Callable[[Loop, Run, argparse.Namespace], None]
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
}


def play(name: str, seed: int, args: argparse.Namespace) -> Run:
    scenario = SCENARIOS[name]
    manifest = yaml.safe_load((ROOT / "examples" / "fraud.yaml").read_text())
    if scenario.publish_every is not None:
        manifest["spec"]["learning"]["publishEvery"] = scenario.publish_every
    run = Run(name, seed)
    with tempfile.TemporaryDirectory(prefix="tideline-faults-") as tmp:
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
    for name, runs in rows.items():

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
    return "\n".join(out)


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
