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


def _compared(registry: CollectorRegistry, name: str) -> dict[tuple[str, ...], float]:
    families = text_string_to_metric_families(generate_latest(registry).decode())
    [family] = [f for f in families if f.name == name]
    keys = ("namespace", "model", "bound")
    return {tuple(s.labels[k] for k in keys): s.value for s in family.samples}


def test_the_lift_over_baseline_and_a_judged_backtest_are_series_with_their_interval(
    conditions: tuple[ModelConditions, CollectorRegistry, Clock],
) -> None:
    model, registry, clock = conditions
    lift = {"difference": 0.031, "lower": 0.012, "upper": 0.05, "samples": 900,
            "baselineVersion": 0}  # fmt: skip
    catching_up = {"done": False, "entries": 10, "of": 100, "rows": 80, "samples": 0}
    model.record("risk", "fraud", {"liftOverBaseline": lift, "backtest": catching_up})
    model.record("ads", "ctr", {"backtest": {"done": True, "samples": 5000,
                                             "difference": -0.1, "lower": -0.11,
                                             "upper": -0.09}})  # fmt: skip
    assert _compared(registry, "tideline_operator_model_lift_over_baseline") == {
        ("risk", "fraud", "estimate"): 0.031,
        ("risk", "fraud", "lower"): 0.012,
        ("risk", "fraud", "upper"): 0.05,
    }
    assert _compared(registry, "tideline_operator_model_backtest") == {
        ("ads", "ctr", "estimate"): -0.1,
        ("ads", "ctr", "lower"): -0.11,
        ("ads", "ctr", "upper"): -0.09,
    }
    clock.now = 30.0
    model.record("risk", "fraud", {})  # (cleared, e.g. at a promotion: its series go)
    assert _compared(registry, "tideline_operator_model_lift_over_baseline") == {}
    assert ("ads", "ctr", "estimate") in _compared(registry, "tideline_operator_model_backtest")
