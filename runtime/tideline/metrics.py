"""Prometheus metrics of the runtime processes.

Each process owns a ``CollectorRegistry`` (not the global one), so several
processes' metrics can live in one test process without clashing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


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
        self.join_index = Gauge(
            "tideline_learner_join_index",
            "Logged predictions held for the label join",
            registry=registry,
        )
        self.update_seconds = Histogram(
            "tideline_learner_update_seconds",
            "Time of one mini-batch update",
            buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5),
            registry=registry,
        )

    def serve(self, port: int) -> None:
        start_http_server(port, addr="0.0.0.0", registry=self.registry)
