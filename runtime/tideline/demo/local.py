"""``tideline run``: the whole loop on one machine, without a cluster.

Starts a real Redis (:mod:`tideline.demo.embedded`) and the operator's own
reconcile loop (:class:`tideline_operator.reconcile.Reconciler`, ``decide``
included) against a :class:`tideline.demo.cluster.ProcessCluster`, so the
learner, the servers and the monitor run as the same ``tideline learner|
server|monitor`` processes a pod runs, on loopback ports. A simulator sends
prediction requests over HTTP and the labels later, out of order, through
the feedback endpoint; a concept drift is injected at ``drift_at``, a
label poisoning at ``poison_at`` and a new revision applied at
``canary_at``. The rollout runs on the demo's timescale (seconds instead of
minutes; printed at the start).

With ``source="kafka"`` (``tideline run --source kafka``) a Kafka broker is
started too (:class:`tideline.demo.embedded.EmbeddedKafka`: the jars ``make
kafka-bin`` resolves, and Java) and the model's samples and feedback go
through its topics: the servers produce the labels, the learner and the
monitor consume them.

The poisoning is a label producer gone wrong: for ``poison_for`` seconds it
sends every request's rows again through ``:learn`` with their labels
flipped, twice over, so the learner learns garbage faster than the truth
(clicks only: a click on every row that was not clicked, twice over).
The feedback (the outcome of what was served) stays true: the monitor
judges versions on it, sees the learner's new versions lose against the
proven ``lastGood`` on the same samples, and the operator rolls back.

``accuracy_timeline`` is what clients got: the accuracy of the predictions
answered in each second, against their true labels (binary and multiclass
models); a regression's is ``rmse_timeline``, their RMSE (``quality`` says which).

A line per second (a live table on a terminal) shows versions, accuracy (RMSE)
per track, drift, the canary and latency; rollbacks and promotions are
printed as they happen. A process that exits is started again after a
back-off, as Kubernetes restarts a pod's container (``BackOff`` events;
:meth:`ProcessCluster.restart_exited`), and the summary counts the restarts. At the end: a summary in words, a report (HTML with
plots) and the summary as JSON on the last line.
"""

from __future__ import annotations

import contextlib
import copy
import heapq
import http.client
import math
import secrets
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import msgspec
import numpy as np
import orjson
import redis

from tideline.contracts import Backtest, Keys, LearnerStatus
from tideline.ctl.output import list_row
from tideline.ctl.view import render_get, utc
from tideline.demo.cluster import ProcessCluster
from tideline.demo.embedded import EmbeddedKafka, EmbeddedRedis
from tideline.demo.simulate import SyntheticStream
from tideline.spec import OnlineModel, parse
from tideline.tasks import Task

TICK = 0.02
ROWS_PER_REQUEST = 32
DEMO_ROLLOUT = {
    "steps": [{"setWeight": 25}, {"pause": "4s"}, {"analysis": {}}, {"setWeight": 50},
              {"pause": "4s"}],
    "analysis": {"interval": "2s", "minSamples": 300, "maxAccuracyDrop": 0.03,
                 "maxErrorRate": 0.05, "maxP95Latency": "1s", "failureLimit": 3},
}  # fmt: skip


@dataclass
class Event:
    t: float  # seconds into the run
    kind: str
    reason: str
    message: str
    at: float = 0.0  # when (Unix seconds; 0: not known)

    def as_api(self) -> dict[str, Any]:
        """As the API server returns a core/v1 Event (what :mod:`tideline.ctl.view` reads)."""
        return {"type": self.kind, "reason": self.reason, "message": self.message,
                "lastTimestamp": utc(self.at) if self.at else None}  # fmt: skip


@dataclass
class History:
    """One sample a second, for the live view, the report and the summary."""

    t: list[float] = field(default_factory=list)
    # the quality drawn: a classifier's accuracy, a regression's RMSE (rmse)
    metric: str = "accuracy"
    acc: dict[str, list[float]] = field(default_factory=lambda: {"stable": [], "canary": []})
    served: list[float] = field(default_factory=list)  # what clients got, second by second
    p50: list[float] = field(default_factory=list)
    p95: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    # the operator's status each second, for the report's version lane: the version served
    # (nan before the first), whether a rollback pinned it, and the stable revision
    served_version: list[float] = field(default_factory=list)
    pinned: list[bool] = field(default_factory=list)
    stable_revision: list[str | None] = field(default_factory=list)


