"""The drift monitor: quality per track and version, drift, and the health summary the operator reads.

It reads, without taking anything from the learner:

* the prediction log (every server process's stream, :mod:`tideline.predlog`,
  ``XREAD`` from its own cursors, from the time it started), for what each
  track answered, the features it saw and its scores (which requests and rows
  drift reads, :mod:`tideline.monitoring.driftsample` decides);
* ``feedback`` and ``samples`` through its own consumer group (``monitor``):
  every consumer group gets every entry, so the learner's group loses
  nothing. Feedback is joined with the log (:mod:`tideline.pods.join`); labelled
  samples are scored by the served version itself, so a model that gets no
  HTTP traffic at all (learner-only) is still watched. What a label scores on
  which track and version, :mod:`tideline.monitoring.tracks` decides;
* the servers' per-track counters and latency percentiles (``servers``), turned
  from each server's totals into what the servers counted over a recent window
  (:class:`tideline.monitoring.counters.ServerCounters`), so the error rate shows a late
  burst of errors.

Every ``spec.rollout.analysis.interval`` it writes ``tideline:{<ns>/<model>}:health``
(:class:`tideline.health.Health`) and publishes a ``health`` event; and at once
when the pointers name a version its evidence has not scored yet (looked at
four times a second), so a version just served is judged then, not an
interval later, and when the served version has just been served on
``minSamples`` labels (what its proof waits for). State is bounded: rolling windows, fixed-size detectors; the
label join holds nothing per prediction (:class:`tideline.pods.join.LogJoin`).

**Pure parts, a thin shell.** What follows from what the monitor reads is decided
by parts that read no clock and no network, each with its unit tests:
:mod:`tideline.monitoring.tracks` (tracks and versions), :mod:`tideline.monitoring.judging` (which
labels judge), :mod:`tideline.monitoring.candidates` (roles and evidence),
:mod:`tideline.monitoring.signals` (drift), :mod:`tideline.monitoring.driftsample` (the log's drift
sample), :mod:`tideline.monitoring.counters` (the servers' window), :mod:`tideline.monitoring.capacity`
(the log's size) and :mod:`tideline.monitoring.summary` (the summary put together). The
:class:`Monitor` reads Redis or Kafka, hands them what it read and the time, and
writes what they return.

**No quiet death.** Each turn that worked beats a
:class:`tideline.pods.liveness.Liveness` (the pod's ``/healthz``); a turn that
raises - Redis gone, a group gone, a health write refused - counts a failure,
and :meth:`Monitor.run` returns False after ``max_failures`` in a row, for
the process to exit non-zero.

**Evidence.** The labelled samples also fill a common window
(:class:`tideline.evidence.CommonWindow`, held by :class:`tideline.monitoring.candidates.Candidates`,
which decides what follows from what the monitor reads, and reads nothing itself): every
candidate version - served, lastGood, latest, recent (the newest version of the stable
revision served on ``minSamples`` labels of its own answers, still stored, served now or
not), the canary's served one, the warm-start baseline and the best constant - is scored on
the same samples and compared with the served version by a paired confidence sequence;
recent with lastGood and the constant too (what its proof reads). While a rollback pins the
served version, latest is also compared with it on the labels that came after the pin alone,
and the pinned version's error on those is set beside its error when the pin came (what an
unpin reads). The window takes the labels of served predictions (feedback) when there are
any; a model that gets none (learner-only) is judged on its labelled samples. Training data
that arrives through ``samples`` next to feedback (backfills, ``:learn``) is learned but
does not judge versions: a producer that sends wrong labels must not be able to make the
versions that learned them look good.

**Drift signals are events with hysteresis**, not levels
(:class:`tideline.monitoring.signals.DriftSignals` decides them from what the monitor reads; the
monitor writes them): one ``driftlog`` entry (and one count of
``tideline_monitor_drift_events``) when a signal goes over its threshold, one when it clears
(feature and prediction scores below 80 % of the threshold; concept drift ten analysis
intervals after it last fired). Concept drift is the error rate going *up* (ADWIN told the
direction, Page-Hinkley one-sided): a model that is learning is no change of the world. The
errors reach the detector in the order of the predictions they judge, not of the labels'
arrival (:class:`tideline.drift.EventOrder`): the late labels of an older, worse version are
no rise of the error (the errors of one prediction time go in a random order). The prediction-drift reference is the served version's own first
window of scores, started again for each new served version, so a learning model does not
flag itself. A multiclass model's prediction drift reads the predicted class (a bin per
class: :class:`tideline.drift.Categorical`), its quality is accuracy, log loss, the top
class's calibration and each class's recall, and its concept drift and paired comparisons
read whether the top class is right. Its labels are class names (or indices): a label that
is not one is counted as a bad entry and left out (the learner dead-letters it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import redis

from tideline import health as h
from tideline import predlog
from tideline.algorithms import Learner
from tideline.algorithms.external import ModelLoadError
from tideline.contracts import Pointers, Routing, feedback_labels
from tideline.drift import KS, PSI, Categorical
from tideline.monitoring.candidates import Candidates, Key, Loaded, Named
from tideline.monitoring.capacity import LogSize
from tideline.monitoring.counters import Counted, ServerCounters
from tideline.monitoring.driftsample import DriftSample, stable_rows
from tideline.monitoring.judging import Judging, labelled_samples
from tideline.monitoring.outcomes import Outcomes
from tideline.monitoring.signals import DriftEvent, DriftSignals
from tideline.monitoring.summary import Throughput, health
from tideline.monitoring.tracks import Labelled, Scored, Tracks, labelled
from tideline.pods import faults, history
from tideline.pods.defaults import Defaulting, DefaultLabels
from tideline.pods.join import Joined, LogJoin
from tideline.pods.liveness import Liveness
from tideline.pods.metrics import MonitorMetrics
from tideline.pods.sources import Follower, RedisFollower, xread
from tideline.signing import ForgedBlob, Sealing
from tideline.spec import OnlineModel
from tideline.store import (
    ModelStore,
    Reference,
    StoreError,
    migrate_keys,
    node_info,
    transaction,
)
from tideline.tasks import Task

log = logging.getLogger("tideline.monitor")

GROUP = "monitor"
# log entries a read takes: small enough that a read's rows, typed values and scores stay in
# the processor's caches (5,000 entries of 64 rows read 15-20 % slower per prediction)
LOG_READ = 256
LABEL_READ = 5000  # label entries a read takes at most
MATURING_ROWS = 200_000  # labelled rows held until their predictions are mature, at most
VERSIONS_EVERY = 0.25  # seconds between two looks at the pointers for a version to judge
FAILED_WAIT = 2.0  # seconds at most between failed turns: 30 in a row take about a minute


class Monitor:
    def __init__(
        self,
        model: OnlineModel,
        client: redis.Redis,
        *,
        metrics: MonitorMetrics | None = None,
        clock: Callable[[], float] = time.time,
        window: int = 2000,
        liveness: Liveness | None = None,
    ) -> None:
        self.model = model
        self.liveness = liveness or Liveness()  # beaten by each turn that worked (see run)
        self.spec = model.spec
        self.r: Any = client
        self.metrics = metrics or MonitorMetrics(None)
        # versions are verified before they are scored (a forged one is skipped, counted)
        sealing = Sealing.from_env(model.namespace, model.name, component="monitor",
                                   refused=self.metrics.forged_blobs.inc)  # fmt: skip
        self.store = ModelStore(client, model.namespace, model.name, sealing)
        self.keys = self.store.keys
        self.clock = clock
        self.window = window
        self.task = Task.of(self.spec.model)
        # the log is in real time (stream ids), whatever clock the analysis runs on
        default = self.spec.learning.labelDefault
        self.join = LogJoin(client, self.keys, self.spec.learning.labelWindow, GROUP,
                            default_after=default.after if default else None)  # fmt: skip
        # labelDefault: the predictions no label came for are scored with the default, and a
        # label is scored only once its prediction is mature (labelled, or past 'after' with
        # none): impressions not clicked yet do not read as accuracy
        self.defaults = (
            DefaultLabels(client, self.keys, self.join, default.value, default.after, hold=False)
            if default is not None
            else None
        )
        # (a label and the defaults of its time reach the detectors together, in prediction
        # order: tideline.pods.defaults.Defaulting)
        self.defaulting: Defaulting[Labelled] = Defaulting(self.defaults, MATURING_ROWS)
        # the predictions whose outcomes it knows: the labels are read from the streams' start,
        # the defaults from where it began to give them (set at start)
        self.outcomes = Outcomes()
        self._read_from = time.time()  # (real time: the streams' ids)
        self.labels = self._follower()  # the labels: Redis streams or Kafka topics
        # each track's and version's predictions and quality
        self.answers = Tracks(self.task, window)
        self.tracks, self.versions = self.answers.tracks, self.answers.versions
        numeric = [f for f in self.spec.model.features if f.type == "numeric"]
        self.feature_names = [f.name for f in numeric]
        # feature, prediction and concept drift, and their events
        self.drift = DriftSignals(self.task, self.spec.drift, self.spec.rollout.analysis.interval,
                                  self.feature_names)  # fmt: skip
        # the versions the operator may choose between, scored on a common window of labels
        self.candidates = Candidates(self.task, self.spec.rollout.analysis.minSamples)
        self.evidence = self.candidates.window
        # which labels judge (feedback, else samples), what they bring to the evidence
        self.judging = Judging(after=default.after if default else 0.0)
        self._versions_looked = -math.inf
        self._warm_started: dict[str, bool] = {}  # revision -> its v0 is a warm-start baseline
        self._cursors: dict[str, str] = {}  # server process -> where its log was read to
        self._log_start = "0-0"  # the log is read from the monitor's start on
        self._logs_listed = -math.inf
        self.list_logs_every = 1.0  # seconds: a new server's log is followed this soon
        # what the log needs in Redis at the rate it is written (see _log_capacity)
        self.log_size = LogSize(self.spec.rollout.analysis.interval,
                                predlog.retention(self.spec.learning.labelWindow),
                                self.spec.learning.history)  # fmt: skip
        self._served: Learner | None = None
        self._served_key: tuple[str, int] | None = None
        self._unloadable: set[tuple[Any, ...]] = set()  # versions this image cannot load
        # the sampled stable rows' features and scores read from the log, for the drift
        # detectors in one block
        self.sample = DriftSample(self.task, self.feature_names,
                                  [float(f.default or 0.0) for f in numeric],
                                  self.spec.drift.sampleRate)  # fmt: skip
        self._stable_revision = model.revision
        self._last_write = 0.0
        self.throughput = Throughput(clock())  # predictions and labels, their rates
        self._counts = self.throughput.counts
        self.servers = ServerCounters(self.spec.rollout.analysis.interval)

    @property
    def feature_drift(self) -> PSI | KS:
        """The feature drift detector (:attr:`tideline.monitoring.signals.DriftSignals.feature`)."""
        return self.drift.feature

    @property
    def prediction_drift(self) -> PSI | KS | Categorical:
        """The prediction drift detector (:attr:`tideline.monitoring.signals.DriftSignals.prediction`)."""
        return self.drift.prediction

    # -- start -------------------------------------------------------------------------------
    def _follower(self) -> Follower:
        if self.spec.source.kafka is None:
            return RedisFollower(self.r, self.keys, GROUP)
        from tideline.pods.kafka import KafkaFollower

        return KafkaFollower(self.model)

    def start(self) -> None:
        migrate_keys(self.r, self.keys)
        self.labels.start()
        if self.defaults is not None:  # (logs it had not read: from now on, as its labels)
            saved = self.r.hgetall(self.keys.cursors(GROUP))
            cursors = {k.decode(): v.decode() for k, v in saved.items()}
            fresh = int(time.time() * 1000)
            self.defaults.start(cursors, fresh=f"{fresh}-0")
            # a label of a prediction older than its log's first default is not scored
            self.outcomes = Outcomes(since=fresh / 1000, resumed=cursors)
        # Labels find their predictions in Redis (LogJoin): nothing of the log is read
        # again at start; traffic is followed from now on.
        self._log_start = f"{int(self.clock() * 1000)}-0"

    # -- reading -----------------------------------------------------------------------------
    def _list_logs(self) -> None:
        """The server processes writing a prediction log now (listed again every second)."""
        now = self.clock()
        if now - self._logs_listed < self.list_logs_every:
            return
        self._logs_listed = now
        since = now - predlog.retention(self.spec.learning.labelWindow)
        live = [m.decode() for m in self.r.zrangebyscore(self.keys.logs, since, "+inf")]
        self._cursors = {i: self._cursors.get(i, self._log_start) for i in live}

    def _read_log(self, count: int = LOG_READ) -> int:
        self._list_logs()
        if not self._cursors:
            return 0
        n = 0
        streams = {self.keys.log(i): c for i, c in self._cursors.items()}
        for stream, entries in xread(self.r, streams, count) or []:
            instance = stream.decode().rsplit(":", 1)[1]
            for entry_id, fields in entries:
                self._cursors[instance] = entry_id.decode()
                n += 1
                try:
                    batch = predlog.decode(fields)
                except ValueError:
                    self.metrics.bad_log_entries.inc()
                    continue
                self.log_size.entries += 1
                for k in range(len(batch)):
                    e = batch.request(k)
                    # drift reads a share of the requests (drift.sampleRate), the same share
                    # for every monitor: a request's rows are decoded only when it is read
                    read = self.sample.sampled(stream, entry_id, k)
                    try:
                        scores = e.scores
                    except (ValueError, TypeError, orjson.JSONDecodeError):
                        self.metrics.bad_log_entries.inc()
                        continue
                    self.log_size.rows += len(scores)
                    self._on_predictions(e, read, scores)
        self._drift_block()
        return n

    def _log_capacity(self, now: float) -> h.LogCapacity | None:
        """What the log needs in Redis at this rate for its window
        (:class:`tideline.monitoring.capacity.LogSize`), measured when it is due.

        Each live log stream is measured exactly (``MEMORY USAGE key SAMPLES 0``: every
        node's bytes, not five nodes' average times the node count): a sampled estimate
        of a log whose first entries are small said 15 MB held at 207 B/prediction while
        48 padded bodies held 339 MB (issue 30). The id index's hashes keep Redis's
        sampling: their fields are ids and places of one bounded size, and counting
        millions of them exactly would hold Redis for as long. A turn that fails (Redis
        refusing the health write when it is full) leaves the last measurement as it was.
        """
        size = self.log_size
        rates = self.throughput.rates
        if not size.due(now, rates["predictions"], rates["labels"]):
            return size.capacity
        began = time.perf_counter()
        streams = [self.keys.log(i) for i in self._cursors]
        index = [
            self.keys.log_ids(b)
            for b in predlog.buckets(time.time(), self.spec.learning.labelWindow)
        ]
        pipe = self.r.pipeline(transaction=False)
        for key in streams:
            pipe.memory_usage(key, samples=0)
        for key in index:
            pipe.memory_usage(key)
        for key in streams:
            pipe.xlen(key)
        if size.history:  # (sampled, as the index: its entries are of one kind)
            pipe.memory_usage(self.keys.history)
            pipe.xlen(self.keys.history)
        replies = pipe.execute()
        info = node_info(self.r, self.keys.logs, "memory")  # on a cluster: the model's node
        took = time.perf_counter() - began
        n = len(streams) + len(index)
        kept = (replies[-2], int(replies[-1])) if size.history else None
        lengths = replies[n : n + len(streams)]
        return size.measured(now, took, replies[:n], lengths, info, history=kept)

    def _on_predictions(self, e: predlog.Entry, read: bool, scores: list[Any]) -> None:
        """A logged request: counted; its stable rows and scores to the drift detectors when it
        is in the sample (``read``; :class:`tideline.monitoring.driftsample.DriftSample`)."""
        n = len(scores)
        self._counts["predictions"] += n
        self.answers.answered(e, n)
        stable = stable_rows(e, n)
        if not stable:
            return
        revision, version = e.model("stable")
        new_reference = self.drift.revision is None and bool(revision)
        if (revision, version) != self.drift.scores_of or new_reference:
            self._drift_block()  # what was read goes to the detectors it was read for
        self.drift.serve((revision, version))
        if new_reference:
            self._use_reference(str(revision))  # until the routing names one
        if read and not self.sample.add(e, stable, scores):
            self.metrics.bad_log_entries.inc()

    def _drift_block(self) -> None:
        """The stable rows and scores read since, to the drift detectors."""
        X, scores = self.sample.take()
        if X is not None:
            self._feature_drift(X)
        if scores is not None:
            self._log_events(self.drift.predictions(scores, self.clock()))

    def _on_label(self, j: Joined) -> None:
        """Labels of one logged request (:func:`tideline.monitoring.tracks.labelled`), once its
        prediction is mature (:class:`Defaulting`): its tracks' and versions' quality, the
        concept detector (in prediction order), the evidence the guardrails judge."""
        got = labelled(self.task, j.entry, j.rows, j.labels, j.received)
        if got.bad:
            self.metrics.bad_log_entries.inc(got.bad)
        if not got.scored:
            return
        if self.defaults is not None and not self.outcomes.known(_logged_by(j), j.ts, len(got.y)):
            return  # (its time's defaults were never given here: scored alone it biases)
        if self.defaulting.early(j.ts) and self.defaulting.hold(got, j.ts, len(got.y)):
            return  # (scored when it is mature; at once when there is no room)
        self._on_labelled(got, j.ts)

    def _on_labelled(self, got: Labelled, ts: float) -> None:
        self._counts["labels"] += len(got.y)
        self.judging.feedback(got, ts)
        for scored in got.scored:
            self._score(scored, ts)

    def _score(self, s: Scored, ts: float) -> None:
        """Labelled answers on their track and version; the stable track's errors to concept
        drift."""
        t = self.answers.score(s)
        if s.track == "stable":  # concept drift watches the stable track's errors
            self.drift.errors(s.p, s.y, ts, (s.revision, s.version), s.received, t.quality.labels)

    def _read_labels(self, block_ms: int) -> None:
        asked, self._read_from = self._read_from, time.time()
        n = 0
        for stream, entries in self.labels.read(LABEL_READ, block_ms):
            n += len(entries)
            if stream == self.labels.feedback:
                for entry_id, fields in entries:
                    try:  # what is not a label the learner dead-letters
                        _, labels = feedback_labels(entry_id.decode(), fields.get(b"data"))
                    except ValueError:
                        continue
                    received = predlog.entry_seconds(entry_id)
                    for name, f in labels:
                        if not isinstance(f, tuple):
                            self.join.add(name, f.id, f.label, received)
            else:
                self._on_samples(entries)
        joined = self.join.resolve()
        # the predictions no label came for, and the labels held for them (when due)
        defaults, mature = self.defaulting.due(asked, n, LABEL_READ, self.labels.new)
        for j in joined:
            self._on_label(j)
        for j in defaults:
            self._on_label(j)
        for got, ts in mature:
            self._on_labelled(got, ts)
        self._log_events(self.drift.release(self.clock()))
        self.join.take_rejected()  # the learner dead-letters them
        pipe = self.r.pipeline(transaction=False)
        marks = [m for j in joined + defaults for m in j.marks]
        self.join.commit(pipe, marks)
        keep = self.spec.learning.history
        if keep:  # the joins, for a new revision's catch-up and backtest
            kept = [rec for j in joined + defaults if (rec := history.record_of(j)) is not None]
            history.append(pipe, self.keys, kept, keep, time.time())
            self.log_size.history_entries += len(kept)
            self.log_size.history_rows += sum(len(rec.rows) for rec in kept)
        if defaults:
            assert self.defaults is not None
            cursors = self.keys.cursors(GROUP)
            pipe.hset(cursors, mapping=self.defaults.state())
            pipe.expire(cursors, int(self.join.retention) + 60)
        self.labels.ack(pipe)
        pipe.execute()
        self.labels.acked()
        self.join.committed(marks)
        self._flush_evidence()

    def _flush_evidence(self) -> None:
        """The judging labels read since, to the evidence's window (a block at a time)."""
        pending = self.judging.take()
        if pending is not None:
            self.candidates.add_samples(*pending)

    def _on_samples(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Labelled samples: the served version scores them, for a model that gets no feedback
        (learner-only models are watched too). Next to feedback they are training data only:
        quality, concept drift and evidence are the feedback's, the outcome of what was served
        (a producer sending wrong labels through :learn must not read as the model failing;
        :class:`tideline.monitoring.judging.Judging`)."""
        if self.judging.by_feedback(self.clock()):
            return
        served = self._served_model()
        if served is None:
            return
        rows, labels, arrived_at = labelled_samples(self.task, entries)
        if not rows:
            return
        X = served.schema.encode(rows)
        p = served.predict_many(X)
        y = np.array(labels)
        self.judging.samples(rows, labels, arrived_at)
        self._counts["labels"] += len(y)
        assert self._served_key is not None
        t = self.answers.track("stable")
        t.revision, t.version = self._served_key
        arrived = predlog.entry_seconds(entries[-1][0])  # samples: their arrival is their time
        self._score(Scored("stable", *self._served_key, p, y), arrived)
        if self.feature_names:
            self._feature_drift(X[:, served.schema.num_idx])
        values = self.task.predicted(p) if self.task.multiclass else p
        self._log_events(self.drift.predictions(values, self.clock()))

    def _served_model(self) -> Learner | None:
        routing = Routing.from_hash(self.r.hgetall(self.keys.routing), self._stable_revision)
        self._stable_revision = routing.stable
        v = Pointers.from_hash(self.r.hgetall(self.keys.pointers(self._stable_revision))).served
        if v is None:
            return None
        key = (self._stable_revision, v)
        if key != self._served_key and key not in self._unloadable:
            try:
                self._served, _ = self.store.load(*key)
            except (StoreError, ForgedBlob):  # (a forged one: logged and counted by the store)
                return self._served
            except ModelLoadError as e:
                self._cannot_load(key, e)
                return self._served
            self.drift.serve(key)
            self._served_key = key
        self._use_reference(key[0])
        return self._served

    def _use_reference(self, revision: str) -> None:
        """When the stable revision changes: its stored drift reference, if it has one.

        A revision warm-started from a baseline has the baseline's (see
        :class:`tideline.store.Reference`), so drift shows from the first
        prediction; otherwise the first window of traffic becomes the
        reference, and is stored for the revisions that warm-start from it.
        """
        if not self.drift.watch(revision):
            return
        ref = self.store.reference(revision)
        if ref is None:
            return
        if ref.names == self.feature_names and len(ref.features):
            self.drift.set_reference(ref.features)
        log.info("drift reference of %s: %s (%d rows)", revision, ref.source, len(ref.features))

    def _feature_drift(self, X: np.ndarray) -> None:
        self._log_events(self.drift.features(X, self.clock()))
        first = self.drift.reference_to_store()
        if first is not None:
            revision, ref = first
            with contextlib.suppress(redis.RedisError):
                self.store.save_reference(
                    revision, Reference(self.feature_names, ref, None, "the monitor's first window")
                )

    def _log_events(self, events: list[DriftEvent]) -> None:
        """Drift events to the ``driftlog`` stream (a detection counted on /metrics)."""
        for e in events:
            if e.counted:
                self.metrics.drift_events.labels(kind=e.kind).inc()
            with contextlib.suppress(redis.RedisError):
                self.r.xadd(
                    self.keys.driftlog,
                    {b"data": orjson.dumps({"kind": e.kind, **e.fields})},
                    maxlen=10_000,
                    approximate=True,
                )

    # -- summary -------------------------------------------------------------------------------
    def _servers(self) -> dict[str, Counted]:
        """The servers' per-track counters over a recent window (:class:`tideline.monitoring.counters.ServerCounters`)."""
        return self.servers.update(self.r.hgetall(self.keys.servers), self.clock())

    def summary(self) -> h.Health:
        """The health summary (:func:`tideline.monitoring.summary.health`): per track and version quality,
        evidence, drift, servers, lag."""
        now = self.clock()
        servers = self._servers()
        return health(
            f"{self.model.namespace}/{self.model.name}",
            now,
            self.answers,
            servers,
            drift=self.drift.summary(),
            label_lag=self.judging.lags.summary(),
            maturity=self._maturity(),
            throughput=self.throughput.rates,
            quality=self.candidates.quality(
                self._labelled(), feedback=self.judging.by_feedback(self.clock())
            ),
            log=self.log_size.capacity,
        )

    def _maturity(self) -> h.Maturity | None:
        """How far the predictions have their outcomes (with labelDefault only)."""
        if self.defaults is None:
            return None
        m, to = self.defaulting.maturing, self.defaulting.mature_to
        lag = None if to is None else max(0.0, time.time() - to)
        return h.Maturity(after=m.after, to=to, lag_seconds=lag, held=m.held, early=m.overflow)

    # -- evidence ------------------------------------------------------------------------------
    def _labelled(self) -> dict[Key, int]:
        """Each version's labelled answers (the candidates' ``recent`` and proof count them)."""
        return self.answers.labelled()

    def _named_roles(self) -> Named:
        """The versions the operator may choose between, as the pointers name them now (two
        round trips; a third when a canary runs)."""
        r = self.r
        pipe = r.pipeline(transaction=False)
        pipe.hgetall(self.keys.routing)
        pipe.hgetall(self.keys.pointers(self._stable_revision))
        raw_routing, raw = pipe.execute()
        routing = Routing.from_hash(raw_routing, self._stable_revision)
        if routing.stable != self._stable_revision:
            self._stable_revision = routing.stable
            raw = r.hgetall(self.keys.pointers(routing.stable))
        canary = (
            Pointers.from_hash(r.hgetall(self.keys.pointers(routing.canary)))
            if routing.canary
            else None
        )
        return self.candidates.name(
            routing,
            Pointers.from_hash(raw),
            canary,
            warm_started=self._is_warm_started(routing.stable),
            labelled=self._labelled(),
        )

    def _versions_moved(self, now: float) -> bool:
        """Whether the pointers name other versions than the evidence last scored (looked at
        every ``VERSIONS_EVERY`` seconds): a version just served is judged now, not at the
        next analysis interval."""
        if now - self._versions_looked < VERSIONS_EVERY:
            return False
        self._versions_looked = now
        return self.candidates.moved(self._named_roles())

    def _refresh_candidates(self) -> None:
        """Load the versions the operator may choose between; the window scores each once."""
        self.candidates.refresh(self._named_roles(), self._load)

    def _load(self, key: Key) -> Loaded:
        """A stored version and when the newest label it learned arrived; None when it is not
        stored, or cannot be loaded here."""
        if key in self._unloadable:
            return None
        try:
            learner, meta = self.store.load(*key)
        except (StoreError, ForgedBlob):  # (a forged one: logged and counted by the store)
            return None
        except ModelLoadError as e:
            self._cannot_load(key, e)
            return None
        until = meta.get("learnedUntil") if isinstance(meta, dict) else None
        return learner, _seconds(until)

    def _cannot_load(self, key: tuple[Any, ...], error: ModelLoadError) -> None:
        """A version whose model this monitor's image cannot load (a canary's class in another
        image): reported once as the monitor's fault of that revision (the operator's
        ModelLoaded condition), not scored, not tried again - not a failed turn."""
        self._unloadable.add(key)
        fault = faults.fault_of(error, "monitor", str(key[0]), self.clock())
        log.error("%s v%s cannot be loaded (%s): %s", key[0], key[1], fault.reason, fault.summary())
        faults.report(self.r, self.keys, fault)

    def _is_warm_started(self, revision: str) -> bool:
        """Whether the revision's v0 is a warm-start baseline (cached: v0 never changes)."""
        known = self._warm_started.get(revision)
        if known is None:
            try:
                known = bool(self.store.version_meta(revision, 0).get("warmStart"))
            except StoreError:
                return False  # no v0 yet
            except (orjson.JSONDecodeError, AttributeError):
                known = False
            self._warm_started[revision] = known
        return known

    def write(self) -> h.Health:
        with contextlib.suppress(redis.RedisError):  # the stable revision, for its drift reference
            routing = Routing.from_hash(self.r.hgetall(self.keys.routing), self._stable_revision)
            self._use_reference(routing.stable)
        with contextlib.suppress(redis.RedisError):
            self._refresh_candidates()
        self._log_events(self.drift.concept_edge(self.clock()))
        now = self.clock()
        self.throughput.measure(now)
        with contextlib.suppress(redis.RedisError):
            self._log_capacity(now)
        s = self.summary()
        # the metrics first: who reads a summary in Redis finds /metrics saying as much
        self._export(s)
        pipe = transaction(self.r, self.keys.prefix)  # (a cluster's pipeline takes no PUBLISH)
        pipe.set(self.keys.health, h.encode(s))
        pipe.publish(self.keys.events, orjson.dumps({"event": "health", "ts": s.ts}))
        pipe.execute()
        self._last_write = now
        self.candidates.written(self._labelled())
        return s

    def _export(self, s: h.Health) -> None:
        m = self.metrics
        if self.task.multiclass:
            m.set_recall({name: t.recall for name, t in s.tracks.items()})
        for name, t in s.tracks.items():
            if t.accuracy is not None:
                m.accuracy.labels(track=name).set(t.accuracy)
            if t.logloss is not None:
                m.logloss.labels(track=name).set(t.logloss)
            for gauge, value in ((m.auc, t.auc), (m.mean_predicted, t.mean_predicted),
                                 (m.mean_observed, t.mean_observed)):  # fmt: skip
                if value is not None:
                    gauge.labels(track=name).set(value)
            if t.rmse is not None:
                m.rmse.labels(track=name).set(t.rmse)
            for gauge, value in ((m.mae, t.mae), (m.relative_mse, t.relative_mse)):
                if value is not None:
                    gauge.labels(track=name).set(value)
            m.labelled.labels(track=name).set(t.labelled)
        for feature, score in s.drift.features.scores.items():
            m.feature_drift.labels(feature=feature).set(score)
        m.prediction_drift.set(s.drift.predictions.score)
        m.drift_detected.labels(kind="features").set(float(bool(s.drift.features.detected)))
        m.drift_detected.labels(kind="predictions").set(float(s.drift.predictions.detected))
        m.drift_detected.labels(kind="concept").set(float(s.drift.concept.detected))
        if s.label_lag:
            m.label_lag.set(s.label_lag.p50)
        if s.maturity is not None and s.maturity.lag_seconds is not None:
            m.maturity_lag.set(s.maturity.lag_seconds)

    # -- loop ------------------------------------------------------------------------------------
    def step(self, block_ms: int = 200) -> None:
        """One turn: read the log and the labels; write health once an analysis interval, and
        at once when the pointers name a version the evidence has not scored, or when the
        served version has just become countable for its proof
        (:meth:`tideline.monitoring.candidates.Candidates.countable`).

        A poisoned version served just after a write was judged at the next one: up to an
        interval late (2.0-2.7 s of poisoned answers, not 1, with the demo's 2 s; issue 30).
        """
        busy = self._read_log() >= LOG_READ  # (then more is waiting: labels are not waited for)
        self._flush_evidence()
        self._read_labels(0 if busy else block_ms)
        now = self.clock()
        if (
            now - self._last_write >= self.spec.rollout.analysis.interval
            or self.candidates.countable(self._labelled())
            or self._versions_moved(now)
        ):
            self.write()

    def run(self, stop: threading.Event | None = None) -> bool:
        """Turn until ``stop`` is set (True), or until ``max_failures`` turns failed in a row
        (False: the caller exits non-zero and Kubernetes restarts the pod, and counts it).

        Each turn that did its work (a read, a health write when one was due) beats
        :attr:`liveness`; each that raised - a connection refused, a consumer group gone,
        Redis refusing the health write when it is full, a poison entry - counts a failure
        and waits before the next (0.1 s, doubling, at most ``FAILED_WAIT``). A poison
        entry costs the turn that read it: its log cursor has moved past it, its label
        entries stay unacknowledged in the monitor's own group (the learner's is
        untouched), and the next turn reads on. A store that fails every turn is no quiet
        death: after Redis came back empty, a monitor that logged every failure and went
        on wrote no health for good while its port (a TCP probe) said alive (issue 30).
        """
        stop = stop or threading.Event()
        live = self.liveness
        alive = True
        while not stop.is_set():
            try:
                self.step()
            except Exception as e:
                self.metrics.step_errors.inc()
                if isinstance(e, redis.ConnectionError | redis.TimeoutError):
                    log.warning("redis unavailable (%s); retrying", e)
                else:
                    log.exception("a monitor turn failed; what it read is skipped")
                if live.failed(e):
                    log.error("%d monitor turns failed in a row, the last: %s; exiting",
                              live.failures, live.last_error)  # fmt: skip
                    alive = False
                    break
                stop.wait(min(FAILED_WAIT, 0.1 * 2 ** min(live.failures - 1, 16)))
            else:
                live.beat()
        self.labels.close()
        return alive


def _logged_by(j: Joined) -> str:
    """The server process whose log holds a joined request (its marks name it)."""
    where = predlog.Location.from_key(j.marks[0][1]) if j.marks else None
    return where.instance if where is not None else ""


def _seconds(value: Any) -> float | None:
    """A version's ``learnedUntil`` (None: not said, or not a finite number).

    >>> _seconds(1765100000.5), _seconds(None), _seconds(True), _seconds(float("nan"))
    (1765100000.5, None, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
