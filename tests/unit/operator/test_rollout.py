"""decide(): the rollout and guardrail state machine, table-driven, no API."""

from __future__ import annotations

import pytest

from tests.helpers import manifest
from tideline.spec import parse
from tideline_operator.rollout import ABORT, PROMOTE, ROLLBACK_TO, Observed, analyze, decide

STEPS = [
    {"setWeight": 10},
    {"pause": "60s"},
    {"setWeight": 50},
    {"analysis": {}},
    {"setWeight": 100},
]


def _spec(**rollout):
    doc = manifest(rollout={"steps": STEPS, "analysis": {"interval": "10s", "minSamples": 500,
                                                         "maxAccuracyDrop": 0.01, "failureLimit": 2}, **rollout})  # fmt: skip
    return parse(doc).spec


def _health(now, canary=None, stable=None, versions=None, drift=None):
    return {
        "ts": now,
        "tracks": {
            "stable": stable or {"accuracy": 0.90, "labelled": 5000, "window": 2000},
            **({"canary": canary} if canary else {}),
        },  # fmt: skip
        "versions": versions or {},
        "drift": drift
        or {
            "concept": {"detected": False},
            "features": {"detected": []},
            "predictions": {"detected": False},
        },
    }


def _kinds(decision):
    return [a.kind for a in decision.actions]


def _canary_status(step=0, weight=0, **extra):
    return {"stableRevision": "old", "canaryRevision": "new", "currentStep": step, "canaryWeight": weight,
            "pauseStartedAt": None, "analysisFailures": 0, "lastAnalysisAt": None, **extra}  # fmt: skip


def test_the_first_revision_becomes_stable_and_the_model_is_healthy() -> None:
    d = decide(_spec(), None, Observed(revision="r1"), None, now=100.0)
    assert d.status["stableRevision"] == "r1" and d.status["phase"] == "Healthy"
    assert _kinds(d) == ["event"]


def test_a_new_revision_starts_a_canary_that_warm_starts_from_stable() -> None:
    d = decide(_spec(), {"stableRevision": "old"}, Observed(revision="new"), None, now=100.0)
    start = next(a for a in d.actions if a.kind == "start-canary")
    assert start.args == {"revision": "new", "warmStartFrom": "old"}
    assert (
        d.status["canaryRevision"] == "new" and d.status["canaryWeight"] == 10
    )  # first step applied
    assert d.status["phase"] == "Progressing"


def test_the_pause_holds_the_weight_until_its_time_is_up() -> None:
    st = _canary_status(step=1, weight=10, pauseStartedAt=100.0, lastAnalysisAt=155.0)
    d = decide(_spec(), st, Observed(revision="new"), None, now=159.0)
    assert d.status["currentStep"] == 1 and d.status["canaryWeight"] == 10
    d = decide(_spec(), d.status, Observed(revision="new"), None, now=161.0)
    assert d.status["canaryWeight"] == 50 and d.status["currentStep"] == 3


def test_waits_when_the_canary_has_fewer_than_min_samples_labels() -> None:
    st = _canary_status(step=3, weight=50)
    health = _health(200.0, canary={"accuracy": 0.5, "labelled": 100})
    d = decide(_spec(), st, Observed(revision="new"), health, now=200.0)
    assert d.status["currentStep"] == 3 and d.status["analysis"]["outcome"] == "inconclusive"
    assert d.status["analysisFailures"] == 0 and "100 of 500" in d.status["analysis"]["message"]


def test_a_passing_analysis_step_moves_on_and_the_last_step_promotes() -> None:
    st = _canary_status(step=3, weight=50)
    health = _health(200.0, canary={"accuracy": 0.905, "labelled": 800})
    d = decide(_spec(), st, Observed(revision="new"), health, now=200.0)
    assert d.status["stableRevision"] == "new" and d.status["canaryRevision"] is None
    assert "promote" in _kinds(d)
    removed = [a.args["revision"] for a in d.actions if a.kind == "remove-revision"]
    assert removed == ["old"] and d.status["phase"] == "Healthy"