class Simulator:
    """Prediction requests over HTTP; the labels later and out of order through feedback."""

    def __init__(self, model: OnlineModel, rate: float, drift_at: float | None, seed: int,
                 poison: tuple[float, float] | None = None, token: str | None = None,
                 host: str = "127.0.0.1") -> None:  # fmt: skip
        self.host = host  # the servers' (loopback here; a Service's address on real pods)
        # spec.serving.feedbackAuth's token: the label producers send it (feedback, :learn)
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        features = [f.to_dict() for f in model.spec.model.features]
        self.binary = model.spec.model.task == "binary"
        self.classes = model.spec.model.classes  # (multiclass: labels go out as class names)
        self.poison = poison  # (from, until) in seconds of the run
        self.poisoned = 0  # flipped labels sent
        self.regression = model.spec.model.task == "regression"
        # second -> [right answers (regression: the squared errors' sum), answered]
        self.hits: dict[int, list[float]] = {}
        drift_sample = int(drift_at * rate) if drift_at is not None else None
        self.stream = SyntheticStream(
            features, model.spec.model.task, seed=seed, drift_at=drift_sample,
            same_difficulty=True, classes=len(self.classes or ()),
        )  # fmt: skip
        self.rng = np.random.default_rng(seed)
        # clicks only (spec.learning.labelDefault): a label equal to the default is never
        # sent (an impression not clicked sends nothing), the others come after a delay
        # drawn as clicks' and conversions' are, most well within 'after' and a few past it
        default = model.spec.learning.labelDefault
        self.default = (
            self._labels(np.array([Task.of(model.spec.model).target(default.value)]))[0]
            if default is not None
            else None
        )
        self.click_delay = default.after / 8 if default is not None else 0.0
        self.not_sent = 0  # labels left for the default
        self.rate = rate
        self.name = model.name
        self.sent = self.predictions = self.labels_sent = self.errors = 0
        self.error_statuses: dict[str, int] = {}  # what the failed requests got, by route
        self.error_answers: dict[str, list[Any]] = {}  # the first few answers of each
        self.tracks: dict[str, int] = {}
        self.latencies: list[float] = []
        self.due: list[tuple[float, int, dict[str, Any]]] = []
        self.conns: dict[int, http.client.HTTPConnection] = {}
        self._n = 0

    def _conn(self, port: int) -> http.client.HTTPConnection:
        if port not in self.conns:
            self.conns[port] = http.client.HTTPConnection(self.host, port, timeout=5)
        return self.conns[port]

    def _post(self, port: int, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
        """POST JSON on a kept-alive connection: (status, parsed body), or (0, None)."""
        try:
            conn = self._conn(port)
            conn.request("POST", path, body=orjson.dumps(body),
                         headers={"Content-Type": "application/json", **(headers or {})})  # fmt: skip
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, orjson.loads(data) if data else None
        except (OSError, http.client.HTTPException):
            self.conns.pop(port, None)
            return 0, None

    def step(self, elapsed: float, now: float, ports: list[int]) -> None:
        if not ports:
            return
        n = int(elapsed * self.rate) - self.sent
        while n > 0:
            k = min(n, ROWS_PER_REQUEST)
            rows, y = self.stream.take(k)
            self.sent += k
            n -= k
            port = ports[self._n % len(ports)]
            self._n += 1
            start = time.perf_counter()
            key = uuid.uuid4().hex[:12]  # one entity per request: it sticks to one track
            status, out = self._post(port, f"/v1/models/{self.name}:predict", {"instances": rows},
                                     {"x-tideline-key": key})  # fmt: skip
            self.latencies.append(time.perf_counter() - start)
            if status != 200 or out is None:
                self._failed("predict", status, out)
                continue
            self.predictions += len(rows)
            labels = self._labels(y)
            if isinstance(out.get("predictions"), list):
                tally = self.hits.setdefault(int(elapsed), [0.0, 0])
                tally[0] += (self._squared(out["predictions"], y) if self.regression
                             else self._right(out["predictions"], y, labels))  # fmt: skip
                tally[1] += len(rows)
            if self.poison is not None and self.poison[0] <= elapsed < self.poison[1]:
                bad, flipped = self._poisoned(rows, y, labels)
                if bad:
                    status, _ = self._post(port, f"/v1/models/{self.name}:learn",
                                           {"instances": bad + bad, "labels": flipped + flipped},
                                           self.auth)  # fmt: skip
                    self.poisoned += 2 * len(bad) if status in (200, 202) else 0
            tracks = out.get("tracks") or ["stable"] * len(rows)
            for track in tracks if isinstance(tracks, list) else [tracks] * len(rows):
                self.tracks[track] = self.tracks.get(track, 0) + 1
            for pid, label in zip(out["ids"], labels, strict=True):
                if label == self.default:
                    self.not_sent += 1
                    continue
                delay = self._delay()
                heapq.heappush(self.due, (now + delay, self._n, {"id": pid, "label": label}))
                self._n += 1
        ready: list[dict[str, Any]] = []
        while self.due and self.due[0][0] <= now and len(ready) < 2000:
            ready.append(heapq.heappop(self.due)[2])
        if ready:
            port = ports[self._n % len(ports)]
            status, answer = self._post(port, f"/v1/models/{self.name}/feedback",
                                        {"feedback": ready}, self.auth)  # fmt: skip
            if status == 202:
                self.labels_sent += len(ready)
            else:
                self._failed("feedback", status, answer)

    def _delay(self) -> float:
        """When a label comes after its prediction: 0.3-2.5 s, out of order; clicks only,
        log-normal with its median at an eighth of 'after' (about 2 % past 'after')."""
        if self.default is None:
            return float(self.rng.uniform(0.3, 2.5))
        return float(self.click_delay * self.rng.lognormal(0.0, 1.0))

    def _labels(self, y: np.ndarray) -> list[Any]:
        """Labels as a client sends them: numbers, or a multiclass model's class names."""
        if self.classes is None:
            return y.tolist()
        return [self.classes[int(i)] for i in y.tolist()]

    def _right(self, predictions: list[Any], y: np.ndarray, labels: list[Any]) -> int:
        """How many answers were right: a probability on the label's side of 0.5 (binary), the
        label's class (multiclass)."""
        if self.classes is not None:
            return sum(p == want for p, want in zip(predictions, labels, strict=False))
        return int(np.sum((np.asarray(predictions, dtype=float) >= 0.5) == (y >= 0.5)))

    @staticmethod
    def _squared(predictions: list[Any], y: np.ndarray) -> float:
        """The answers' squared errors, summed (regression)."""
        try:
            return float(np.sum((np.asarray(predictions, dtype=float) - y) ** 2))
        except (TypeError, ValueError):
            return float("nan")

    def _poisoned(self, rows: list[Any], y: np.ndarray, labels: list[Any]) -> tuple[list[Any], list[Any]]:  # fmt: skip
        """What a label producer gone wrong sends through ``:learn``: every row, its label
        flipped; clicks only, a click on every row not clicked (a producer of clicks sends
        no "not clicked": the rows clicked it leaves alone)."""
        flipped = self._flipped(y)
        if self.default is None:
            return rows, flipped
        bad = [i for i, label in enumerate(labels) if label == self.default]
        return [rows[i] for i in bad], [flipped[i] for i in bad]

    def _flipped(self, y: np.ndarray) -> list[Any]:
        """Poisoned labels: each one wrong (the next class, the other class, the sign)."""
        if self.classes is not None:
            return self._labels((y + 1.0) % len(self.classes))
        return (1.0 - y).tolist() if self.binary else (-y).tolist()

    def _failed(self, route: str, status: int, answer: Any) -> None:
        self.errors += 1
        key = f"{route} {status}"
        self.error_statuses[key] = self.error_statuses.get(key, 0) + 1
        kept = self.error_answers.setdefault(key, [])
        if len(kept) < 3:
            kept.append(answer)

    def second(self, i: int) -> float | None:
        """The quality of the predictions answered in second ``i``: accuracy, or RMSE for
        regression (None: none answered)."""
        total, n = self.hits.get(i, (0.0, 0))
        if not n:
            return None
        return math.sqrt(total / n) if self.regression else total / n

    def timeline(self) -> list[float | None]:
        """:meth:`second` of each second of the run."""
        seconds = range(max(self.hits, default=-1) + 1)
        return [None if (q := self.second(i)) is None else round(q, 4) for i in seconds]

    def accuracy_timeline(self) -> list[float | None]:
        """Accuracy of the predictions answered in each second (None: none answered; a
        regression's: none, its RMSE is :meth:`timeline`)."""
        return [] if self.regression else self.timeline()

    def take_latencies(self) -> list[float]:
        out, self.latencies = self.latencies, []
        return out


class OperatorLoop(threading.Thread):
    """The operator's per-model turn, every half second, against the process cluster."""

    def __init__(self, manifest: dict[str, Any], cluster: ProcessCluster, redis_url: str,
                 on_event: Callable[[str, str, str], None]) -> None:  # fmt: skip
        super().__init__(daemon=True, name="operator")
        from tideline_operator.builders import OperatorConfig
        from tideline_operator.reconcile import ModelMemory, Reconciler

        self.cluster = cluster
        self.reconciler = Reconciler(cluster, OperatorConfig(image="local", redis_url=redis_url))
        self.mem = ModelMemory()
        self.body = copy.deepcopy(manifest)
        self.body["metadata"].update({"uid": uuid.uuid4().hex, "generation": 1})
        self.on_event = on_event
        self.status: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def apply(self, manifest: dict[str, Any]) -> None:
        """A new spec, as `kubectl apply` would: the generation moves on."""
        with self.lock:
            gen = self.body["metadata"]["generation"] + 1
            self.body["spec"] = copy.deepcopy(manifest["spec"])
            self.body["metadata"]["generation"] = gen

    def object(self, created: float) -> dict[str, Any]:
        """The OnlineModel as ``kubectl get`` would return it now: the manifest applied
        last, with its status (``created``: when the run began)."""
        with self.lock:
            obj = copy.deepcopy(self.body)
        obj["metadata"]["creationTimestamp"] = utc(created)
        obj["metadata"].setdefault("namespace", "default")  # (as parse reads a manifest)
        obj["status"] = copy.deepcopy(self.status)
        return obj

    def turn(self) -> None:
        with self.lock:
            body = copy.deepcopy(self.body)
        new = self.reconciler.turn(body, self.mem, self.cluster.children(), self.on_event)
        if new is not None:
            self.status = new

    def run(self) -> None:
        try:
            while not self.stopped.wait(0.5):
                self.turn()
        except BaseException as e:  # surfaced by the main loop
            self.error = e


def _health(client: Any, keys: Keys) -> dict[str, Any]:
    raw = client.get(keys.health)
    return orjson.loads(raw) if raw else {}


def _by_reason(rollbacks: list[Event]) -> dict[str, int]:
    """Rollbacks counted by what triggered them: accuracy, errorRate or manual."""
    out: dict[str, int] = {}
    for e in rollbacks:
        kind = ("manual" if "annotation" in e.message else "errorRate" if "error rate" in e.message
                else "accuracy")  # fmt: skip
        out[kind] = out.get(kind, 0) + 1
    return out


def _learned(client: Any, keys: Keys) -> tuple[int, int]:
    """Samples learned and versions published, over every revision that ran."""
    samples = versions = 0
    for key in client.scan_iter(keys.learner("*")):
        st = client.hgetall(key)
        samples += int(st.get(b"samples", 0))
        versions += int(st.get(b"next_version", 0))
    return samples, versions


def _restarts(counts: dict[str, int]) -> str:
    """``no process restarted``, or the restarts by Deployment."""
    if not counts:
        return "no process restarted"
    n = sum(counts.values())
    return f"{n} process restart{'s' if n > 1 else ''} ({_by(counts)})"


def _by(counts: dict[str, int]) -> str:
    """Counts by name, in words: ``stable 4,210, canary 380``."""
    return ", ".join(f"{name} {k:,}" for name, k in sorted(counts.items()))


def _rollbacks(n: int, by_reason: dict[str, int]) -> str:
    return f"{n} rollbacks" + (f" ({_by(by_reason)})" if by_reason else "")


def _unsent(n: int) -> str:
    return f" ({n:,} not sent: learned with spec.learning.labelDefault)" if n else ""


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) * 1000 if xs else float("nan")


