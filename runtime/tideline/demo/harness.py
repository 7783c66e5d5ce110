"""The whole loop as ``tideline run`` drives it, for tests and benchmarks that break it.

:class:`Loop` starts an :class:`~tideline.demo.embedded.EmbeddedRedis`, the
demo's operator stand-in (:class:`tideline.demo.local.OperatorLoop`: the
operator's own ``Reconciler`` every half second) over a
:class:`~tideline.demo.cluster.ProcessCluster` (the learner, the servers and
the monitor as the processes a pod runs), and the demo's
:class:`~tideline.demo.local.Simulator` (predictions over HTTP, their labels
later through feedback, a poisoning on demand) on a thread of its own, with
the demo's rollout timescale. What a test reads while it runs:

* ``answers``: each prediction request's answer - when, revision, ``model_version``;
* ``samples``: four times a second, the stable revision's pointers, the health
  summary's timestamp, the feedback stream's length (None while Redis is down);
* ``events``: the Reconciler's events; ``status``: the status it last wrote, ``statuses``
  each one it wrote (seen four times a second);
* ``metas``: what the store said of each version (``n_seen``), each distinct one seen;
* ``restarts``: processes that exited, started again by the ProcessCluster's
  restart policy (Kubernetes': after a back-off), which the traffic thread plays;
* ``sim.refused_labels``, ``sim.failed``: labels the servers did not take, and
  prediction requests not answered 200.

``operator.crash_after = "RolledBack"`` plays the operator's own crash: the
turn that emits that event is lost before its status is written, and the
next turn is a new operator process's (a new Reconciler and ModelMemory),
from the status written before it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson
import redis

from tideline.contracts import Keys, Pointers
from tideline.demo.cluster import ProcessCluster, Restart
from tideline.demo.embedded import EmbeddedRedis
from tideline.demo.local import (
    DEMO_ROLLOUT,
    TICK,
    OperatorLoop,
    Simulator,
    _LiveView,
    _wait_ready,
)
from tideline.spec import OnlineModel, parse

T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    t: float  # monotonic
    revision: str | None
    version: int | None


@dataclass(frozen=True)
class Sample:
    t: float  # monotonic
    pointers: Pointers | None  # None: Redis did not answer
    health_ts: float | None  # the health summary's ``ts`` (None: none, or Redis down)
    feedback_len: int | None


@dataclass(frozen=True)
class Event:
    t: float  # monotonic
    kind: str
    reason: str
    message: str


class WatchedSimulator(Simulator):
    """The demo's simulator, keeping what each prediction was answered with, and counting
    the labels the servers did not take and the predictions not answered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers: list[Answer] = []
        self.refused_labels = 0  # feedback labels not accepted (202)
        self.failed = 0  # prediction requests not answered 200

    def _post(self, port: int, path: str, body: Any,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
        status, out = super()._post(port, path, body, headers)
        if path.endswith(":predict"):
            if status == 200 and isinstance(out, dict):
                version = out.get("model_version")
                self.answers.append(Answer(time.monotonic(), out.get("revision"),
                                           int(version) if version is not None else None))  # fmt: skip
            else:
                self.failed += 1
        elif path.endswith("/feedback") and status != 202:
            self.refused_labels += len(body["feedback"])
        return status, out


class CrashingOperator(OperatorLoop):
    """The demo's operator loop, which can lose a turn as a crashed operator process does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.crash_after: str | None = None  # an event's reason: the turn emitting it crashes
        self.crashes: list[float] = []  # monotonic

    def turn(self) -> None:
        from tideline_operator.reconcile import ModelMemory, Reconciler

        with self.lock:
            body = copy.deepcopy(self.body)
        reasons: list[str] = []

        def event(kind: str, reason: str, message: str) -> None:
            reasons.append(reason)
            self.on_event(kind, reason, message)

        new = self.reconciler.turn(body, self.mem, self.cluster.children(), event)
        if self.crash_after is not None and self.crash_after in reasons:
            # its events are out, its status never written: a new process starts from the
            # status the resource holds
            self.crash_after = None
            self.crashes.append(time.monotonic())
            self.reconciler = Reconciler(self.cluster, self.reconciler.settings)
            self.mem = ModelMemory()
            with self.lock:
                self.body["status"] = copy.deepcopy(self.status)
            return
        if new is not None:
            self.status = new
            with self.lock:
                if "status" in self.body:  # (read from the resource since the crash)
                    self.body["status"] = copy.deepcopy(new)


@dataclass
class Loop:
    """``with Loop(tmp_path, manifest) as loop:`` - the loop under traffic for the block."""

    workdir: Path
    manifest: dict[str, Any]
    rate: float = 1000.0
    seed: int = 7
    drift_at: float | None = None  # seconds of traffic: the simulator's concept drift
    events: list[Event] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    metas: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)
    statuses: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # each one written

    def __post_init__(self) -> None:
        manifest = dict(self.manifest)
        manifest["spec"] = {**manifest["spec"],
                            "rollout": {**manifest["spec"].get("rollout", {}), **DEMO_ROLLOUT}}  # fmt: skip
        self.manifest = manifest
        self.model: OnlineModel = parse(manifest)
        self.keys = Keys(self.model.namespace, self.model.name)
        self.revision = self.model.revision
        self.stop = threading.Event()
        self.start = time.monotonic()
        self.driver_error: BaseException | None = None

    # -- running --------------------------------------------------------------------------
    def __enter__(self) -> Loop:
        self.redis = EmbeddedRedis().start()
        try:
            self.client: Any = redis.Redis.from_url(self.redis.url, socket_timeout=2.0)
            self.cluster = ProcessCluster(self.workdir, self.redis.url)
            self.operator = CrashingOperator(self.manifest, self.cluster, self.redis.url,
                                             self._event)  # fmt: skip
            self.sim = WatchedSimulator(self.model, self.rate, self.drift_at, self.seed)
            self.operator.turn()  # the first turn starts the processes
            self.operator.start()
            _wait_ready(self.cluster, self.stop, _LiveView(io.StringIO(), 0.0))
            self.start = time.monotonic()
            self.driver = threading.Thread(target=self._drive, daemon=True, name="traffic")
            self.driver.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if getattr(self, "driver", None) is not None:
            self.driver.join(10)
        if getattr(self, "operator", None) is not None:
            self.operator.stopped.set()
            if self.operator.is_alive():
                self.operator.join(10)
        if getattr(self, "cluster", None) is not None:
            self.cluster.stop()
        if getattr(self, "client", None) is not None:
            self.client.close()
        self.redis.stop()

    def _event(self, kind: str, reason: str, message: str) -> None:
        self.events.append(Event(time.monotonic(), kind, reason, message))

    def _drive(self) -> None:
        """Traffic every tick, the restart policy, and a sample of the store 4 times a second."""
        next_sample = 0.0
        try:
            while not self.stop.wait(TICK):
                now = time.monotonic()
                self.sim.step(now - self.start, now, self.cluster.endpoints("server"))
                self.cluster.restart_exited(now)
                if now >= next_sample:
                    next_sample = now + 0.25
                    self._sample(now)
        except BaseException as e:  # surfaced by check()
            self.driver_error = e

    def _sample(self, now: float) -> None:
        status = self.operator.status
        if not self.statuses or self.statuses[-1][1] is not status:
            self.statuses.append((now, status))
        try:
            p = self.client.pipeline(transaction=False)
            p.hgetall(self.keys.pointers(self.revision))
            p.get(self.keys.health)
            p.xlen(self.keys.feedback)
            p.hgetall(self.keys.vmeta(self.revision))
            raw, health, xlen, vmeta = p.execute()
        except redis.RedisError:
            self.samples.append(Sample(now, None, None, None))
            return
        ts = None
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            ts = float(orjson.loads(health)["ts"]) if health else None
        for version, meta in vmeta.items():
            seen = self.metas.setdefault((self.revision, int(version)), [])
            with contextlib.suppress(ValueError):
                if (got := orjson.loads(meta)) not in seen:  # each one the store held
                    seen.append(got)
        self.samples.append(Sample(now, Pointers.from_hash(raw), ts, int(xlen)))

    # -- reading ----------------------------------------------------------------------------
    def check(self) -> None:
        """Raise what stopped the operator's loop or the traffic, if anything did."""
        if self.operator.error is not None:
            raise AssertionError(f"the operator's loop stopped: {self.operator.error!r}")
        if self.driver_error is not None:
            raise AssertionError(f"the traffic stopped: {self.driver_error!r}")

    def until(self, cond: Callable[[], T], what: str, timeout: float) -> T:
        """Poll ``cond`` until it is truthy (returned); fail naming ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            got = cond()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:.0f}s\n{self.describe()}")
            time.sleep(0.1)

    def wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check()
            time.sleep(min(0.2, left))

    def elapsed(self, t: float | None = None) -> float:
        return (time.monotonic() if t is None else t) - self.start

    @property
    def restarts(self) -> list[Restart]:
        return self.cluster.restarts

    @property
    def status(self) -> dict[str, Any]:
        return self.operator.status

    def pointers(self) -> Pointers:
        return Pointers.from_hash(self.client.hgetall(self.keys.pointers(self.revision)))

    def cold(self, version: int) -> bool:
        """Whether the store ever said of ``version`` that it learned nothing (``n_seen`` 0
        and no warm start), as a cold model's v0 is."""
        return any(int(m.get("n_seen", 1)) == 0 and "warmStart" not in m
                   for m in self.metas.get((self.revision, version), []))  # fmt: skip

    def reasons(self, reason: str, since: float = 0.0) -> list[Event]:
        return [e for e in list(self.events) if e.reason == reason and e.t >= since]

    def condition(self, kind: str) -> dict[str, Any] | None:
        return next((c for c in self.status.get("conditions") or [] if c["type"] == kind), None)

    def accuracy(self, since: float, until: float | None = None) -> list[float]:
        """Served accuracy (what clients got, against the true labels) in each whole second of
        the run between two monotonic times."""
        lo = int(np.ceil(self.elapsed(since)))
        hi = int(self.elapsed(until)) if until is not None else int(self.elapsed()) - 1
        hits = dict(self.sim.hits)
        return [hits[s][0] / hits[s][1] for s in range(lo, hi) if hits.get(s, [0, 0])[1]]

    def describe(self) -> str:
        """What the loop did, for a failure's message."""
        lines = [f"after {self.elapsed():.1f}s: status phase {self.status.get('phase')} served "
                 f"v{self.status.get('servedVersion')} latest v{self.status.get('latestVersion')} "
                 f"lastGood v{self.status.get('lastGoodVersion')}"]  # fmt: skip
        lines += [f"  {self.elapsed(e.t):6.1f}s {e.reason}: {e.message}" for e in self.events]
        lines += [f"  {self.elapsed(r.t):6.1f}s restarted {r.workload} (exit {r.code}):\n"
                  f"{r.tail[-800:]}" for r in self.restarts]  # fmt: skip
        lines.append(f"  served accuracy by second: {self.sim.accuracy_timeline()}")
        return "\n".join(lines)