def test_aborts_when_canary_accuracy_stays_2_points_below_stable_for_failure_limit_intervals() -> (
    None
):
    st = _canary_status(step=3, weight=50)
    bad = {"accuracy": 0.88, "labelled": 800}
    d = decide(_spec(), st, Observed(revision="new"), _health(200.0, canary=bad), now=200.0)
    assert d.status["analysisFailures"] == 1 and not d.status.get("aborted")
    d = decide(_spec(), d.status, Observed(revision="new"), _health(205.0, canary=bad), now=205.0)
    assert d.status["analysisFailures"] == 1  # not yet an interval later
    d = decide(_spec(), d.status, Observed(revision="new"), _health(211.0, canary=bad), now=211.0)
    assert d.status["aborted"]["reason"].startswith("analysis failed on accuracy")
    assert d.status["canaryWeight"] == 0 and d.status["phase"] == "Degraded"
    assert d.status["stableRevision"] == "old"
    degraded = next(c for c in d.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and "accuracy" in degraded["message"]
    # and the aborted revision is not started again while the spec still names it
    again = decide(_spec(), d.status, Observed(revision="new"), None, now=300.0)
    assert "start-canary" not in _kinds(again) and again.status["phase"] == "Degraded"


@pytest.mark.parametrize(
    ("canary", "metric"),
    [
        ({"accuracy": 0.9, "labelled": 800, "errorRate": 0.05}, "errorRate"),
        ({"accuracy": 0.9, "labelled": 800, "p95Latency": 0.050}, "p95Latency"),
    ],
    ids=[
        "fails on a canary error rate over maxErrorRate",
        "fails on a canary p95 latency over maxP95Latency",
    ],
)
def test_analysis_fails_on_the_metric_that_broke(canary, metric) -> None:
    assert analyze(_spec(), _health(100.0, canary=canary), now=100.0).metric == metric


def test_a_stale_health_summary_is_inconclusive_not_a_failure() -> None:
    res = analyze(_spec(), _health(100.0, canary={"accuracy": 0.1, "labelled": 9000}), now=200.0)
    assert res.outcome == "inconclusive"


@pytest.mark.parametrize(
    ("annotation", "expect"),
    [(PROMOTE, "promote"), (ABORT, "aborted")],
    ids=["the promote annotation promotes at once", "the abort annotation aborts at once"],
)
def test_manual_control(annotation, expect) -> None:
    d = decide(_spec(), _canary_status(step=1, weight=10), Observed(revision="new", annotations={annotation: "true"}),
               None, now=100.0)  # fmt: skip
    if expect == "promote":
        assert d.status["stableRevision"] == "new"
    else:
        assert d.status["aborted"]["reason"] == "aborted by annotation"


def test_pause_without_duration_waits_for_promote_in_phase_paused() -> None:
    spec = _spec(steps=[{"setWeight": 20}, {"pause": {}}])
    d = decide(spec, {"stableRevision": "old"}, Observed(revision="new"), None, now=1.0)
    d = decide(spec, d.status, Observed(revision="new"), None, now=10_000.0)
    assert d.status["phase"] == "Paused" and d.status["canaryWeight"] == 20


def test_guardrail_rolls_back_when_accuracy_drops_below_last_good() -> None:
    st = {"stableRevision": "r"}
    health = _health(100.0, stable={"accuracy": 0.80, "labelled": 3000, "window": 2000},
                     versions={"r:6": {"accuracy": 0.90}})  # fmt: skip
    d = decide(_spec(), st, Observed(revision="r", served=7, last_good=6), health, now=100.0)
    rb = next(a for a in d.actions if a.kind == "rollback")
    assert rb.args["from"] == 7 and rb.args["to"] == 6 and "below lastGood v6" in rb.args["reason"]
    assert d.status["lastRollback"]["to"] == 6 and d.status["lastRollback"]["at"] == 100.0
    # once served is lastGood, no second rollback
    d = decide(_spec(), d.status, Observed(revision="r", served=6, last_good=6), health, now=101.0)
    assert "rollback" not in _kinds(d)


@pytest.mark.parametrize(
    ("policy", "expect"),
    [("rollback", "rollback"), ("pause", "pause-learning"), ("alert", None)],
    ids=["concept drift rolls back under onConceptDrift rollback",
         "concept drift pauses learning under onConceptDrift pause",
         "concept drift only shows under onConceptDrift alert"],
)  # fmt: skip
def test_concept_drift_policy(policy, expect) -> None:
    spec = parse(manifest(guardrails={"onConceptDrift": policy})).spec
    health = _health(100.0, drift={"concept": {"detected": True, "method": "adwin"}})
    d = decide(
        spec,
        {"stableRevision": "r"},
        Observed(revision="r", served=3, last_good=2),
        health,
        now=100.0,
    )
    kinds = _kinds(d)
    if expect:
        assert expect in kinds
    else:
        assert "rollback" not in kinds and "pause-learning" not in kinds
    drifting = next(c for c in d.status["conditions"] if c["type"] == "Drifting")
    assert drifting["status"] == "True"


def test_rollback_to_a_version_by_annotation_happens_once() -> None:
    obs = Observed(revision="r", served=9, last_good=8, annotations={ROLLBACK_TO: "4"})
    d = decide(_spec(), {"stableRevision": "r"}, obs, None, now=50.0)
    assert [a.args["to"] for a in d.actions if a.kind == "rollback"] == [4]
    d = decide(_spec(), d.status, obs, None, now=51.0)
    assert "rollback" not in _kinds(d)


def test_reverting_the_spec_to_the_stable_revision_removes_the_canary() -> None:
    d = decide(_spec(), _canary_status(step=2, weight=10), Observed(revision="old"), None, now=10.0)
    assert d.status["canaryRevision"] is None and d.status["phase"] == "Healthy"
    assert [a.args["revision"] for a in d.actions if a.kind == "remove-revision"] == ["new"]


def test_decide_never_mutates_its_inputs() -> None:
    st = _canary_status(step=0)
    before = repr(st)
    decide(_spec(), st, Observed(revision="new"), None, now=1.0)
    assert repr(st) == before
