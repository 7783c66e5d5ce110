"""Per-model series the operator exports from each turn's status: its conditions.

The counters of what the operator did (reconciles, rollbacks, promotions) are process-wide
and live in :mod:`tideline_operator.reconcile`. What a model's status says - the Redis in
use cannot hold ``labelWindow`` (LogCapacity ``Insufficient``), the served version is
surely worse than a proven one (ModelQuality ``WorseThanLastGood``), the monitor's summary
is stale (ModelQuality ``NoEvidence``) - is judged by the operator and was in no
component's metrics, so an alert could not see it. ``tideline_operator_model_condition``
is 1 for each condition a model's status holds now, with its type, status and reason as
labels, the way kube-state-metrics exports a Deployment's conditions.

Beside them, the two comparisons the status carries with an interval - the served
version against the snapshot it was warm-started from (``liftOverBaseline``: what online
learning pays) and a canary's backtest on history (``backtest``) - as
``tideline_operator_model_lift_over_baseline`` and ``tideline_operator_model_backtest``,
each with ``bound`` ``estimate``, ``lower`` and ``upper`` (in the task's decision units:
accuracy points; for regression, the relative reduction of the squared error).

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
# status field -> its series (the field holds difference, lower and upper)
COMPARISONS = {
    "liftOverBaseline": (
        "tideline_operator_model_lift_over_baseline",
        "The served version's quality minus the warm-start snapshot's, frozen, on the same "
        "labels, and its interval (bound: estimate, lower, upper)",
    ),
    "backtest": (
        "tideline_operator_model_backtest",
        "A canary's quality minus stable's on the labelled history, and its interval "
        "(bound: estimate, lower, upper)",
    ),
}
BOUNDS = (("estimate", "difference"), ("lower", "lower"), ("upper", "upper"))

Condition = tuple[str, str, str]  # type, status, reason
Comparison = tuple[str, float, float, float]  # status field, difference, lower, upper


def conditions_of(status: Mapping[str, Any]) -> tuple[Condition, ...]:
    """The (type, status, reason) of each condition a status holds, as written."""
    return tuple(
        (str(c["type"]), str(c.get("status", "Unknown")), str(c.get("reason") or ""))
        for c in status.get("conditions") or []
        if c.get("type")
    )


def comparisons_of(status: Mapping[str, Any]) -> tuple[Comparison, ...]:
    """The comparisons with an interval a status holds (a backtest not judged yet: none)."""
    out = []
    for field in COMPARISONS:
        c = status.get(field)
        if not isinstance(c, Mapping):
            continue
        try:
            out.append((field, float(c["difference"]), float(c["lower"]), float(c["upper"])))
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(out)


class ModelConditions(Collector):
    """``tideline_operator_model_condition{namespace, model, type, status, reason}``, and
    the comparisons ``{namespace, model, bound}`` (see the module docs)."""

    def __init__(
        self,
        stale_after: float,
        clock: Callable[[], float] = time.monotonic,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.stale_after = stale_after
        self.clock = clock
        self._lock = threading.Lock()
        # (namespace, model) -> (when its last turn recorded, its conditions then, and its
        # comparisons)
        self._last: dict[
            tuple[str, str], tuple[float, tuple[Condition, ...], tuple[Comparison, ...]]
        ] = {}
        if registry is not None:
            registry.register(self)

    def record(self, namespace: str, model: str, status: Mapping[str, Any]) -> None:
        """The status a model's turn ended with."""
        with self._lock:
            self._last[(namespace, model)] = (
                self.clock(), conditions_of(status), comparisons_of(status)
            )  # fmt: skip

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()
        yield from self._comparison_families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.clock()
        with self._lock:
            for key in [k for k, v in self._last.items() if now - v[0] > self.stale_after]:
                del self._last[key]
            last = sorted(self._last.items())
        family, compared = self._family(), self._comparison_families()
        for (namespace, model), (_, conditions, comparisons) in last:
            for kind, status, reason in conditions:
                family.add_metric([namespace, model, kind, status, reason], 1.0)
            for field, *values in comparisons:
                for (bound, _), value in zip(BOUNDS, values, strict=True):
                    compared[field].add_metric([namespace, model, bound], value)
        yield family
        yield from compared.values()

    @staticmethod
    def _comparison_families() -> dict[str, GaugeMetricFamily]:
        return {field: GaugeMetricFamily(name, doc, labels=["namespace", "model", "bound"])
                for field, (name, doc) in COMPARISONS.items()}  # fmt: skip

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            NAME,
            "1 for each condition of each model's status, by type, status and reason (a "
            "model's series go when its turns stop)",
            labels=LABELS,
        )