def run_local(
    manifest: dict[str, Any],
    *,
    duration: float,
    rate: float,
    drift_at: float | None = None,
    canary_at: float | None = None,
    poison_at: float | None = None,
    poison_for: float = 10.0,
    seed: int = 7,
    out: TextIO | None = None,
    report: Path | None = None,
    stop: threading.Event | None = None,
    source: str = "redis",
    import_path: Sequence[Path] = (),
    keep: bool = False,
    bad_first: bool | None = None,
    watch: bool = False,
) -> dict[str, Any]:
    """Run the loop on ``manifest``; ``import_path``: folders the processes import a team's
    own model from (``tideline run`` gives the manifest's). ``bad_first``: at ``canary_at``
    a bad revision before the good one (None: when ``spec.learning.history`` is kept, for
    its backtest to stop; True without history: what the live analysis lets through).

    ``stop`` set ends the run early (``tideline run`` sets it on Ctrl-C): the summary and
    the report are of what ran (``interrupted`` in the summary). The run's folder (the
    processes' manifests and logs; ``workdir`` in the summary) is removed at the end, after
    an error too, unless ``keep``. ``watch``: the model's status as ``kubectl tideline get``
    draws it (:func:`tideline.ctl.view.render_get`), refreshed each second, instead of a
    line a second."""
    out = out or sys.stdout
    stop = stop or threading.Event()
    with contextlib.ExitStack() as resources:
        if source == "kafka":  # the labels through a Kafka broker of its own
            broker = resources.enter_context(EmbeddedKafka())
            manifest = with_kafka(manifest, broker)
        return _run(manifest, duration=duration, rate=rate, drift_at=drift_at,
                    canary_at=canary_at, poison_at=poison_at, poison_for=poison_for, seed=seed,
                    out=out, report=report, stop=stop, import_path=import_path,
                    keep=keep, bad_first=bad_first, watch=watch)  # fmt: skip


