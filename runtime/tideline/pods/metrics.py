"""Prometheus metrics of the runtime processes.

Each process owns a ``CollectorRegistry`` (not the global one), so several
processes' metrics can live in one test process without clashing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import make_server

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

# (alive, why): a process's liveness, answered on its metrics port at /healthz
LivenessCheck = Callable[[], tuple[bool, str]]


def serve_metrics(
    port: int, registry: CollectorRegistry, alive: LivenessCheck | None = None
) -> ThreadingWSGIServer:
    """The metrics at ``/metrics`` (any path but ``/healthz``, as prometheus_client's own
    server), and ``GET /healthz``: 200 while ``alive`` says so, else 503 with its reason (the
    pod's liveness probe), in a daemon thread."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        ok, why = alive() if alive is not None else (True, "no liveness check")
        start_response("200 OK" if ok else "503 Service Unavailable",
                       [("Content-Type", "text/plain; charset=utf-8")])  # fmt: skip
        return [why.encode() + b"\n"]

    httpd = make_server("0.0.0.0", port, app, ThreadingWSGIServer, handler_class=_SilentHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True, name="metrics").start()
    return httpd


def forged_blobs(registry: CollectorRegistry, component: str) -> Any:
    """``tideline_forged_blobs_total{component}``: blobs read from Redis and refused for a
    signature that does not verify (or none where one is required; see
    :mod:`tideline.signing`), each distinct one counted once by each process. Not loaded:
    any count is an alert - someone who is not the learner wrote to the model's Redis."""
    return Counter(
        "tideline_forged_blobs",
        "Versions and checkpoints refused: their signature did not verify (never loaded)",
        ["component"],
        registry=registry,
    ).labels(component=component)


class LearnerMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.registry = registry = registry or CollectorRegistry()
        self.samples = Counter(
            "tideline_learner_samples", "Labelled samples learned", registry=registry
        )
        self.batches = Counter("tideline_learner_batches", "Mini-batch updates", registry=registry)
        self.versions_published = Counter(
            "tideline_learner_versions_published", "Versions published", registry=registry
        )
        self.versions = Gauge(
            "tideline_learner_latest_version", "Newest version published", registry=registry
        )
        self.gate_rejections = Counter(
            "tideline_learner_gate_rejections",
            "Versions held back by the holdout gate",
            registry=registry,
        )
        self.rejected = Counter(
            "tideline_learner_rejected",
            "Entries sent to the dead-letter stream (late, unmatched or invalid labels)",
            ["reason"],
            registry=registry,
        )
        self.defaults = Counter(
            "tideline_learner_defaults",
            "Predictions no label came for, learned with spec.learning.labelDefault",
            registry=registry,
        )
        self.corrected = Counter(
            "tideline_learner_corrected",
            "Late labels learned beside their prediction's default (lateLabel: correct)",
            registry=registry,
        )
        self.pending = Gauge(
            "tideline_learner_pending",
            "Rows and labels read but not yet learned",
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "tideline_learner_lag_seconds",
            "Age of the newest stream entry learned",
            registry=registry,
        )
        self.lag_records = Gauge(
            "tideline_learner_lag_records",
            "Samples and labels not learned yet: not read, or read and not checkpointed "
            "(Kafka: each partition's end less the learner's position)",
            registry=registry,
        )
        self.join_waiting = Gauge(
            "tideline_learner_join_waiting",
            "Labels waiting for their prediction to reach the log",
            registry=registry,
        )
        self.update_seconds = Histogram(
            "tideline_learner_update_seconds",
            "Time of one mini-batch update",
            buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5),
            registry=registry,
        )
        self.forged_blobs = forged_blobs(registry, "learner")
        # a team's own learner can outgrow its container (tideline.memory): read at checkpoints
        self.resident_bytes = Gauge(
            "tideline_learner_resident_memory_bytes",
            "The learner's resident set, at its last checkpoint",
            registry=registry,
        )
        self.memory_limit_bytes = Gauge(
            "tideline_learner_memory_limit_bytes",
            "Its container's memory limit (cgroup memory.max); 0: none",
            registry=registry,
        )
        self.state_bytes = Gauge(
            "tideline_learner_state_bytes",
            "Size of the learned state: the last checkpoint written",
            registry=registry,
        )

    def serve(self, port: int, alive: LivenessCheck | None = None) -> None:
        serve_metrics(port, self.registry, alive)


