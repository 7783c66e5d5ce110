"""Per-model series the operator exports from each turn's status: its conditions.

The counters of what the operator did (reconciles, rollbacks, promotions) are process-wide
and live in :mod:`tideline_operator.reconcile`. What a model's status says - the Redis in
use cannot hold ``labelWindow`` (LogCapacity ``Insufficient``), the served version is
surely worse than a proven one (ModelQuality ``WorseThanLastGood``), the monitor's summary
is stale (ModelQuality ``NoEvidence``) - is judged by the operator and was in no
component's metrics, so an alert could not see it. ``tideline_operator_model_condition``
is 1 for each condition a model's status holds now, with its type, status and reason as
labels, the way kube-state-metrics exports a Deployment's conditions.

A model's series go when its turns stop (the model was deleted, or another replica holds
the peering): the collector answers from what each model's last turn recorded, if that
was within ``stale_after`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

NAME = "tideline_operator_model_condition"
LABELS = ["namespace", "model", "type", "status", "reason"]

Condition = tuple[str, str, str]  # type, status, reason


def conditions_of(status: Mapping[str, Any]) -> tuple[Condition, ...]:
    """The (type, status, reason) of each condition a status holds, as written."""
    return tuple(
        (str(c["type"]), str(c.get("status", "Unknown")), str(c.get("reason") or ""))
        for c in status.get("conditions") or []
        if c.get("type")
    )


class ModelConditions(Collector):
    """``tideline_operator_model_condition{namespace, model, type, status, reason}``."""

    def __init__(
        self,
        stale_after: float,
        clock: Callable[[], float] = time.monotonic,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.stale_after = stale_after
        self.clock = clock
        self._lock = threading.Lock()
        # (namespace, model) -> (when its last turn recorded, its conditions then)
        self._last: dict[tuple[str, str], tuple[float, tuple[Condition, ...]]] = {}
        if registry is not None:
            registry.register(self)

    def record(self, namespace: str, model: str, status: Mapping[str, Any]) -> None:
        """The status a model's turn ended with."""
        with self._lock:
            self._last[(namespace, model)] = (self.clock(), conditions_of(status))

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.clock()
        with self._lock:
            for key in [k for k, (at, _) in self._last.items() if now - at > self.stale_after]:
                del self._last[key]
            last = sorted(self._last.items())
        family = self._family()
        for (namespace, model), (_, conditions) in last:
            for kind, status, reason in conditions:
                family.add_metric([namespace, model, kind, status, reason], 1.0)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            NAME,
            "1 for each condition of each model's status, by type, status and reason (a "
            "model's series go when its turns stop)",
            labels=LABELS,
        )