def with_kafka(manifest: dict[str, Any], broker: EmbeddedKafka) -> dict[str, Any]:
    """The manifest with its samples and feedback on topics of ``broker`` (3 partitions)."""
    name = manifest["metadata"]["name"]
    topics = {"samples": f"{name}-samples", "feedback": f"{name}-feedback"}
    for topic in topics.values():
        broker.create_topic(topic, 3)
    manifest = copy.deepcopy(manifest)
    manifest["spec"]["source"] = {"kafka": {"bootstrapServers": broker.bootstrap,
                                            "topics": topics, "startFrom": "earliest"}}  # fmt: skip
    return manifest


def _run(
    manifest: dict[str, Any], *, duration: float, rate: float, drift_at: float | None,
    canary_at: float | None, poison_at: float | None, poison_for: float, seed: int,
    out: TextIO, report: Path | None, stop: threading.Event, import_path: Sequence[Path],
    keep: bool,
    bad_first: bool | None = None,
    watch: bool = False,
) -> dict[str, Any]:  # fmt: skip
    manifest = copy.deepcopy(manifest)
    manifest["spec"]["rollout"] = {**manifest["spec"].get("rollout", {}), **DEMO_ROLLOUT}
    model = parse(manifest)
    keys = Keys(model.namespace, model.name)
    events: list[Event] = []
    history = History()
    start, began = time.monotonic(), time.time()
    live = _LiveView(out, duration, watch)

    def on_event(kind: str, reason: str, message: str) -> None:
        events.append(Event(time.monotonic() - start, kind, reason, message, time.time()))
        live.event(events[-1])

    with _folder(keep) as workdir, EmbeddedRedis() as server:
        client: Any = redis.Redis.from_url(server.url)
        # With spec.serving.feedbackAuth the servers refuse to start without a token: the run
        # makes one up, puts it in the Secret the spec names, and its label producers send it.
        auth = model.spec.serving.feedbackAuth
        token = secrets.token_urlsafe(32) if auth is not None else None
        cluster = ProcessCluster(workdir, server.url,
                                 {auth.name: {auth.key: token}} if auth and token else None,
                                 import_path)  # fmt: skip
        loop = OperatorLoop(manifest, cluster, server.url, on_event)
        poison = (poison_at, poison_at + poison_for) if poison_at is not None else None
        sim = Simulator(model, rate, drift_at, seed, poison, token)
        live.header(model, server.url, workdir, drift_at, canary_at, poison, keep)
        canary_applied = drift_marked = poison_marked = poison_ended = False
        bad: float | None = None  # when the bad revision was applied, while it is the canary
        bad_served: int | None = None  # canary predictions served until the good one came
        if bad_first is None:
            bad_first = bool(model.spec.learning.history)
        backtests: dict[str, dict[str, Any]] = {}  # each canary's catch-up, once done
        try:
            loop.turn()  # the first turn starts the processes
            loop.start()
            _wait_ready(cluster, stop, live, keep)
            start = time.monotonic()
            next_sample = start + 1.0
            while not stop.is_set() and (now := time.monotonic()) - start < duration:
                if loop.error is not None:
                    raise loop.error
                for r in cluster.restart_exited(now):  # Kubernetes' restart policy
                    on_event("Warning", "BackOff",
                             f"{r.workload} (process {r.index}) exited with {r.code}: started "
                             f"again in {r.backoff:.0f}s (restart {r.count}); {_logs(cluster.dir, keep)}")  # fmt: skip
                elapsed = now - start
                sim.step(elapsed, now, cluster.endpoints("server"))
                if drift_at is not None and not drift_marked and elapsed >= drift_at:
                    drift_marked = True
                    on_event("Normal", "DriftInjected", "the simulator changed the concept")
                if poison is not None and not poison_marked and elapsed >= poison[0]:
                    poison_marked = True
                    sent = "flipped labels" if sim.default is None else "clicks on rows not clicked"
                    on_event("Warning", "PoisonInjected",
                             f"a label producer sends {sent} through :learn for {poison_for:.0f}s")  # fmt: skip
                if poison is not None and not poison_ended and elapsed >= poison[1]:
                    poison_ended = True
                    on_event("Normal", "PoisonEnded", "the flipped labels stop")
                if canary_at is not None and not canary_applied and elapsed >= canary_at:
                    canary_applied = True
                    if bad_first:  # a bad change first: the backtest's (or the analysis's)
                        loop.apply(_bad_revision(manifest))
                        bad = elapsed
                        on_event("Normal", "Applied", BAD_CHANGE)
                    else:
                        _good_revision(manifest, loop, on_event)
                if bad is not None and (_aborted(loop.status) or elapsed - bad >= BAD_WAIT):
                    bad = None
                    bad_served = sim.tracks.get("canary", 0)
                    _good_revision(manifest, loop, on_event)
                canary = loop.status.get("canaryRevision")
                if canary and canary not in backtests:  # (its learner's report, once done)
                    b = Backtest.decode(client.hget(keys.learner(canary), LearnerStatus.BACKTEST))
                    if b is not None and b.done:
                        backtests[canary] = msgspec.structs.asdict(b)
                if now >= next_sample:
                    next_sample += 1.0
                    health = _health(client, keys)
                    _sample(history, health, loop.status, sim, elapsed)
                    if watch:
                        live.tree(loop.object(began), [e.as_api() for e in list(events)], elapsed)
                    else:
                        live.line(history, loop.status, health, sim, elapsed)
                time.sleep(TICK)
        finally:
            loop.stopped.set()
            loop.join(5)
            cluster.stop()
        interrupted = stop.is_set()  # (before the end of the duration: a signal, tideline run's)
        samples, versions = _learned(client, keys)
        drift_log = [orjson.loads(f[b"data"]) for _, f in client.xrange(keys.driftlog)]
        detected = [d for d in drift_log if d.get("state", "detected") == "detected"]
        concept = sum(d.get("kind") == "concept" for d in detected)
        timeline = sim.timeline()
        answered = [a for a in timeline if a is not None]
        mean = round(float(np.mean(answered)), 4) if answered else None
        rollbacks = [e for e in events if e.reason == "RolledBack"]
        summary = {
            "model": f"{model.namespace}/{model.name}",
            "source": "kafka" if model.spec.source.kafka else "redis",  # where the labels went
            "seconds": round(time.monotonic() - start, 1),
            "duration": duration,  # (planned; "seconds" ran)
            "interrupted": interrupted,
            "predictions_served": sim.predictions,
            "predictions_by_track": sim.tracks,
            "labels_sent": sim.labels_sent,
            "labels_left_for_the_default": sim.not_sent,  # (clicks only: labelDefault)
            "samples_learned": samples,
            "versions_published": versions,
            "drift_events": len(detected),  # concept, features, predictions going over
            "concept_drift_events": int(concept),
            "rollbacks": len(rollbacks),
            "rollbacks_by_reason": _by_reason(rollbacks),
            "poisoned_labels_sent": sim.poisoned,
            "promotions": sum(e.reason == "Promoted" for e in events),
            "aborts": sum(e.reason in ("RolloutAborted", "BacktestFailed") for e in events),
            "backtest_failed": sum(e.reason == "BacktestFailed" for e in events),
            # (with history: the canary answers of the bad revision, served before its abort)
            "bad_revision_canary_predictions": bad_served,
            "backtests": list(backtests.values()),  # each canary's catch-up and backtest, in order
            "request_errors": sim.errors,
            "request_errors_by_status": sim.error_statuses,
            "request_error_answers": sim.error_answers,
            "restarts": cluster.restart_counts(),  # processes that exited, by Deployment
            "stable_revision": loop.status.get("stableRevision"),
            "phase": loop.status.get("phase"),
            "events": [
                {"t": round(e.t, 1), "type": e.kind, "reason": e.reason, "message": e.message}
                for e in events
            ],  # fmt: skip
            # what clients got, each second: accuracy, or a regression's RMSE
            "quality": "rmse" if sim.regression else "accuracy",
            "accuracy_timeline": [] if sim.regression else timeline,
            "served_accuracy_mean": None if sim.regression else mean,
            **({"rmse_timeline": timeline, "served_rmse_mean": mean} if sim.regression else {}),
            "workdir": str(workdir),  # (the processes' manifests and logs: removed unless kept)
            "workdir_kept": keep,
        }
        client.close()
    if report is not None:
        from tideline.demo.report import write_report

        write_report(report, history, events, summary)
        summary["report"] = str(report)
    live.summary(summary)
    return summary