class ServerMetrics:
    TRACKS = ("stable", "canary")
    FALLBACK_REASONS = ("timeout", "no-model", "canary-unreachable", "model-error", "busy")
    MODEL_ERROR_REASONS = ("model-error", "timeout", "busy")  # (tideline.pods.server.usercode)
    LATENCY_BUCKETS = (
        0.0005,
        0.001,
        0.002,
        0.003,
        0.005,
        0.0075,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        1.0,
    )

    def __init__(self, registry: CollectorRegistry | None, *, batch: bool = True) -> None:
        self.registry = registry = registry or CollectorRegistry()
        # With --workers N a scrape reads every worker's counts from their files, and
        # cannot ask the other workers to flush first: they then count as they go.
        self.batch = batch
        self.requests = Counter(
            "tideline_server_requests",
            "HTTP requests",
            ["route", "track", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "tideline_server_request_seconds",
            "Time to answer a request",
            ["route", "track"],
            buckets=self.LATENCY_BUCKETS,
            registry=registry,
        )
        self.predictions = Counter(
            "tideline_server_predictions", "Rows predicted", ["track"], registry=registry
        )
        self.fallbacks = Counter(
            "tideline_server_fallbacks",
            "Answers given by the fallback",
            ["reason"],
            registry=registry,
        )
        self.model_errors = Counter(
            "tideline_server_model_errors",
            "Predict calls a model failed, by track: it raised or gave scores that cannot be "
            "served (model-error), ran past serving.timeout (timeout), or was still in a call "
            "that had (busy); the fallback or the stable answered them",
            ["track", "reason"],
            registry=registry,
        )
        # With --workers N each worker writes its own value; a scrape reports one per
        # server: the oldest version a live worker serves, and its age (a stale worker shows)
        self.served_version = Gauge(
            "tideline_server_served_version", "Version being served (the oldest of the workers')",
            ["track"], registry=registry, multiprocess_mode="livemin",
        )  # fmt: skip
        self.model_age = Gauge(
            "tideline_server_model_age_seconds",
            "Age of the served version (staleness; the oldest of the workers')",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.forged_blobs = forged_blobs(registry, "server")
        self.log_dropped = Counter(
            "tideline_server_log_dropped",
            "Prediction log entries dropped because the queue was full (Redis unreachable)",
            registry=registry,
        )
        self.missing = Counter(
            "tideline_server_missing_values",
            "Request values missing (the feature's default was used), by feature",
            ["feature"],
            registry=registry,
        )
        self._missing_of: tuple[Any, Any] | None = None  # (schema, its counts already added)
        # Label values known ahead are exported at 0 from the start: a rate() or an
        # alert on them has a series before the first prediction or fallback.
        for track in self.TRACKS:
            self.predictions.labels(track=track)
        for reason in self.FALLBACK_REASONS:
            self.fallbacks.labels(reason=reason)
        for track in (*self.TRACKS, "shadow"):
            for reason in self.MODEL_ERROR_REASONS:
                self.model_errors.labels(track=track, reason=reason)
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        # per (route, track, status): the latencies noted since the last flush, and rows
        self._pending: dict[tuple[str, str, int], tuple[list[float], list[int]]] = {}
        self._noted = 0

    PENDING = 4096  # requests noted before they are added up without being asked to

    def count_missing(self, schema: Any) -> None:
        """Add the served schema's missing values counted since the last call to the counter
        (a newly loaded version's schema counts from zero)."""
        counts = schema.missing.copy()
        seen = self._missing_of
        base = seen[1] if seen is not None and seen[0] is schema else 0
        for name, delta in zip(schema.names, (counts - base).tolist(), strict=True):
            if delta > 0:
                self.missing.labels(feature=name).inc(delta)
        self._missing_of = (schema, counts)

    def request(self, route: str, track: str, status: int, seconds: float, rows: int = 0) -> None:
        """One answered request (and its ``rows`` predictions), noted for :meth:`flush`.

        prometheus_client takes a lock and walks the buckets for every
        observation (a fifth of a one-row request's time); requests are noted
        by label set instead, and added up in :meth:`flush`, which the server
        calls every second and before every scrape: a flush is then a few
        numpy calls per label set, not Python work per request (which held the
        event loop up to 3 ms per 4096 requests). Unbatched (several
        workers), it is counted at once.
        """
        if not self.batch:
            children = self._children_of((route, track, status))
            children[0].inc()
            children[1].observe(seconds)
            if rows and children[2] is not None:
                children[2].inc(rows)
            return
        key = (route, track, status)
        noted = self._pending.get(key)
        if noted is None:
            noted = self._pending[key] = ([], [])
        noted[0].append(seconds)
        noted[1].append(rows)
        self._noted += 1
        if self._noted >= self.PENDING:
            self.flush()

    def _children_of(self, key: tuple[str, str, int]) -> tuple[Any, Any, Any]:
        """The labelled counter, histogram and predictions counter of (route, track, status)."""
        children = self._children.get(key)
        if children is None:
            route, track, status = key
            children = self._children[key] = (
                self.requests.labels(route=route, track=track, status=str(status)),
                self.latency.labels(route=route, track=track),
                self.predictions.labels(track=track) if status < 400 and track != "none" else None,
            )
        return children

    def flush(self) -> None:
        pending, self._pending, self._noted = self._pending, {}, 0
        for key, (latencies, row_counts) in pending.items():
            children = self._children_of(key)
            children[0].inc(len(latencies))
            _observe_many(children[1], latencies)
            predicted = sum(row_counts)
            if children[2] is not None and predicted:
                children[2].inc(predicted)


def _observe_many(histogram: Any, values: list[float]) -> None:
    """``histogram.observe(v)`` for each value, with one increment per bucket.

    Reaches into prometheus_client's Histogram (pinned in pyproject.toml): it
    keeps one non-cumulative count per upper bound (``_buckets``, the first
    bound >= the value) and ``_sum``. tests/unit/test_metrics.py checks the
    exposition against plain ``observe`` calls, so an upgrade that changes
    this fails there.
    """
    bounds = histogram._upper_bounds
    seconds = np.array(values, dtype=np.float64)  # converted once, for both
    hits = np.bincount(np.searchsorted(bounds, seconds, side="left"), minlength=len(bounds))
    for i, count in enumerate(hits.tolist()):
        if count:
            histogram._buckets[i].inc(count)
    histogram._sum.inc(float(seconds.sum()))


class _Renamed:
    """A metric under its name and, for one release, under the name it had: both move together."""

    def __init__(self, *metrics: Any) -> None:
        self.metrics = metrics

    def labels(self, **kw: str) -> _Renamed:
        return _Renamed(*(m.labels(**kw) for m in self.metrics))

    def set(self, value: float) -> None:
        for m in self.metrics:
            m.set(value)

    def inc(self, amount: float = 1.0) -> None:
        for m in self.metrics:
            m.inc(amount)


class MonitorMetrics:
    """The monitor's metrics, ``tideline_monitor_*``. The names they had before
    (``tideline_online_accuracy``, ``tideline_drift_psi``, ...) are exported too, for one
    release, so dashboards and alerts written against them keep working meanwhile."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.registry = registry = registry or CollectorRegistry()

        def both(kind: Any, name: str, old: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
            return _Renamed(
                kind(f"tideline_monitor_{name}", doc, list(labels), registry=registry),
                kind(
                    old,
                    f"{doc} (deprecated: tideline_monitor_{name})",
                    list(labels),
                    registry=registry,
                ),  # fmt: skip
            )

        self.accuracy = both(
            Gauge,
            "accuracy",
            "tideline_online_accuracy",
            "Accuracy on delayed labels (rolling window)",
            ("track",),
        )
        self.logloss = both(
            Gauge,
            "logloss",
            "tideline_online_logloss",
            "Log-loss on delayed labels",
            ("track",),
        )
        self.auc = Gauge("tideline_monitor_auc", "AUC on delayed labels (binary, rolling window)",
                         ["track"], registry=registry)  # fmt: skip
        self.mean_predicted = Gauge(
            "tideline_monitor_mean_predicted",
            "Mean predicted probability on the labelled window (binary): the predicted rate",
            ["track"],
            registry=registry,
        )
        self.mean_observed = Gauge(
            "tideline_monitor_mean_observed",
            "Share of positive labels on the labelled window (binary): the observed rate",
            ["track"],
            registry=registry,
        )
        self.rmse = both(
            Gauge,
            "rmse",
            "tideline_online_rmse",
            "RMSE on delayed labels",
            ("track",),
        )
        self.mae = Gauge("tideline_monitor_mae", "Mean absolute error on delayed labels "
                         "(regression; rolling window)", ["track"], registry=registry)  # fmt: skip
        self.relative_mse = Gauge(
            "tideline_monitor_relative_mse",
            "Squared error relative to the best constant's - the labels' mean - on the window "
            "(regression; 1 - R^2: below 1, the model beats a constant)",
            ["track"],
            registry=registry,
        )
        # multiclass: a series per class and track (at most spec.model.classes per track)
        self.recall = Gauge(
            "tideline_monitor_recall",
            "Recall of each class on delayed labels (multiclass; rolling window)",
            ["track", "class"],
            registry=registry,
        )
        self._recall_shown: set[tuple[str, str]] = set()
        self.labelled = both(
            Gauge,
            "labelled",
            "tideline_labelled",
            "Predictions with a label so far",
            ("track",),
        )
        self.feature_drift = both(
            Gauge,
            "feature_drift",
            "tideline_drift_psi",
            "Feature drift score (PSI or KS) against the reference",
            ("feature",),
        )
        self.prediction_drift = both(
            Gauge,
            "prediction_drift",
            "tideline_drift_prediction_score",
            "Prediction drift score against the reference",
        )
        self.drift_detected = both(
            Gauge,
            "drift_detected",
            "tideline_drift_detected",
            "1 while drift of this kind is detected",
            ("kind",),
        )
        self.drift_events = both(
            Counter,
            "drift_events",
            "tideline_drift_events",
            "Drift detections",
            ("kind",),
        )
        self.label_lag = both(
            Gauge,
            "label_lag_seconds",
            "tideline_label_lag_seconds",
            "Median delay of labels",
        )
        self.maturity_lag = Gauge(
            "tideline_monitor_maturity_lag_seconds",
            "How long ago the newest prediction with its outcome (a label, or the default of "
            "spec.learning.labelDefault) was made: after, and how far the labels' reading is behind",
            registry=registry,
        )
        self.bad_log_entries = Counter(
            "tideline_monitor_bad_log_entries",
            "Prediction-log entries that could not be read",
            registry=registry,
        )
        self.step_errors = Counter(
            "tideline_monitor_step_errors",
            "Monitor turns that raised: what they read is skipped, the monitor goes on",
            registry=registry,
        )
        self.forged_blobs = forged_blobs(registry, "monitor")

    def set_recall(self, recall: dict[str, dict[str, float]]) -> None:
        """Each track's per-class recall (track -> class name -> recall): the series of a
        class that has no recall now (no labelled row left in the window) go."""
        shown = {(track, name) for track, by_class in recall.items() for name in by_class}
        for track, name in self._recall_shown - shown:
            self.recall.remove(track, name)
        for track, by_class in recall.items():
            for name, value in by_class.items():
                self.recall.labels(track, name).set(value)
        self._recall_shown = shown

    def serve(self, port: int, alive: LivenessCheck | None = None) -> None:
        serve_metrics(port, self.registry, alive)
