"""The drift monitor: quality per track and version, drift, and the health summary the operator reads.

It reads, without taking anything from the learner:

* the prediction log (``XREAD`` from its own cursor), for what each track
  answered, the features it saw and its scores;
* ``feedback`` and ``samples`` through its own consumer group (``monitor``):
  every consumer group gets every entry, so the learner's group loses
  nothing. Feedback is joined with the log (:mod:`tideline.join`); labelled
  samples are scored by the served version itself, so a model that gets no
  HTTP traffic at all (learner-only) is still watched;
* the servers' per-track counters and latency percentiles (``servers``).

Every ``spec.rollout.analysis.interval`` it writes ``tideline:{ns}:{model}:health``
(JSON, see :meth:`Monitor.summary`) and publishes a ``health`` event; drift
events also go to the ``driftlog`` stream for later analysis. State is
bounded: rolling windows, a capped join index, fixed-size detectors.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import redis

from tideline.drift import ADWIN, KS, PSI, PageHinkley
from tideline.evaluate import RollingMetrics
from tideline.join import Joiner
from tideline.learn import Learner
from tideline.learner import log_ids, log_rows
from tideline.metrics import MonitorMetrics
from tideline.spec import OnlineModel
from tideline.store import ModelStore, Reference, StoreError

log = logging.getLogger("tideline.monitor")

GROUP = "monitor"


@dataclass
class TrackState:
    """Quality of one track (stable, canary, shadow) over a rolling window."""

    task: str
    window: int
    quality: RollingMetrics = field(init=False)
    labelled: int = 0
    predictions: int = 0
    revision: str | None = None
    version: int | None = None

    def __post_init__(self) -> None:
        self.quality = RollingMetrics(self.task, self.window)


class Monitor:
    def __init__(
        self,
        model: OnlineModel,
        client: redis.Redis,
        *,
        metrics: MonitorMetrics | None = None,
        clock: Callable[[], float] = time.time,
        window: int = 2000,
    ) -> None:
        self.model = model
        self.spec = model.spec
        self.r: Any = client
        self.store = ModelStore(client, model.namespace, model.name)
        self.keys = self.store.keys
        self.metrics = metrics or MonitorMetrics(None)
        self.clock = clock
        self.window = window
        self.task = self.spec.model.task
        self.joiner = Joiner(self.spec.learning.labelWindow, max_predictions=200_000)
        self.tracks: dict[str, TrackState] = {}
        self.versions: dict[str, TrackState] = {}  # "revision:version" -> quality
        numeric = [f for f in self.spec.model.features if f.type == "numeric"]
        self.feature_names = [f.name for f in numeric]
        self.feature_defaults = [float(f.default or 0.0) for f in numeric]
        self._new_detectors()
        self.concept_events: list[dict[str, Any]] = []
        self.label_lags: list[float] = []
        self._cursor: bytes | str = "$"
        self._served: Learner | None = None
        self._served_key: tuple[str, int] | None = None
        self._stable_revision = model.revision
        self._reference_revision: str | None = None  # whose drift reference the detectors hold
        self._last_write = 0.0
        self._counts = {"predictions": 0, "labels": 0}
        self._rates = {"predictions": 0.0, "labels": 0.0}
        self._last_counts = dict(self._counts)
        self._last_rate_at = clock()

    def _new_detectors(self) -> None:
        self._new_feature_detector()
        self._new_version_detectors()

    def _new_feature_detector(self) -> None:
        """Feature drift is the traffic's, not a version's: one detector per stable revision."""
        d = self.spec.drift.features
        cls = PSI if d.method == "psi" else KS
        self.feature_drift = cls(max(len(self.feature_names), 1), d.window, d.threshold)
        self._reference_stored = False

    def _new_version_detectors(self) -> None:
        """Prediction and concept drift start again with each served version."""
        d = self.spec.drift
        pcls = PSI if d.predictions.method == "psi" else KS
        self.prediction_drift = pcls(1, d.predictions.window, d.predictions.threshold)
        if d.concept.method == "adwin":
            self.concept: ADWIN | PageHinkley = ADWIN(delta=d.concept.delta)
        else:
            self.concept = PageHinkley()

    # -- start -------------------------------------------------------------------------------
    def start(self) -> None:
        for stream in (self.keys.feedback, self.keys.samples):
            try:
                self.r.xgroup_create(stream, GROUP, id="$", mkstream=True)
            except redis.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
        # the predictions of the last labelWindow, so labels arriving now find them
        since = int((self.clock() - self.spec.learning.labelWindow) * 1000)
        self._cursor = f"{max(since, 0)}-0"
        while self._read_log(count=5000) == 5000:
            pass

    # -- reading -----------------------------------------------------------------------------
    def _track(self, name: str) -> TrackState:
        t = self.tracks.get(name)
        if t is None:
            t = self.tracks[name] = TrackState(self.task, self.window)
        return t

    def _version(self, revision: str | None, version: int | None) -> TrackState | None:
        if revision is None or version is None:
            return None
        key = f"{revision}:{version}"
        v = self.versions.get(key)
        if v is None:
            if len(self.versions) >= 64:  # bounded: forget the oldest
                self.versions.pop(next(iter(self.versions)))
            v = self.versions[key] = TrackState(
                self.task, self.window, revision=revision, version=version
            )
        return v

    def _read_log(self, count: int = 5000) -> int:
        n = 0
        for _, entries in self.r.xread({self.keys.predictions: self._cursor}, count=count) or []:
            for entry_id, fields in entries:
                self._cursor = entry_id
                n += 1
                try:
                    e = orjson.loads(fields[b"data"])
                    rows, ids, scores = log_rows(e), log_ids(e), e["scores"]
                except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):
                    self.metrics.bad_log_entries.inc()
                    continue
                self._on_predictions(e, rows, ids, scores)
        return n

    def _on_predictions(
        self, e: dict[str, Any], rows: list[Any], ids: list[Any], scores: list[Any]
    ) -> None:
        track = str(e.get("track") or "stable")
        t = self._track(track)
        t.predictions += len(ids)
        t.revision, t.version = e.get("revision"), e.get("version")
        self._counts["predictions"] += len(ids)
        ts = float(e.get("ts") or self.clock())
        meta = {"track": track, "revision": e.get("revision"), "version": e.get("version")}
        for pid, row, score in zip(ids, rows, scores, strict=False):
            for j in self.joiner.add_prediction(str(pid), {"row": row, "score": score, **meta}, ts):
                self._on_label(j.features, j.label, j.prediction_ts, self.clock())
        if track == "stable" and rows and isinstance(rows[0], dict):
            if self._reference_revision is None and e.get("revision"):
                self._use_reference(str(e["revision"]))  # until the routing names one
            pairs = list(zip(self.feature_names, self.feature_defaults, strict=True))
            X = np.array([[_num(r.get(f), d) for f, d in pairs] for r in rows])
            if self.feature_names:
                self._feature_drift(X)
            s = np.array([_num(x, 0.5) for x in scores]).reshape(-1, 1)
            self._drift_event(
                "predictions", self.prediction_drift.update_many(s), self.prediction_drift
            )

    def _on_label(self, pred: dict[str, Any], label: Any, pred_ts: float, now: float) -> None:
        try:
            y = float(label)
            p = float(pred["score"])
        except (TypeError, ValueError, KeyError):
            return
        self._counts["labels"] += 1
        self.label_lags.append(max(0.0, now - pred_ts))
        if len(self.label_lags) > 1000:
            del self.label_lags[:500]
        self._score(
            pred["track"], pred.get("revision"), pred.get("version"), np.array([p]), np.array([y])
        )

    def _score(self, track: str, revision: Any, version: Any, p: np.ndarray, y: np.ndarray) -> None:
        t = self._track(track)
        t.quality.update(p, y)
        t.labelled += len(y)
        v = self._version(revision, version)
        if v is not None:
            v.quality.update(p, y)
            v.labelled += len(y)
        if track == "stable":
            err = (
                ((p >= 0.5) != (y >= 0.5)).astype(float)
                if self.task == "binary"
                else self._reg_error(p, y)
            )
            fired = self.concept.update_many(err)
            if len(fired):
                event = {
                    "ts": self.clock(),
                    "revision": revision,
                    "version": version,
                    "method": self.spec.drift.concept.method,
                }
                self.concept_events.append(event)
                self.concept_events = self.concept_events[-20:]
                self._log_event("concept", event)

    def _reg_error(self, p: np.ndarray, y: np.ndarray) -> np.ndarray:
        # a regression error "counts" when it is larger than the window's typical error
        rep = self._track("stable").quality.report()
        scale = rep.get("mae") or 1.0
        return (np.abs(p - y) > 2 * scale).astype(float)

    def _read_labels(self, block_ms: int) -> None:
        resp = self.r.xreadgroup(
            GROUP,
            "monitor",
            {self.keys.feedback: ">", self.keys.samples: ">"},
            count=5000,
            block=block_ms,
        )
        for stream, entries in resp or []:
            ids = [eid for eid, _ in entries]
            if stream.decode() == self.keys.feedback:
                for entry_id, fields in entries:
                    try:
                        d = orjson.loads(fields[b"data"])
                        pid, label = str(d["id"]), d["label"]
                    except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):
                        continue
                    received = int(entry_id.split(b"-")[0]) / 1000
                    for j in self.joiner.add_feedback(entry_id.decode(), pid, label, received):
                        self._on_label(j.features, j.label, j.prediction_ts, received)
            else:
                self._on_samples(entries)
            self.r.xack(stream, GROUP, *ids)  # the monitor's own group: the learner's is untouched

    def _on_samples(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Labelled samples: the served version scores them (learner-only models are watched too)."""
        served = self._served_model()
        if served is None:
            return
        rows, labels = [], []
        for _, fields in entries:
            try:
                d = orjson.loads(fields[b"data"])
                rows.append(d["features"] if isinstance(d["features"], dict) else {})
                labels.append(float(d["label"]))
            except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):
                continue
        if not rows:
            return
        X = served.schema.encode(rows)
        p = served.predict_many(X)
        y = np.array(labels)
        self._counts["labels"] += len(y)
        assert self._served_key is not None
        t = self._track("stable")
        t.revision, t.version = self._served_key
        self._score("stable", self._served_key[0], self._served_key[1], p, y)
        if self.feature_names:
            self._feature_drift(X[:, served.schema.num_idx])
        self._drift_event(
            "predictions",
            self.prediction_drift.update_many(p.reshape(-1, 1)),
            self.prediction_drift,
        )

    def _served_model(self) -> Learner | None:
        raw = self.r.hgetall(self.keys.routing)
        if raw.get(b"stable"):
            self._stable_revision = raw[b"stable"].decode()
        v = self.r.hget(self.keys.rev(self._stable_revision, "pointers"), "served")
        if v is None:
            return None
        key = (self._stable_revision, int(v))
        if key != self._served_key:
            try:
                self._served, _ = self.store.load(*key)
            except StoreError:
                return self._served
            if self._served_key is not None:
                # a new version is served: its prediction reference window starts now
                self._new_version_detectors()
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
        if revision == self._reference_revision:
            return
        self._reference_revision = revision
        self._new_feature_detector()
        ref = self.store.reference(revision)
        if ref is None:
            return
        if ref.names == self.feature_names and len(ref.features):
            self.feature_drift.set_reference(ref.features)
            self._reference_stored = True
        if ref.scores is not None and len(ref.scores) and self.prediction_drift.reference is None:
            self.prediction_drift.set_reference(ref.scores.reshape(-1, 1))
        log.info("drift reference of %s: %s (%d rows)", revision, ref.source, len(ref.features))

    def _feature_drift(self, X: np.ndarray) -> None:
        self._drift_event("features", self.feature_drift.update_many(X), self.feature_drift)
        ref = self.feature_drift.reference
        if ref is not None and not self._reference_stored and self._reference_revision:
            self._reference_stored = True
            with contextlib.suppress(redis.RedisError):
                self.store.save_reference(
                    self._reference_revision,
                    Reference(self.feature_names, ref, None, "the monitor's first window"),
                )

    def _drift_event(self, kind: str, fired: np.ndarray, detector: PSI | KS) -> None:
        if len(fired):
            names = self.feature_names if kind == "features" else ["score"]
            top = {
                n: float(s)
                for n, s in zip(names, detector.scores, strict=False)
                if s > detector.threshold
            }
            self._log_event(kind, {"ts": self.clock(), "scores": top})

    def _log_event(self, kind: str, event: dict[str, Any]) -> None:
        self.metrics.drift_events.labels(kind=kind).inc()
        with contextlib.suppress(redis.RedisError):
            self.r.xadd(
                self.keys.driftlog,
                {b"data": orjson.dumps({"kind": kind, **event})},
                maxlen=10_000,
                approximate=True,
            )

    # -- summary -------------------------------------------------------------------------------
    def _servers(self) -> dict[str, dict[str, Any]]:
        """Servers' reports, summed per track (latency: the worst server's percentiles)."""
        out: dict[str, dict[str, Any]] = {}
        now = self.clock()
        for _, raw in self.r.hgetall(self.keys.servers).items():
            try:
                rep = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if now - float(rep.get("ts", 0)) > 30:  # a server gone for 30 s no longer counts
                continue
            for track, s in (rep.get("tracks") or {}).items():
                agg = out.setdefault(track, {"requests": 0, "errors": 0, "fallbacks": 0})
                for k in ("requests", "errors", "fallbacks"):
                    agg[k] += int(s.get(k, 0))
                for k in ("p50", "p95", "p99"):
                    if k in s:
                        agg[k] = max(agg.get(k, 0.0), float(s[k]))
        for agg in out.values():
            agg["errorRate"] = agg["errors"] / agg["requests"] if agg["requests"] else 0.0
        return out

    def summary(self) -> dict[str, Any]:
        """The health summary: per track and version quality, drift, servers, lag, throughput."""
        now = self.clock()
        servers = self._servers()
        tracks = {}
        for name, t in self.tracks.items():
            tracks[name] = {
                "revision": t.revision,
                "version": t.version,
                "labelled": t.labelled,
                "predictions": t.predictions,
                **{k: v for k, v in t.quality.report().items() if k != "count"},
                "window": t.quality.report().get("count", 0),
                **{
                    k if k not in ("p50", "p95", "p99") else f"{k}Latency": v
                    for k, v in servers.get(name, {}).items()
                },
            }
        for name, agg in servers.items():
            if name not in tracks:
                tracks[name] = {
                    k if k not in ("p50", "p95", "p99") else f"{k}Latency": v
                    for k, v in agg.items()
                }
        lags = np.array(self.label_lags) if self.label_lags else None
        last = self.concept_events[-1] if self.concept_events else None
        feature_scores = dict(
            zip(self.feature_names, self.feature_drift.scores.tolist(), strict=False)
        )
        return {
            "ts": now,
            "model": f"{self.model.namespace}/{self.model.name}",
            "tracks": tracks,
            "versions": {
                k: {
                    "labelled": v.labelled,
                    **{q: x for q, x in v.quality.report().items() if q != "count"},
                }
                for k, v in self.versions.items()
            },
            "drift": {
                "features": {
                    "method": self.spec.drift.features.method,
                    "scores": feature_scores,
                    "detected": sorted(
                        n
                        for n, s in feature_scores.items()
                        if s > self.spec.drift.features.threshold
                    ),
                },
                "predictions": {
                    "method": self.spec.drift.predictions.method,
                    "score": float(self.prediction_drift.scores[0]),
                    "detected": bool(
                        self.prediction_drift.scores[0] > self.spec.drift.predictions.threshold
                    ),
                },
                "concept": {
                    "method": self.spec.drift.concept.method,
                    "detected": last is not None
                    and now - last["ts"] < 10 * self.spec.rollout.analysis.interval,
                    "last": last,
                    "count": len(self.concept_events),
                },
            },
            "labelLag": {"p50": float(np.median(lags)), "p95": float(np.percentile(lags, 95))}
            if lags is not None
            else None,
            "throughput": dict(self._rates),
        }

    def write(self) -> dict[str, Any]:
        with contextlib.suppress(redis.RedisError):  # the stable revision, for its drift reference
            stable = self.r.hget(self.keys.routing, "stable")
            self._use_reference(stable.decode() if stable else self._stable_revision)
        now = self.clock()
        dt = max(now - self._last_rate_at, 1e-9)
        self._rates = {k: (self._counts[k] - self._last_counts[k]) / dt for k in self._counts}
        self._last_counts, self._last_rate_at = dict(self._counts), now
        s = self.summary()
        pipe = self.r.pipeline(transaction=False)
        pipe.set(self.keys.health, orjson.dumps(s))
        pipe.publish(self.keys.events, orjson.dumps({"event": "health", "ts": s["ts"]}))
        pipe.execute()
        self._export(s)
        self._last_write = now
        return s

    def _export(self, s: dict[str, Any]) -> None:
        m = self.metrics
        for name, t in s["tracks"].items():
            if "accuracy" in t:
                m.accuracy.labels(track=name).set(t["accuracy"])
            if "logloss" in t:
                m.logloss.labels(track=name).set(t["logloss"])
            if "rmse" in t:
                m.rmse.labels(track=name).set(t["rmse"])
            m.labelled.labels(track=name).set(t.get("labelled", 0))
        for feature, score in s["drift"]["features"]["scores"].items():
            m.feature_drift.labels(feature=feature).set(score)
        m.prediction_drift.set(s["drift"]["predictions"]["score"])
        m.drift_detected.labels(kind="features").set(
            float(bool(s["drift"]["features"]["detected"]))
        )
        m.drift_detected.labels(kind="predictions").set(
            float(s["drift"]["predictions"]["detected"])
        )
        m.drift_detected.labels(kind="concept").set(float(s["drift"]["concept"]["detected"]))
        if s["labelLag"]:
            m.label_lag.set(s["labelLag"]["p50"])

    # -- loop ------------------------------------------------------------------------------------
    def step(self, block_ms: int = 200) -> None:
        self._read_log()
        self._read_labels(block_ms)
        self.joiner.expire(self.clock())
        self.joiner.take_rejected()
        if self.clock() - self._last_write >= self.spec.rollout.analysis.interval:
            self.write()

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                self.step()
            except redis.ConnectionError as e:
                log.warning("redis unavailable (%s); retrying", e)
                time.sleep(1.0)


def _num(v: Any, default: float) -> float:
    if isinstance(v, int | float) and v == v and abs(v) != float("inf"):
        return float(v)
    return default
