"""tideline_operator_model_condition: each model's conditions as its last turn left them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tideline_operator.metrics import NAME, ModelConditions


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _series(registry: CollectorRegistry) -> dict[tuple[str, ...], float]:
    [family] = [
        f for f in text_string_to_metric_families(generate_latest(registry).decode())
        if f.name == NAME
    ]  # fmt: skip
    keys = ("namespace", "model", "type", "status", "reason")
    return {tuple(s.labels[k] for k in keys): s.value for s in family.samples}


def _status(*conditions: tuple[str, str, str]) -> dict:
    return {"phase": "Healthy", "conditions": [
        {"type": t, "status": s, "reason": r, "message": "", "lastTransitionTime": "x"}
        for t, s, r in conditions]}  # fmt: skip


@pytest.fixture
def conditions() -> tuple[ModelConditions, CollectorRegistry, Clock]:
    registry, clock = CollectorRegistry(), Clock()
    return ModelConditions(stale_after=60.0, clock=clock, registry=registry), registry, clock


def test_each_condition_of_each_model_is_one_series_with_its_status_and_reason(
    conditions: tuple[ModelConditions, CollectorRegistry, Clock],
) -> None:
    model, registry, _ = conditions
    model.record("risk", "fraud", _status(("Ready", "True", "ReplicasReady"),
                                          ("LogCapacity", "False", "Insufficient")))  # fmt: skip
    model.record("ads", "ctr", _status(("ModelQuality", "True", "NoEvidence")))
    assert _series(registry) == {
        ("risk", "fraud", "Ready", "True", "ReplicasReady"): 1.0,
        ("risk", "fraud", "LogCapacity", "False", "Insufficient"): 1.0,
        ("ads", "ctr", "ModelQuality", "True", "NoEvidence"): 1.0,
    }


def test_a_condition_that_changed_reason_leaves_no_series_with_the_old_one(
    conditions: tuple[ModelConditions, CollectorRegistry, Clock],
) -> None:
    model, registry, _ = conditions
    model.record("risk", "fraud", _status(("ModelQuality", "False", "WorseThanLastGood")))
    model.record("risk", "fraud", _status(("ModelQuality", "True", "OK")))
    assert _series(registry) == {("risk", "fraud", "ModelQuality", "True", "OK"): 1.0}


def test_a_model_whose_turns_stopped_is_gone_after_stale_after_seconds(
    conditions: tuple[ModelConditions, CollectorRegistry, Clock],
) -> None:
    """A deleted model's timer stops (and a replica that lost the peering runs none)."""
    model, registry, clock = conditions
    model.record("risk", "fraud", _status(("LogCapacity", "False", "Insufficient")))
    model.record("ads", "ctr", _status(("LogCapacity", "True", "Fits")))
    clock.now = 50.0
    model.record("ads", "ctr", _status(("LogCapacity", "True", "Fits")))
    clock.now = 61.0
    assert _series(registry) == {("ads", "ctr", "LogCapacity", "True", "Fits"): 1.0}


def test_a_status_without_conditions_exports_the_family_and_no_series(
    conditions: tuple[ModelConditions, CollectorRegistry, Clock],
) -> None:
    model, registry, _ = conditions
    model.record("risk", "fraud", {})
    assert _series(registry) == {}