BAD_CHANGE = ("model.params: plain sgd at learningRate 100, a thousand times its default: a "
              "bad new revision")  # fmt: skip
BAD_WAIT = 20.0  # seconds the bad revision may stay the canary before the good one comes


def _bad_revision(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with a bad change (:data:`BAD_CHANGE`), for the backtest to stop."""
    changed = copy.deepcopy(manifest)
    model = changed["spec"]["model"]
    model["params"] = {**model.get("params", {}), "optimizer": "sgd", "learningRate": 100.0}
    return changed


def _good_revision(manifest: dict[str, Any], loop: OperatorLoop,
                   on_event: Callable[[str, str, str], None]) -> None:  # fmt: skip
    """A good change applied: a larger mini-batch."""
    changed = copy.deepcopy(manifest)
    learning = changed["spec"].setdefault("learning", {})
    learning["batchSize"] = 2 * int(learning.get("batchSize", 64))
    loop.apply(changed)
    on_event("Normal", "Applied", f"learning.batchSize -> {learning['batchSize']}: a new revision")


def _aborted(status: dict[str, Any]) -> bool:
    """Whether the operator aborted the canary the status names (the bad revision)."""
    aborted = status.get("aborted") or {}
    return bool(aborted) and aborted.get("revision") == status.get("canaryRevision")


@contextlib.contextmanager
def _folder(keep: bool) -> Iterator[Path]:
    """The run's folder in the temporary directory: the processes' manifests and logs. Removed
    when the run ends, however it ends, unless ``keep`` (issue 37: every run left one)."""
    workdir = Path(tempfile.mkdtemp(prefix="tideline-run-"))
    try:
        yield workdir
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _logs(workdir: Path, keep: bool) -> str:
    """Where the processes' logs are, for a message: removed at the end unless kept."""
    return f"logs in {workdir}/logs" + ("" if keep else " until the run ends (--keep keeps them)")


def _import_hint(said: str) -> str:
    """A hint for a team's model that does not import: the folder it lives in, given."""
    if "ImportFailed" not in said or "No module named" not in said:
        return ""
    return ("\n(a team's model is imported from the manifest's folder and each --path DIR: "
            "name the folder its package is in, e.g. --path examples/river)")  # fmt: skip


def _wait_ready(cluster: ProcessCluster, stop: threading.Event, live: _LiveView, keep: bool = True,
                timeout: float = 60.0) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        dead = cluster.failed()
        if dead:
            raise RuntimeError("a process exited:\n" + dead[0] + _import_hint(dead[0]))
        if cluster.endpoints("server"):
            live.ready(cluster)
            return
        time.sleep(0.1)
    if not stop.is_set():
        raise RuntimeError(
            f"no server became ready within {timeout:.0f}s; {_logs(cluster.dir, keep)}"
        )


def _sample(history: History, health: dict[str, Any], status: dict[str, Any], sim: Simulator,
            t: float) -> None:  # fmt: skip
    tracks = health.get("tracks") or {}
    history.t.append(t)
    canary = bool(status.get("canaryRevision")) and not status.get("aborted")
    key = "rmse" if sim.regression else "accuracy"
    history.metric = key
    for track in ("stable", "canary"):
        acc = (tracks.get(track) or {}).get(key)
        if track == "canary" and not canary:
            acc = None  # a track is drawn only while it exists
        history.acc[track].append(float(acc) if acc is not None else float("nan"))
    served = sim.second(int(t) - 1)
    history.served.append(served if served is not None else float("nan"))
    lat = sim.take_latencies()
    history.p50.append(_pct(lat, 50))
    history.p95.append(_pct(lat, 95))
    history.p99.append(_pct(lat, 99))
    version = status.get("servedVersion")
    history.served_version.append(float(version) if version is not None else float("nan"))
    history.pinned.append(bool(status.get("pinned")))
    history.stable_revision.append(status.get("stableRevision"))


class _LiveView:
    """Plain lines; a live table when writing to a terminal (rich). ``watch``: the model's
    status tree instead (:meth:`tree`), its Events in it rather than a line each."""

    def __init__(self, out: TextIO, duration: float, watch: bool = False) -> None:
        self.out = out
        self.duration = duration
        self.watch = watch
        self._drawn: tuple[Any, ...] | None = None  # what the last tree showed (not a terminal)
        self.tty = out.isatty()
        self._last_predictions = 0
        self._live: Any = None
        self._events: list[str] = []
        self._lock = threading.Lock()  # events come from the operator's thread

    def print(self, text: str) -> None:
        with self._lock:
            if self._live is not None:
                self._live.console.print(text)
            else:
                print(text, file=self.out, flush=True)

    def header(self, model: OnlineModel, redis_url: str, workdir: Path, drift_at: float | None,
               canary_at: float | None, poison: tuple[float, float] | None = None,
               keep: bool = True) -> None:  # fmt: skip
        self.print(f"tideline run: {model.namespace}/{model.name} ({model.spec.model.algorithm}, "
                   f"{model.spec.model.task}), revision {model.revision}")  # fmt: skip
        self.print(f"redis      {redis_url}")
        self.print(f"processes  {_logs(workdir, keep)}")
        self.print("rollout    on the demo's timescale: steps setWeight 25, pause 4s, analysis, "
                   "setWeight 50, pause 4s; analysis every 2s")  # fmt: skip
        plan = []
        if drift_at is not None:
            plan.append(f"concept drift at {drift_at:.0f}s")
        if poison is not None:
            plan.append(f"label poisoning {poison[0]:.0f}s-{poison[1]:.0f}s")
        if canary_at is not None:
            plan.append(f"a new revision at {canary_at:.0f}s")
        if plan:
            self.print("plan       " + ", ".join(plan))

    def ready(self, cluster: ProcessCluster) -> None:
        for name, w in sorted(cluster.workloads.items()):
            ports = ", ".join(f"127.0.0.1:{p.port}" for p in w.procs)
            self.print(f"started    {name:<32} {ports}")
        if self.tty:
            from rich.live import Live

            self._live = Live(auto_refresh=False, console=None)
            self._live.start()

    def event(self, e: Event) -> None:
        text = f"{e.t:6.1f}s  >>> {e.reason}: {e.message}"
        self._events.append(text)
        if not (self.watch and self._live is not None):  # (the tree on a terminal has them)
            self.print(text)

    def tree(self, obj: dict[str, Any], events: list[dict[str, Any]], t: float) -> None:
        """The status as ``kubectl tideline get -w`` draws it: redrawn in place on a
        terminal (with the run's progress); elsewhere printed again when the phase, the
        rollout or the versions change, or an Event comes (scores moving each second do not
        print it again)."""
        text = render_get(obj, events, time.time())
        if self._live is None:
            drawn = (*list_row(obj).values(), len(events))
            if drawn != self._drawn:
                self._drawn = drawn
                self.print(f"\n{t:6.1f}s\n{text}")
            return
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        title = Text(f"tideline run - {t:.0f}s of {self.duration:.0f}s", style="bold")
        self._live.update(Group(title, ProgressBar(total=self.duration, completed=t), Text(text)),
                          refresh=True)  # fmt: skip

    def line(self, history: History, status: dict[str, Any], health: dict[str, Any],
             sim: Simulator, t: float) -> None:  # fmt: skip
        rps = sim.predictions - self._last_predictions
        self._last_predictions = sim.predictions
        scores = ((health.get("drift") or {}).get("features") or {}).get("scores") or {}
        top = max(scores.items(), key=lambda kv: kv[1], default=None)
        drift = f"{status.get('drift', '-')}" + (f" (max PSI {top[0]} {top[1]:.2f})" if top else "")
        canary = (f"{status['canaryRevision']} weight {status.get('canaryWeight', 0)}% "
                  f"step {status.get('currentStep')}" if status.get("canaryRevision")
                  and not status.get("aborted") else "none")  # fmt: skip
        fmt = lambda x: "-" if x != x else f"{x:.3f}"  # noqa: E731  (nan -> dash)
        # (the revision with its versions: a promotion's "served v3" after "served v29" is
        # another revision's third, not a step back; a rollback's pin is said)
        versions = (f"{(status.get('stableRevision') or '-')[:6]} "
                    f"served v{status.get('servedVersion', '-')}{' pinned' if status.get('pinned') else ''} "
                    f"latest v{status.get('latestVersion', '-')} "
                    f"lastGood v{status.get('lastGoodVersion', '-')}")  # fmt: skip
        accuracy = (
            f"stable {fmt(history.acc['stable'][-1])} canary {fmt(history.acc['canary'][-1])}"
        )
        traffic = f"{rps} predictions/s, p95 {history.p95[-1]:.1f} ms"
        if self._live is None:
            short = "acc" if history.metric == "accuracy" else history.metric
            self.print(f"{t:6.1f}s  {status.get('phase', '-'):<11} {versions}  {short} {accuracy}  "
                       f"canary {canary}  drift {drift}  {traffic}")  # fmt: skip
            return
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        table = Table(title=f"tideline run - {t:.0f}s of {self.duration:.0f}s", show_header=False)
        for key, value in (("phase", str(status.get("phase", "-"))), ("versions", versions),
                           (f"online {_metric_name(history.metric)}", accuracy), ("canary", canary),
                           ("drift", drift),
                           ("traffic", traffic)):  # fmt: skip
            table.add_row(key, value)
        self._live.update(Group(table, ProgressBar(total=self.duration, completed=t),
                                *self._events[-6:]), refresh=True)  # fmt: skip

    def summary(self, s: dict[str, Any]) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if s["interrupted"]:
            print(f"\ninterrupted after {s['seconds']:.1f}s of {s['duration']:.0f}s: the summary "
                  "and the report are of what ran", file=self.out)  # fmt: skip
        print(
            f"\n{s['predictions_served']} predictions served over HTTP "
            f"({_by(s['predictions_by_track'])}), "
            f"{s['labels_sent']} labels sent late through feedback"
            f"{_unsent(s['labels_left_for_the_default'])}, {s['samples_learned']} samples "
            f"learned, {s['versions_published']} versions published; {s['concept_drift_events']} "
            f"concept-drift events, {_rollbacks(s['rollbacks'], s['rollbacks_by_reason'])}, "
            f"{s['promotions']} promotions, {s['aborts']} aborted canaries; "
            f"{_restarts(s['restarts'])}; served {_metric_name(s['quality'])} "
            f"{s.get('served_' + s['quality'] + '_mean')} on average; phase {s['phase']}.",
            file=self.out,
        )
        from tideline.demo.verdict import verdict

        for sentence in verdict(s):  # (the report's first lines: both say the same)
            print(f"verdict: {sentence}", file=self.out)
        if s.get("report"):
            print(f"report: {s['report']}", file=self.out)
        if s["workdir_kept"]:
            print(f"kept: {s['workdir']} (the processes' manifests and logs)", file=self.out)
        print(orjson.dumps(s).decode(), file=self.out, flush=True)


def _metric_name(metric: str) -> str:
    """How a quality is written for a person: accuracy, RMSE."""
    return "RMSE" if metric == "rmse" else metric
