"""decide(): the rollout and guardrail state machine, table-driven, no API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from tests.helpers import comparison, health_at, manifest
from tideline import health as h
from tideline.contracts import MAX_FAULT_MESSAGE, ModelFault, StartWord
from tideline.memory import MemoryUse
from tideline.spec import parse
from tideline_operator.rollout import (
    ABORT,
    PAUSE_LEARNING,
    PROMOTE,
    ROLLBACK_TO,
    Action,
    Epoch,
    Event,
    GiveStartWord,
    Observed,
    Promote,
    Prove,
    RestoreLastGood,
    Rollback,
    RollbackTo,
    RolloutStatus,
    StartCanary,
    StoreConfig,
    StoreSeen,
    Unpin,
    active_revisions,
    analyze,
    durable_condition,
    log_capacity_condition,
    log_status,
)
from tideline_operator.rollout import decide as typed_decide


@dataclass
class Seen:
    status: dict[str, Any]  # as the resource holds it
    actions: list[Action]


def decide(spec, status, observed, health, now) -> Seen:
    """decide() on a status as the resource holds it, through RolloutStatus both ways (as
    the reconciler does at its edges)."""
    typed = RolloutStatus.from_status(status) if status is not None else None
    d = typed_decide(spec, typed, observed, health, now)
    return Seen(d.status.to_status(), d.actions)


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


def _health(now, canary_track=None, stable=None, concept=None, served=("old", 7), served_labelled=5000,
            **versus):  # fmt: skip
    """A health summary. ``versus``: role -> (version, Comparison with served) for the
    candidates lastGood, latest, canary, baseline, constant."""
    candidates = {"served": h.Candidate(revision=served[0], version=served[1],
                                        served_labelled=served_labelled, samples=2000)}  # fmt: skip
    for role, (version, vs) in versus.items():
        rev = "new" if role == "canary" else served[0]
        candidates[role] = h.Candidate(revision=rev if version is not None else None,
                                       version=version, samples=2000, vs_served=vs)  # fmt: skip
    stable = stable or {"accuracy": 0.90, "labelled": 5000, "window": 2000}
    return health_at(now, stable=stable, canary=canary_track or None, candidates=candidates,
                     concept=concept)  # fmt: skip


def _kinds(decision):
    return [a.kind for a in decision.actions]


def _active(decision):
    """The revisions whose children the reconciler keeps for the decided status."""
    return active_revisions(RolloutStatus.from_status(decision.status))


def _canary_status(step=0, weight=0, **extra):
    # (requestsSeen: as an operator's turn leaves it, no promote or abort annotation read)
    return {"stableRevision": "old", "canaryRevision": "new", "currentStep": step, "canaryWeight": weight,
            "pauseStartedAt": None, "analysisFailures": 0, "lastAnalysisAt": None,
            "requestsSeen": {PROMOTE: "", ABORT: ""}, **extra}  # fmt: skip


def test_the_first_revision_becomes_stable_and_the_model_is_healthy() -> None:
    d = decide(_spec(), None, Observed(revision="r1"), None, now=100.0)
    assert d.status["stableRevision"] == "r1" and d.status["phase"] == "Healthy"
    assert _kinds(d) == ["event"]


def test_a_new_revision_starts_a_canary_that_warm_starts_from_stable() -> None:
    d = decide(_spec(), {"stableRevision": "old"}, Observed(revision="new"), None, now=100.0)
    start = next(a for a in d.actions if isinstance(a, StartCanary))
    assert start == StartCanary("new")
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


def test_waits_when_the_canary_has_fewer_than_min_samples_common_labels() -> None:
    st = _canary_status(step=3, weight=50)
    health = _health(200.0, canary=(2, comparison(-0.5, half=0.1, samples=100)))
    d = decide(_spec(), st, Observed(revision="new"), health, now=200.0)
    assert d.status["currentStep"] == 3 and d.status["analysis"]["outcome"] == "inconclusive"
    assert d.status["analysisFailures"] == 0 and "100 of 500" in d.status["analysis"]["message"]


def test_a_passing_analysis_step_moves_on_and_the_last_step_promotes() -> None:
    st = _canary_status(step=3, weight=50)
    health = _health(200.0, canary=(2, comparison(0.005)))
    d = decide(_spec(), st, Observed(revision="new"), health, now=200.0)
    assert d.status["stableRevision"] == "new" and d.status.get("canaryRevision") is None
    assert Promote("new", previous="old") in d.actions
    assert _active(d) == {"new"} and d.status["phase"] == "Healthy"  # the old one's children go


def test_aborts_when_the_canary_is_significantly_3_points_worse_for_failure_limit_intervals() -> (
    None
):
    st = _canary_status(step=3, weight=50)
    bad = (2, comparison(-0.03))  # [-0.04, -0.02]: surely more than maxAccuracyDrop (0.01) worse
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
    ("vs", "outcome"),
    [
        (comparison(-0.02, half=0.03), "pass"),
        (comparison(-0.015, half=0.004), "fail"),
        (comparison(0.02, half=0.01), "pass"),
    ],
    ids=[
        "a canary 2 points worse on noisy evidence passes: two slices' noise is no failure",
        "a canary surely 1.1-1.9 points worse fails (maxAccuracyDrop 0.01)",
        "a canary surely better passes",
    ],
)
def test_the_canary_is_judged_on_the_paired_comparison_not_a_raw_difference(vs, outcome) -> None:
    assert analyze(_spec(), _health(100.0, canary=(2, vs)), now=100.0).outcome == outcome


@pytest.mark.parametrize(
    ("task", "metric", "failed_on", "units"),
    [
        ("binary", None, "accuracy", "(accuracy)"),
        ("binary", "logloss", "logloss", "(relative log loss)"),
        ("regression", None, "rmse", "(relative MSE)"),
    ],
    ids=[
        "a classifier without a metric is judged on accuracy, in points",
        "by log loss the canary fails on log loss and says so in relative units",
        "a regression without a metric is judged on its squared error, relative",
    ],
)
def test_the_canary_fails_on_the_task_s_metric_in_its_units(task, metric, failed_on, units) -> None:
    from dataclasses import replace

    spec = _spec()
    spec = replace(spec, model=replace(spec.model, task=task, metric=metric))
    res = analyze(spec, _health(100.0, canary=(2, comparison(-0.2, half=0.05))), now=100.0)
    assert (res.outcome, res.metric) == ("fail", failed_on)
    assert units in res.message


@pytest.mark.parametrize(
    ("canary", "metric"),
    [
        ({"error_rate": 0.05, "requests": 400, "errors": 20}, "errorRate"),
        ({"p95_latency": 0.050}, "p95Latency"),
    ],
    ids=[
        "fails on a canary error rate over maxErrorRate",
        "fails on a canary p95 latency over maxP95Latency",
    ],
)
def test_analysis_fails_on_the_metric_that_broke(canary, metric) -> None:
    health = _health(100.0, canary=(2, comparison(0.0)))
    health.tracks["canary"] = h.TrackHealth(**canary)
    assert analyze(_spec(), health, now=100.0).metric == metric


@pytest.mark.parametrize(
    ("canary", "outcome"),
    [
        ({"requests": 200, "errors": 200, "error_rate": 1.0}, "fail"),
        ({"requests": 20, "errors": 20, "error_rate": 1.0}, "inconclusive"),
        ({"requests": 200, "errors": 1, "error_rate": 0.005}, "inconclusive"),
    ],
    ids=[
        "a canary whose servers fail every answer fails before a single label is scored",
        "twenty failed answers are too few to call a rate: the analysis waits",
        "an error rate under maxErrorRate without labels waits for the labels",
    ],
)
def test_a_canary_s_errors_are_judged_without_waiting_for_labels(canary, outcome) -> None:
    health = _health(100.0, canary=(2, None))  # no common window: nothing it answered was labelled
    health.tracks["canary"] = h.TrackHealth(**canary)
    res = analyze(_spec(), health, now=100.0)
    assert res.outcome == outcome
    assert (res.metric == "errorRate") == (outcome == "fail")


@pytest.mark.parametrize(
    ("stable", "rolled_back"),
    [
        ({"requests": 500, "errors": 100, "error_rate": 0.2}, True),
        ({"requests": 3, "errors": 1, "error_rate": 0.33}, False),
        ({"requests": 500, "errors": 2, "error_rate": 0.004}, False),
    ],
    ids=[
        "stable's servers failing a fifth of 500 recent answers roll back to lastGood",
        "one error in three answers is no rate: nothing happens",
        "an error rate under maxErrorRate is no breach",
    ],
)
def test_stable_s_error_rate_rolls_back_only_on_enough_answers(stable, rolled_back) -> None:
    health = _health(100.0, stable={"accuracy": 0.9, **stable})
    d = decide(_spec(), {"stableRevision": "old", "lastGoodVersion": 5},
               Observed(revision="old", served=7, last_good=5, latest=7), health, now=100.0)  # fmt: skip
    assert ("rollback" in _kinds(d)) == rolled_back


def test_a_stale_health_summary_is_inconclusive_not_a_failure() -> None:
    res = analyze(_spec(), _health(100.0, canary=(2, comparison(-0.5))), now=200.0)
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


def _actions(d, kind):
    return [a for a in d.actions if isinstance(a, kind)]


def test_guardrail_rolls_back_when_last_good_is_surely_better_by_more_than_max_accuracy_drop() -> (
    None
):
    st = {"stableRevision": "old"}
    health = _health(100.0, lastGood=(6, comparison(0.20, half=0.03)))
    d = decide(_spec(), st, Observed(revision="old", served=7, last_good=6), health, now=100.0)
    (rb,) = _actions(d, RollbackTo)
    assert rb.pin.from_ == 7 and rb.to == 6 and "lastGood v6 beats served v7" in rb.pin.reason
    assert d.status["lastRollback"]["to"] == 6 and d.status["lastRollback"]["at"] == 100.0
    # once served is lastGood, no second rollback
    d = decide(
        _spec(), d.status, Observed(revision="old", served=6, last_good=6), health, now=101.0
    )
    assert "rollback" not in _kinds(d)


@pytest.mark.parametrize(
    ("fair", "whole", "rolled_back"),
    [
        (comparison(0.0, half=1.0, samples=0), comparison(0.20, half=0.03), True),
        (comparison(0.20, half=0.03), comparison(0.0, half=0.02), True),
        (comparison(0.0, half=0.02), comparison(0.005, half=0.02), False),
    ],
    ids=[
        "a version just served has no label it has not learned: its whole window decides",
        "better on the labels neither learned, though not on served's training data",
        "neither says lastGood is better: no rollback",
    ],
)
def test_a_rollback_reads_served_on_its_training_data_too(fair, whole, rolled_back) -> None:
    health = _health(100.0, lastGood=(6, fair))
    health.quality.candidates["lastGood"].vs_served_whole = whole
    d = decide(_spec(), {"stableRevision": "old"}, Observed(revision="old", served=7, last_good=6),
               health, now=100.0)  # fmt: skip
    assert bool(_actions(d, RollbackTo)) == rolled_back


@pytest.mark.parametrize(
    ("vs", "quality"),
    [
        (comparison(0.04, half=0.01), ("False", "WorseThanLastGood")),
        (comparison(0.08, half=0.1), ("True", "OK")),
        (comparison(-0.02, half=0.01), ("True", "OK")),
    ],
    ids=[
        "lastGood surely better, but by less than maxAccuracyDrop: no rollback, quality says so",
        "lastGood 8 points better on too few samples to be sure: no rollback",
        "served surely better than lastGood: nothing to do",
    ],
)
def test_no_rollback_without_evidence_that_it_helps(vs, quality) -> None:
    health = _health(100.0, lastGood=(6, vs))
    d = decide(_spec(), {"stableRevision": "old"}, Observed(revision="old", served=7, last_good=6),
               health, now=100.0)  # fmt: skip
    assert "rollback" not in _kinds(d)
    cond = next(c for c in d.status["conditions"] if c["type"] == "ModelQuality")
    assert (cond["status"], cond["reason"]) == quality
    assert (d.status["phase"] == "Degraded") == (quality[0] == "False")


def test_a_cold_model_never_rolls_back_to_v0_and_says_it_has_no_proven_version() -> None:
    # pointers as a cold model's publish leaves them: served and latest, no lastGood
    health = _health(
        100.0,
        constant=(None, comparison(0.1)),
        stable={"accuracy": 0.4, "error_rate": 0.5, "requests": 1000},
    )
    d = decide(_spec(), {"stableRevision": "old"}, Observed(revision="old", served=3, latest=3),
               health, now=100.0)  # fmt: skip
    assert "rollback" not in _kinds(d) and "prove" not in _kinds(d)
    cond = next(c for c in d.status["conditions"] if c["type"] == "ModelQuality")
    assert cond["reason"] == "NoProvenVersion"


@pytest.mark.parametrize(
    ("served", "labelled", "versus", "proven"),
    [
        (7, 5000, {"lastGood": (5, comparison(-0.01, half=0.02))}, 7),
        (7, 300, {"lastGood": (5, comparison(-0.01, half=0.02))}, None),
        (7, 5000, {"lastGood": (5, comparison(0.03, half=0.01))}, None),
        (3, 5000, {"constant": (None, comparison(-0.2, half=0.02))}, 3),
        (3, 5000, {"constant": (None, comparison(-0.01, half=0.02))}, None),
        (0, 5000, {"constant": (None, comparison(-0.2, half=0.02))}, None),
        (0, 5000, {"constant": (None, comparison(-0.2, half=0.02)), "baseline": (0, None)}, 0),
    ],
    ids=[
        "served on 5000 labels and not worse than lastGood: proven",
        "served on 300 of minSamples 500 labels: not yet",
        "surely worse than lastGood: never proven",
        "the first proof of a cold model: surely better than the best constant",
        "a cold model's version no better than a constant is not proven",
        "a cold model's v0 is never proven",
        "a warm-start baseline's v0 may be",
    ],
)
def test_last_good_means_proven_on_labels(served, labelled, versus, proven) -> None:
    last_good = versus["lastGood"][0] if "lastGood" in versus else None
    health = _health(100.0, served=("old", served), served_labelled=labelled, **versus)
    obs = Observed(revision="old", served=served, latest=served, last_good=last_good)
    d = decide(_spec(), {"stableRevision": "old"}, obs, health, now=100.0)
    got = [a.version for a in _actions(d, Prove)]
    assert got == ([proven] if proven is not None else [])
    if proven is not None:
        assert d.status["lastGoodVersion"] == proven
        assert ("Proven" in [a.reason for a in _actions(d, Event)]) == (last_good is None)


def _with_recent(health, version, labelled, status_pinned=False, **versus):
    """``health`` with the monitor's ``recent`` candidate: ``version`` served on ``labelled``
    labels of its own answers, compared with other roles (``versus``: role -> Comparison)."""
    health.quality.candidates["recent"] = h.Candidate(
        revision="old", version=version, samples=2000, served_labelled=labelled, versus=versus,
        vs_served=comparison(0.0))  # fmt: skip
    return health


@pytest.mark.parametrize(
    ("status", "served", "recent", "last_good", "proven"),
    [
        ({}, (12, 100), (10, 600, {"lastGood": comparison(-0.01, half=0.02)}), 6, 10),
        ({}, (12, 100), (10, 600, {"lastGood": comparison(-0.05, half=0.02)}), 6, None),
        ({}, (12, 100), (10, 300, {"lastGood": comparison(0.0, half=0.02)}), 6, None),
        ({}, (12, 100), (5, 600, {"lastGood": comparison(0.0, half=0.02)}), 6, None),
        ({}, (12, 100), (10, 600, {"lastGood": comparison(0.0, half=0.02, samples=300)}), 6, None),
        ({}, (12, 5000), (10, 600, {"lastGood": comparison(0.0, half=0.02)}), 6, 12),
        ({}, (12, 100), (10, 600, {"constant": comparison(0.2, half=0.02)}), None, 10),
        ({}, (12, 100), (10, 600, {"constant": comparison(0.01, half=0.02)}), None, None),
        ({}, (3, 100), (0, 600, {"constant": comparison(0.2, half=0.02)}), None, None),
        ({"lastRollback": {"at": 50.0, "from": 8, "to": 6, "latest": 8}}, (12, 100),
         (7, 600, {"lastGood": comparison(0.0, half=0.02)}), 6, None),
        ({"pinned": True}, (6, 100), (10, 600, {"lastGood": comparison(0.0, half=0.02)}), 6, None),
    ],
    ids=[
        "a version replaced before its labels came, served on minSamples of them and not worse "
        "than lastGood on the same samples, is proven though no longer served",
        "the recent version surely worse than lastGood is not proven",
        "the recent version served on fewer than minSamples labels of its own is not proven yet",
        "lastGood moves forward only: a recent version older than lastGood is not proven",
        "fewer than minSamples common samples against lastGood: not proven yet",
        "the served version and the recent one both proven: lastGood is the newer, served",
        "the first proof of a replaced version: surely better than the best constant",
        "a replaced version no better than a constant is no first proof",
        "a cold model's v0 is never proven, served or replaced",
        "a version the last rollback undid (learned between the version rolled back to and the "
        "newest then) is never proven",
        "nothing is proven while a rollback pins served",
    ],
)  # fmt: skip
def test_a_replaced_version_is_proven_on_the_labels_of_its_own_answers(
    status, served, recent, last_good, proven
) -> None:
    version, labelled, versus = recent
    extra = {"lastGood": (last_good, comparison(0.0, half=0.02))} if last_good is not None else {}
    if "constant" in versus:
        extra["constant"] = (None, comparison(-0.2, half=0.02))
    health = _health(100.0, served=("old", served[0]), served_labelled=served[1], **extra)
    _with_recent(health, version, labelled, **versus)
    st = {"stableRevision": "old", **status}
    obs = Observed(revision="old", served=served[0], latest=12, last_good=last_good,
                   pinned=status.get("pinned", False))  # fmt: skip
    d = decide(_spec(), st, obs, health, now=100.0)
    got = [a.version for a in _actions(d, Prove)]
    assert got == ([proven] if proven is not None else [])
    if proven is not None:
        assert d.status["lastGoodVersion"] == proven
        assert ("Proven" in [a.reason for a in _actions(d, Event)]) == (last_good is None)


def _concept(ts=99.0):
    return h.ConceptDrift(detected=True, method="adwin",
                          last=h.ConceptEvent(ts=ts, method="adwin", revision="old", version=7))  # fmt: skip


@pytest.mark.parametrize(
    ("policy", "expect"),
    [("adapt", "adapt"), ("rollback", "adapt"), ("pause", "pause-learning"), ("alert", None)],
    ids=["concept drift makes the learner adapt under onConceptDrift adapt (the default)",
         "concept drift adapts under onConceptDrift rollback when no proven version is better",
         "concept drift pauses learning under onConceptDrift pause",
         "concept drift only shows under onConceptDrift alert"],
)  # fmt: skip
def test_concept_drift_policy_reacts_once_per_episode_and_never_rolls_back_alone(
    policy, expect
) -> None:
    spec = parse(manifest(guardrails={"onConceptDrift": policy})).spec
    # every version is as wrong as the next: lastGood is no better on the same samples
    health = _health(100.0, concept=_concept(), lastGood=(6, comparison(0.0, half=0.02)))
    obs = Observed(revision="old", served=7, last_good=6)
    d = decide(spec, {"stableRevision": "old"}, obs, health, now=100.0)
    kinds = _kinds(d)
    assert "rollback" not in kinds
    if expect:
        assert expect in kinds
    else:
        assert "adapt" not in kinds and "pause-learning" not in kinds
    events = [a.reason for a in _actions(d, Event)]
    assert events == ["ConceptDrift"]
    drifting = next(c for c in d.status["conditions"] if c["type"] == "Drifting")
    assert drifting["status"] == "True"
    again = decide(
        spec,
        d.status,
        obs,
        _health(101.0, concept=_concept(), lastGood=(6, comparison(0.0))),
        now=101.0,
    )
    assert "adapt" not in _kinds(again) and "event" not in _kinds(again)


def test_under_on_concept_drift_rollback_any_sure_gain_of_a_proven_version_rolls_back() -> None:
    spec = parse(manifest(guardrails={"onConceptDrift": "rollback"})).spec
    health = _health(100.0, concept=_concept(), lastGood=(6, comparison(0.02, half=0.01)))
    d = decide(spec, {"stableRevision": "old"}, Observed(revision="old", served=7, last_good=6),
               health, now=100.0)  # fmt: skip
    assert [a.to for a in _actions(d, RollbackTo)] == [6]
    adapt = parse(manifest()).spec  # adapt: the same 2 points are under maxAccuracyDrop
    d = decide(adapt, {"stableRevision": "old"}, Observed(revision="old", served=7, last_good=6),
               health, now=100.0)  # fmt: skip
    assert "rollback" not in _kinds(d)


_PIN_STATUS = {"stableRevision": "old", "pinned": True, "servedVersion": 6, "lastGoodVersion": 6,
               "lastRollback": {"at": 50.0, "from": 8, "to": 6, "latest": 8}}  # fmt: skip
_GOOD = (comparison(-0.005, half=0.01), h.PinEvidence(at=50.0, version=6, samples=2000,
                                               error_before=0.10, error_since=0.11))  # fmt: skip


_FEW = comparison(-0.005, half=0.01, samples=300)  # (a new version's few labels it has not learned)


def _pinned_health(now, since_pin, pin, vs_served=None):
    """A summary while v6 is pinned: v9, learned since, against it on the labels since the
    pin (``since_pin``), and how those labels agree with v6 (``pin``)."""
    health = _health(now, served=("old", 6), latest=(9, vs_served or comparison(0.0)))
    assert health.quality is not None
    health.quality.candidates["latest"].since_pin = since_pin
    health.quality.pin = pin
    return health


@pytest.mark.parametrize(
    ("turns", "unpinned_at"),
    [
        ([(100.0, *_GOOD), (110.0, *_GOOD), (120.0, *_GOOD)], 120.0),
        ([(100.0, comparison(-0.02, half=0.06), _GOOD[1]), (120.0, comparison(-0.02, half=0.06), _GOOD[1])],
         None),
        ([(100.0, comparison(-0.005, half=0.01, samples=300), _GOOD[1]),
          (120.0, comparison(-0.005, half=0.01, samples=300), _GOOD[1])], None),
        ([(100.0, comparison(0.10, half=0.01), h.PinEvidence(at=50.0, version=6, samples=2000,
                                                       error_before=0.10, error_since=0.30)),
          (120.0, comparison(0.10, half=0.01), h.PinEvidence(at=50.0, version=6, samples=2000,
                                                       error_before=0.10, error_since=0.30))],
         None),
        ([(100.0, comparison(-0.3, half=0.02), _GOOD[1]), (120.0, comparison(-0.3, half=0.02), _GOOD[1])], None),
        ([(100.0, *_GOOD), (110.0, comparison(-0.2, half=0.02), _GOOD[1]), (120.0, *_GOOD),
          (130.0, *_GOOD), (140.0, *_GOOD)], 140.0),
        ([(100.0, *_GOOD), (110.0, _FEW, _GOOD[1]), (120.0, *_GOOD)], 120.0),
        ([(100.0, *_GOOD), (120.0, _FEW, _GOOD[1])], None),
        ([(100.0, *_GOOD), (110.0, comparison(-0.3, half=0.05, samples=300), _GOOD[1]),
          (120.0, *_GOOD), (130.0, *_GOOD), (140.0, *_GOOD)], 140.0),
        ([(100.0, _GOOD[0], None), (120.0, _GOOD[0], None)], None),
        ([(100.0, None, None)], 100.0),
        ([(55.0, None, None)], None),
    ],
    ids=[
        "v9 surely within maxAccuracyDrop of the pinned v6 on the labels since the pin, which "
        "agree with v6 as before it, for two analysis intervals in a row: served again",
        "v9 not significantly worse but not surely within the margin either (absence of "
        "evidence): stays unserved",
        "fewer than minSamples labels since the pin: stays unserved",
        "labels since the pin disagree with the pinned v6 far more than before (they lie, or the "
        "world changed): v9 scoring better on them proves nothing and stays unserved",
        "v9 surely worse (it learned a poisoning that goes on): stays unserved",
        "a newer version worse in between (the poisoning goes on) starts the hold again: served "
        "two intervals after the evidence holds again, not at once",
        "a newer version with fewer than minSamples labels it has not learned (scored out of "
        "sample, one just published has few) neither breaks the hold nor ends it",
        "... nor is served on them when the hold's time is up",
        "a newer version surely worse on its few labels does break it",
        "a monitor that says nothing of the labels since the pin while it compares since it: "
        "stays unserved",
        "a monitor older than the pin's evidence is judged by the rule it was written for: "
        "not significantly worse on the common window, an interval after the rollback",
        "... and not within an interval of the rollback",
    ],
)  # fmt: skip
def test_unpin_on_evidence(turns, unpinned_at) -> None:
    status, got = _PIN_STATUS, None
    for now, since_pin, pin in turns:
        health = _pinned_health(now, since_pin, pin, vs_served=comparison(-0.005, half=0.01))
        d = decide(_spec(), status, Observed(revision="old", served=6, last_good=6, latest=9),
                   health, now=now)  # fmt: skip
        status = d.status
        if _actions(d, Unpin):
            assert [a.version for a in _actions(d, Unpin)] == [9]
            got = now
            break
    assert got == unpinned_at


def test_a_rollback_annotation_that_is_no_ascii_number_is_ignored() -> None:
    obs = Observed(revision="r", served=9, last_good=8, annotations={ROLLBACK_TO: "\u00b2"})
    d = decide(_spec(), {"stableRevision": "r"}, obs, None, now=50.0)
    assert "rollback" not in _kinds(d)


def test_rollback_to_a_version_by_annotation_happens_once() -> None:
    obs = Observed(revision="r", served=9, last_good=8, annotations={ROLLBACK_TO: "4"})
    d = decide(_spec(), {"stableRevision": "r"}, obs, None, now=50.0)
    assert [a.to for a in _actions(d, RollbackTo)] == [4]
    d = decide(_spec(), d.status, obs, None, now=51.0)
    assert "rollback" not in _kinds(d)


def test_reverting_the_spec_to_the_stable_revision_removes_the_canary() -> None:
    d = decide(_spec(), _canary_status(step=2, weight=10), Observed(revision="old"), None, now=10.0)
    assert d.status.get("canaryRevision") is None and d.status["phase"] == "Healthy"
    assert _active(d) == {"old"}  # the canary's children go


def test_decide_never_mutates_its_inputs() -> None:
    st = _canary_status(step=0)
    before = repr(st)
    decide(_spec(), st, Observed(revision="new"), None, now=1.0)
    assert repr(st) == before


def _measured(limit: float, fits: bool) -> h.LogCapacity:
    """3,000 predictions/s for 33 minutes at 60 bytes each: 356 MB of log."""
    return h.LogCapacity(rate=3000.0, window=1980.0, bytes_per_prediction=60.0, need=356.4e6,
                         held=1e6, used=50e6, limit=limit, fits=fits)  # fmt: skip


@pytest.mark.parametrize(
    ("cap", "expected"),
    [
        (None, (True, "NotMeasured")),
        (h.LogCapacity(rate=0.0, window=1980.0), (True, "NotMeasured")),
        (_measured(1e9, True), (True, "Fits")),
        (_measured(256e6, False), (False, "Insufficient")),
    ],
    ids=[
        "no summary from the monitor: no estimate, not a failure",
        "nothing logged yet: not measured",
        "3000/s for 33 min at 60 B fits in 1 GB",
        "the same in 256 MB does not, and the condition says what to change",
    ],
)
def test_the_log_capacity_condition_says_the_formula_with_its_numbers(cap, expected) -> None:
    health = h.Health(ts=0.0, log=cap) if cap is not None else None
    ok, reason, message = log_capacity_condition(health)
    assert (ok, reason) == expected
    if cap is not None and cap.need:
        assert message.startswith("3,000 predictions/s x 1,980 s x 60 B = 339.9 MiB of log")
        assert ("raise maxmemory" in message) == (not ok)
        status = log_status(health)
        assert status is not None
        assert (status["needBytes"], status["bytesPerPrediction"]) == (356400000, 60.0)


def test_the_status_says_how_far_behind_the_scored_predictions_are_with_a_label_default() -> None:
    health = msgspec.structs.replace(
        _health(100.0), maturity=h.Maturity(after=600.0, to=-530.2, lag_seconds=630.2, held=41)
    )
    doc = manifest(learning={"labelDefault": {"value": 0, "after": "10m"}})
    d = decide(parse(doc).spec, _canary_status(), Observed(revision="new"), health, now=100.0)
    assert d.status["maturity"] == {"afterSeconds": 600.0, "lagSeconds": 630.2, "heldRows": 41,
                                    "earlyRows": 0}  # fmt: skip
    # a model with no default has no maturity to show (one left from before is dropped)
    before = {**_canary_status(), "maturity": d.status["maturity"]}
    d = decide(_spec(), before, Observed(revision="new"), health, now=100.0)
    assert "maturity" not in d.status


def test_a_deprecated_field_is_a_condition_naming_it_and_its_new_name() -> None:
    doc = manifest(learning={"checkpointEvery": 700})
    d = decide(parse(doc).spec, None, Observed(revision="r1"), None, now=100.0)
    [c] = [c for c in d.status["conditions"] if c["type"] == "Deprecated"]
    assert (c["status"], c["reason"]) == ("True", "DeprecatedField")
    assert (
        c["message"]
        == "spec.learning.checkpointEvery is deprecated: write spec.learning.publishEvery"
    )
    d = decide(_spec(), None, Observed(revision="r1"), None, now=100.0)
    assert "Deprecated" not in [c["type"] for c in d.status["conditions"]]


def test_the_typed_status_reads_and_writes_the_resource_s_status_unchanged() -> None:
    d = decide(_spec(), _canary_status(step=1, weight=10), Observed(revision="new"), None, now=5.0)
    st = RolloutStatus.from_status({**d.status, "kopf": {"progress": {}}})  # kopf's: not ours
    assert st.to_status() == d.status and st.stable == "old"
    assert st.conditions[0].type == "Ready" and st.canaryWeight == 10
    rb = RolloutStatus.from_status({"lastRollback": {"at": 1, "revision": "r", "from": 7, "to": 6,
                                                     "reason": "x", "latest": 7}})  # fmt: skip
    assert (rb.lastRollback.from_, rb.lastRollback.to) == (7, 6)  # type: ignore[union-attr]
    assert rb.to_status()["lastRollback"]["from"] == 7
    with pytest.raises(ValueError, match="no stable revision"):
        _ = RolloutStatus().stable
    # a field edited by hand into what it cannot be: left out (the turn writes it again)
    odd = RolloutStatus.from_status({"stableRevision": "a", "canaryWeight": "lots", "aborted": 3,
                                     "lastRollback": {"at": 5}})  # fmt: skip
    assert (odd.stable, odd.canaryWeight, odd.aborted) == ("a", None, None)
    assert odd.lastRollback is not None and odd.lastRollback.at == 5.0


# --------------------------------------------------------------------------- surviving a crash
PIN = Rollback(at=50.0, revision="old", from_=8, to=6, reason="lastGood v6 beats served v8",
               latest=8)  # fmt: skip
_BEFORE_ROLLBACK = {"stableRevision": "old", "servedVersion": 8, "lastGoodVersion": 6,
                    "latestVersion": 8}  # fmt: skip
_PINNED = {**_BEFORE_ROLLBACK, "servedVersion": 6, "pinned": True,
           "lastRollback": {"at": 50.0, "revision": "old", "from": 8, "to": 6,
                            "reason": "lastGood v6 beats served v8", "latest": 8}}  # fmt: skip


@pytest.mark.parametrize(
    ("status", "observed", "pinned", "last_rollback", "manual"),
    [
        (_BEFORE_ROLLBACK,
         Observed(revision="old", served=6, last_good=6, latest=8, pinned=True, pin=PIN),
         True, PIN, None),
        (_BEFORE_ROLLBACK,
         Observed(revision="old", served=6, last_good=6, latest=8, pinned=True),
         True, Rollback(at=100.0, revision="old", to=6, reason="pinned in the store, without a rollback's details",
                        latest=8), None),
        (_BEFORE_ROLLBACK,
         Observed(revision="old", served=6, last_good=6, latest=8, pinned=True,
                  pin=Rollback(50.0, "old", 8, 6, "rolled back by annotation", 8),
                  annotations={ROLLBACK_TO: "6"}),
         True, Rollback(50.0, "old", 8, 6, "rolled back by annotation", 8), 6),
        (_PINNED,
         Observed(revision="old", served=9, last_good=6, latest=9, pinned=False),
         False, _PINNED["lastRollback"], None),
    ],
    ids=[
        "a pin in the store the status lacks (the rolling-back turn's status was never written) "
        "is adopted with its details: no second rollback, no second RolledBack event",
        "a pin without its details (put back by a server after a store reset) is adopted with "
        "what the pointers say",
        "a pin by the rollback-to annotation is adopted with the annotation: it does not roll "
        "back again",
        "an unpin the status lacks (the unpinning turn's status was never written) is adopted: "
        "no second unpin, no second Unpinned event",
    ],
)  # fmt: skip
def test_a_restarted_loop_adopts_the_pin_it_finds_in_the_store(
    status, observed, pinned, last_rollback, manual
) -> None:
    # v9, learned since, not worse than the pinned v6: what the unpinning turn acted on
    health = _health(100.0, served=("old", 6), latest=(9, comparison(0.0)))
    d = decide(_spec(), status, observed, health, now=100.0)
    assert _kinds(d) == [], "no rollback, no unpin, no event"
    assert d.status.get("pinned", False) is pinned
    expected = (
        last_rollback if isinstance(last_rollback, dict) else msgspec.to_builtins(last_rollback)
    )
    assert d.status["lastRollback"] == expected
    assert d.status.get("manualRollbackTo") == manual


def test_an_adopted_pin_unpins_on_evidence_as_the_first_loop_would() -> None:
    adopted = decide(_spec(), _BEFORE_ROLLBACK, Observed(revision="old", served=6, last_good=6,
                     latest=8, pinned=True, pin=PIN), None, now=100.0).status  # fmt: skip
    obs = Observed(revision="old", served=6, last_good=6, latest=9, pinned=True, pin=PIN)
    d = decide(_spec(), adopted, obs, _pinned_health(110.0, *_GOOD), now=110.0)
    assert _kinds(d) == [] and d.status["lastRollback"]["recovering"] == 110.0
    d = decide(_spec(), d.status, obs, _pinned_health(130.0, *_GOOD), now=130.0)
    assert [a.version for a in _actions(d, Unpin)] == [9]
    assert [a.reason for a in _actions(d, Event)] == ["Unpinned"]


@pytest.mark.parametrize(
    ("routed_stable", "promoted_again"),
    [("new", False), ("old", True)],
    ids=[
        "the routing hash names the canary stable (the promoting turn's status was never "
        "written): the promotion is done, no second promote, no second Promoted event",
        "the routing hash names the old stable: the canary is promoted as ever",
    ],
)
def test_a_promotion_a_crashed_turn_applied_is_recognised(routed_stable, promoted_again) -> None:
    st = _canary_status(step=3, weight=50, canaryWarmStart="old")
    health = _health(200.0, canary=(2, comparison(0.005)))
    obs = Observed(revision="new", routed_stable=routed_stable)
    d = decide(_spec(), st, obs, health, now=200.0)
    assert d.status["stableRevision"] == "new" and d.status.get("canaryRevision") is None
    assert d.status["stableWarmStart"] == "old", "the promoted learner keeps its arguments"
    assert ("promote" in _kinds(d)) is promoted_again
    events = [a.reason for a in _actions(d, Event)]
    assert events == (["Promoted"] if promoted_again else [])


# --------------------------------------------------------------------------- a store reset
_HELD = {"stableRevision": "old", "storeEpoch": "e1", "latestVersion": 20, "servedVersion": 18,
         "lastGoodVersion": 6}  # fmt: skip


def _store(epoch="e1", kept=False, empty=("old",), words=None, restores=0) -> StoreSeen:
    return StoreSeen(epoch=epoch, kept=kept, empty=frozenset(empty), restores=restores,
                     words=words if words is not None else {"old": None})  # fmt: skip


@pytest.mark.parametrize(
    ("observed", "events", "condition", "phase", "message"),
    [
        (Observed(revision="old", store=_store(epoch=None)),
         ["StoreReset"], ("True", "StoreReset"), "Degraded",
         "the store lost keys (the epoch token is gone): latest v20 -> none, served v18 -> none, "
         "lastGood v6 gone with its version: a version must be proven again"),
        (Observed(revision="old", store=_store(epoch="e2")),
         ["StoreReset"], ("True", "StoreReset"), "Degraded", "(the epoch token changed)"),
        (Observed(revision="old", store=_store()),
         ["StoreReset"], ("True", "StoreReset"), "Degraded", "(latest went back from v20 to none)"),
        (Observed(revision="old", served=3, latest=3, store=_store(empty=())),
         ["StoreReset"], ("True", "StoreReset"), "Degraded", "latest v20 -> v3, served v18 -> v3"),
        (Observed(revision="old", served=18, latest=20, store=_store(kept=True, empty=())),
         ["StoreReset", "StoreRecovered"], ("False", "Recovered"), "Healthy",
         "(lastGood v6 vanished): lastGood v6 restored from the status"),
        (Observed(revision="old", served=21, latest=21, last_good=6, store=_store(empty=())),
         [], None, "Healthy", None),
    ],
    ids=[
        "the epoch token gone: one StoreReset event, Degraded, the condition says what was lost",
        "another epoch token (another store's, or a replaced one): the same",
        "the pointers hash evicted alone (the token is in place): latest going back is the fault",
        "a learner that numbered again from v0 (latest v3 after v20): the fault",
        "lastGood vanished, its version still stored: restored from the status without a Proven "
        "event, and as a version is served the store has recovered at once",
        "latest going forward with lastGood in place is no reset",
    ],
)  # fmt: skip
def test_a_store_that_lost_keys_is_noticed(observed, events, condition, phase, message) -> None:
    d = decide(_spec(), _HELD, observed, None, now=100.0)
    assert [a.reason for a in _actions(d, Event)] == events
    assert d.status["phase"] == phase
    got = next((c for c in d.status["conditions"] if c["type"] == "StoreReset"), None)
    assert (got["status"], got["reason"]) == condition if condition else got is None
    if message:
        assert message in d.status["storeReset"]["message"]
        degraded = next(c for c in d.status["conditions"] if c["type"] == "Degraded")
        assert (degraded["reason"] == "StoreReset") == (phase == "Degraded")
        # `kubectl wait --for=condition=Degraded` fires when the phase says so
        assert degraded["status"] == ("True" if phase == "Degraded" else "False")
    restored = [a.version for a in _actions(d, RestoreLastGood)]
    assert restored == ([6] if observed.store.kept and observed.last_good is None else [])
    assert "prove" not in _kinds(d)


@pytest.mark.parametrize(
    ("held", "restores", "events"),
    [
        (2, 3, ["StoreReset", "StoreRecovered"]),
        (3, 3, []),
        (None, 3, []),
    ],
    ids=[
        "a loss repaired before the operator looked (a server put the pointers back) is a reset",
        "the restores count where the status left it: nothing happened",
        "a count the status has not read yet (an operator before this one) is taken, no reset",
    ],
)
def test_a_loss_repaired_before_the_operator_looked_is_still_reported(held, restores, events):
    status = {**_HELD, "storeRestores": held}
    obs = Observed(revision="old", served=18, latest=20, last_good=6,
                   store=_store(empty=(), restores=restores))  # fmt: skip
    d = decide(_spec(), status, obs, None, now=100.0)
    assert [a.reason for a in _actions(d, Event)] == events
    assert d.status["storeRestores"] == restores
    if events:
        assert d.status["storeReset"]["message"] == (
            "the store lost keys (a server or the learner put back what the store had lost): "
            "every pointer was back before the operator looked"
        )


@pytest.mark.parametrize(
    ("status", "epoch", "written", "kept"),
    [
        ({"stableRevision": "old"}, None, True, None),
        ({"stableRevision": "old"}, "e7", False, "e7"),
        ({"stableRevision": "old", "storeEpoch": "e7"}, "e7", False, "e7"),
    ],
    ids=[
        "no token anywhere: one is written (SET NX) and kept in the status",
        "a token in the store the status lacks (an operator before this one) is kept, no reset",
        "the same token in both: nothing to do",
    ],
)
def test_the_epoch_token_is_written_once_and_kept_in_the_status(status, epoch, written, kept):
    obs = Observed(revision="old", store=_store(epoch=epoch, empty=(), words={"old": None}))
    d = decide(_spec(), status, obs, None, now=100.0)
    tokens = [a.token for a in _actions(d, Epoch)]
    assert len(tokens) == int(written) and "storeReset" not in d.status
    assert d.status["storeEpoch"] == (tokens[0] if written else kept)


def test_a_store_reset_is_reported_once_and_recovers_once_served_and_proven_again() -> None:
    spec = _spec()
    d = decide(spec, _HELD, Observed(revision="old", store=_store(epoch=None)), None, now=100.0)
    token = d.status["storeEpoch"]
    assert token != "e1" and [a.token for a in _actions(d, Epoch)] == [token]
    # still empty: no second event, the learner's word stays as written
    empty = Observed(revision="old", store=_store(epoch=token, words={"old": StartWord(20)}))
    d = decide(spec, d.status, empty, None, now=101.0)
    assert _kinds(d) == [] and d.status["phase"] == "Degraded"
    # a server put back v18 (its held version); v6 is gone with its blob: still Degraded
    back = Observed(revision="old", served=18, latest=21, store=_store(epoch=token, empty=()))
    d = decide(spec, d.status, back, None, now=102.0)
    assert d.status["phase"] == "Degraded" and "restore-last-good" not in _kinds(d)
    assert "prove" not in _kinds(d) and d.status["latestVersion"] == 21
    # v18 proven on labels again: the reset is over, and the proof is not "the first"
    health = _health(103.0, served=("old", 18), constant=(None, comparison(-0.2, half=0.02)))
    d = decide(spec, d.status, back, health, now=103.0)
    assert [a.version for a in _actions(d, Prove)] == [18]
    events = {a.reason: a.message for a in _actions(d, Event)}
    assert set(events) == {"Proven", "StoreRecovered"}
    assert "again after the store reset" in events["Proven"]
    cond = next(c for c in d.status["conditions"] if c["type"] == "StoreReset")
    assert (cond["status"], cond["reason"]) == ("False", "Recovered")
    assert d.status["phase"] == "Healthy" and d.status["storeReset"]["recoveredAt"] == 103.0


@pytest.mark.parametrize(
    ("status", "observed", "words"),
    [
        (None, Observed(revision="r1", store=StoreSeen(empty=frozenset({"r1"}), words={"r1": None})),
         {"r1": StartWord()}),
        ({**_HELD, "storeEpoch": None},
         Observed(revision="old", store=_store(epoch=None)), {"old": StartWord(after=20)}),
        ({**_HELD, "storeReset": {"at": 1.0, "latest": 20}},
         Observed(revision="old", store=_store(words={"old": StartWord(after=20)})), {}),
        ({"stableRevision": "old", "latestVersion": 20},
         Observed(revision="new", served=20, latest=20,
                  store=_store(empty=(), words={"old": None})),
         {"new": StartWord()}),
        ({"stableRevision": "old", "latestVersion": 21},
         Observed(revision="old", served=21, latest=21,
                  store=_store(empty=(), words={"old": StartWord(after=20)})),
         {"old": None}),
    ],
    ids=[
        "a first deploy's learner is told to start fresh",
        "after a store reset the stable learner numbers on after the status's latest",
        "a word already given is not written again",
        "a canary started this turn starts fresh (stable has pointers: no word)",
        "a revision with pointers again has its word cleared: no stale word after an eviction",
    ],
)  # fmt: skip
def test_learners_with_nothing_stored_get_their_start_word(status, observed, words) -> None:
    d = decide(_spec(), status, observed, None, now=100.0)
    assert {a.revision: a.word for a in _actions(d, GiveStartWord)} == words


# --------------------------------------------------------------------------- the store's settings
@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (StoreConfig(policy="noeviction", appendonly=True), (True, "Durable")),
        (StoreConfig(policy="noeviction", save="3600 1 300 100"), (True, "Durable")),
        (StoreConfig(policy="allkeys-lru", appendonly=True), (False, "EvictionPolicy")),
        (StoreConfig(policy="volatile-lru"), (False, "EvictionPolicy")),
        (StoreConfig(policy="noeviction"), (False, "NotPersistent")),
        (StoreConfig(readable=False), (None, "ConfigNotReadable")),
    ],
    ids=[
        "noeviction with AOF is durable",
        "noeviction with RDB save points is durable",
        "allkeys-lru may evict versions, pointers and groups: a warning",
        "any policy but noeviction is",
        "no AOF and no save points: a restart loses everything",
        "CONFIG refused (a managed Redis): Unknown, not an error",
    ],
)
def test_the_store_durable_condition_warns_of_eviction_and_no_persistence(config, expected):
    ok, reason, message = durable_condition(config)
    assert (ok, reason) == expected and message
    d = decide(_spec(), {"stableRevision": "r"}, Observed(revision="r", store_config=config),
               None, now=1.0)  # fmt: skip
    cond = next(c for c in d.status["conditions"] if c["type"] == "StoreDurable")
    assert cond["status"] == {True: "True", False: "False", None: "Unknown"}[ok]
    assert d.status["phase"] == "Healthy", "a warning, not Degraded"
    # a turn that did not read the settings keeps what the last one read
    d = decide(_spec(), d.status, Observed(revision="r"), None, now=2.0)
    assert next(c for c in d.status["conditions"] if c["type"] == "StoreDurable") == cond


def test_log_capacity_keeps_its_last_measurement_while_the_health_is_stale() -> None:
    measured = h.Health(ts=100.0, log=_measured(256e6, False))
    d = decide(_spec(), {"stableRevision": "r"}, Observed(revision="r"), measured, now=100.0)
    cond = next(c for c in d.status["conditions"] if c["type"] == "LogCapacity")
    assert cond["reason"] == "Insufficient"
    # Redis is full: the monitor writes no summary; the last one goes stale
    later = decide(_spec(), d.status, Observed(revision="r"), measured, now=1000.0)
    assert next(c for c in later.status["conditions"] if c["type"] == "LogCapacity") == cond
    assert later.status["log"] == d.status["log"]


def test_a_cold_model_published_after_a_store_reset_is_named_and_not_served_alone() -> None:
    d = decide(_spec(), _HELD, Observed(revision="old", store=_store(epoch=None)), None, now=1.0)
    # nothing held v18: the learner published v21, cold, as latest only and pinned
    cold = Observed(revision="old", latest=21, pinned=True,
                    store=_store(epoch=d.status["storeEpoch"], empty=()))  # fmt: skip
    d = decide(_spec(), d.status, cold, None, now=2.0)
    assert d.status["phase"] == "Degraded" and "unpin" not in _kinds(d)
    [cond] = [c for c in d.status["conditions"] if c["type"] == "StoreReset"]
    assert "v21 is a cold model, not served: serve it by hand (annotate " in cond["message"]
    assert d.status["pinned"] is True and _kinds(d) == []


_FULL = {"type": "StoreFull", "status": "True", "reason": "OutOfMemory", "message": "full",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip


@pytest.mark.parametrize(
    ("conditions", "observed", "events", "condition", "phase"),
    [
        ([], Observed(revision="old", served=7, latest=7, store=_store(empty=()),
                      store_full="Redis refuses writes"),
         ["StoreFull"], ("True", "OutOfMemory"), "Degraded"),
        ([_FULL], Observed(revision="old", served=7, latest=7, store=_store(empty=()),
                           store_full="Redis refuses writes"),
         [], ("True", "OutOfMemory"), "Degraded"),
        ([_FULL], Observed(revision="old", served=7, latest=7, store=_store(empty=())),
         ["StoreAccepting"], ("False", "Accepting"), "Healthy"),
        ([_FULL], Observed(revision="old", served=7, latest=7),
         [], ("True", "OutOfMemory"), "Degraded"),
        ([], Observed(revision="old", served=7, latest=7, store=_store(empty=())),
         [], None, "Healthy"),
    ],
    ids=[
        "Redis starts refusing writes: one StoreFull event, the condition, Degraded",
        "still refusing: no second event",
        "accepting again: one StoreAccepting event, the condition False, Healthy",
        "the store not read this turn: the condition as last seen, no event",
        "a Redis never full shows no StoreFull condition",
    ],
)  # fmt: skip
def test_a_redis_that_refuses_writes_is_said_once_and_its_end_too(
    conditions, observed, events, condition, phase
) -> None:
    status = {"stableRevision": "old", "storeEpoch": "e1", "latestVersion": 7,
              "servedVersion": 7, "conditions": conditions}  # fmt: skip
    d = decide(_spec(), status, observed, None, now=100.0)
    assert [a.reason for a in _actions(d, Event)] == events
    got = next((c for c in d.status["conditions"] if c["type"] == "StoreFull"), None)
    assert (got["status"], got["reason"]) == condition if condition else got is None
    assert d.status["phase"] == phase


def test_what_processes_put_back_after_a_reset_is_that_reset_s_repair_not_another() -> None:
    reset = {"at": 90.0, "cause": "the epoch token is gone", "message": "m", "latest": 20,
             "served": 18, "lastGood": 6, "recoveredAt": 95.0}  # fmt: skip
    status = {**_HELD, "storeRestores": 0, "storeReset": reset}
    obs = Observed(revision="old", served=18, latest=21, last_good=6,
                   store=_store(empty=(), restores=4))  # fmt: skip
    d = decide(_spec(), status, obs, None, now=100.0)
    assert [a.reason for a in _actions(d, Event)] == []
    d = decide(_spec(), status, obs, None, now=90.0 + 31.0)
    assert [a.reason for a in _actions(d, Event)] == ["StoreReset", "StoreRecovered"]


# --------------------------------------------------------------------------- a model that cannot be loaded
def _fault(revision, component="learner", reason="ImportFailed",
           message="ModuleNotFoundError: No module named 'teams'", at=90.0):  # fmt: skip
    return ModelFault(reason, message, component, revision, at)


_LOADED = {"stableRevision": "old", "storeEpoch": "e1", "servedVersion": 7, "latestVersion": 7}
_NOT_LOADED = {"type": "ModelLoaded", "status": "False", "reason": "MissingMethod",
               "message": "learner and server of revision old: teams.model:Scorer has no save "
                          "(see tideline.model)", "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip
_NO_SAVE = "teams.model:Scorer has no save (see tideline.model)"
_STABLE_FAULTS = (_fault("old", "learner", "MissingMethod", _NO_SAVE),
                  _fault("old", "server", "MissingMethod", _NO_SAVE))  # fmt: skip
_REPORTED = {**_LOADED, "conditions": [_NOT_LOADED],
             "loadFaults": [msgspec.to_builtins(f) for f in _STABLE_FAULTS]}  # fmt: skip


@pytest.mark.parametrize(
    ("status", "faults", "events", "condition", "phase", "degraded"),
    [
        (_LOADED, _STABLE_FAULTS, ["MissingMethod", "MissingMethod"],
         ("False", "MissingMethod", f"learner and server of revision old: {_NO_SAVE}"),
         "Degraded", ("MissingMethod", f"the model cannot be loaded: learner and server of revision old: {_NO_SAVE}")),
        (_REPORTED, tuple(msgspec.structs.replace(f, at=99.0) for f in _STABLE_FAULTS), [],
         ("False", "MissingMethod", f"learner and server of revision old: {_NO_SAVE}"),
         "Degraded", ("MissingMethod", f"the model cannot be loaded: learner and server of revision old: {_NO_SAVE}")),
        (_REPORTED, (_STABLE_FAULTS[0], _fault("old", "monitor", "BadParams", "TypeError: bad depth")),
         ["BadParams"],
         ("False", "MissingMethod", f"learner of revision old: {_NO_SAVE}; monitor of revision old: TypeError: bad depth"),
         "Degraded", ("MissingMethod", f"the model cannot be loaded: learner of revision old: {_NO_SAVE}; "
                                       "monitor of revision old: TypeError: bad depth")),
        (_REPORTED, (), ["ModelLoaded"],
         ("True", "Loaded", "no component of the model reports a model it cannot load"),
         "Healthy", ("AsExpected", "")),
        (_REPORTED, None, [],
         ("False", "MissingMethod", f"learner and server of revision old: {_NO_SAVE}"),
         "Degraded", ("MissingMethod", f"the model cannot be loaded: learner and server of revision old: {_NO_SAVE}")),
        (_LOADED, (_fault("gone"),), [], None, "Healthy", ("AsExpected", "")),
        (_LOADED, (), [], None, "Healthy", ("AsExpected", "")),
    ],
    ids=[
        "the stable learner and servers cannot load the model: an event each, ModelLoaded False, Degraded",
        "the same faults reported again by a crash loop: no second event",
        "a new fault beside one already said: one event, both in the condition",
        "no fault left: one ModelLoaded event, the condition True (Loaded), Healthy again",
        "the store not read this turn: the faults as last seen, no event",
        "a fault of a revision neither stable nor canary is not the model's",
        "a model that always loaded shows no ModelLoaded condition",
    ],
)  # fmt: skip
def test_a_stable_model_that_cannot_be_loaded_is_said_and_degraded_until_it_loads(
    status, faults, events, condition, phase, degraded
) -> None:
    obs = Observed(revision="old", served=7, latest=7, store=_store(empty=()), faults=faults)
    d = decide(_spec(), status, obs, None, now=100.0)
    assert [a.reason for a in _actions(d, Event)] == events
    got = next((c for c in d.status["conditions"] if c["type"] == "ModelLoaded"), None)
    assert (got["status"], got["reason"], got["message"]) == condition if condition else got is None
    assert d.status["phase"] == phase
    cond = next(c for c in d.status["conditions"] if c["type"] == "Degraded")
    assert (cond["reason"], cond["message"]) == degraded
    assert "rollback" not in _kinds(d) and d.status["stableRevision"] == "old"


def test_a_canary_whose_model_cannot_be_loaded_aborts_with_the_reason_and_the_error() -> None:
    status = {**_canary_status(step=1, weight=10, pauseStartedAt=95.0), **_LOADED}
    obs = Observed(revision="new", served=7, latest=7, store=_store(empty=()),
                   faults=(_fault("new"), _fault("new", "server")))  # fmt: skip
    d = decide(_spec(), status, obs, None, now=100.0)
    said = "learner and server of revision new: ModuleNotFoundError: No module named 'teams'"
    assert d.status["aborted"]["revision"] == "new"
    assert d.status["aborted"]["reason"] == f"the model cannot be loaded (ImportFailed): {said}"
    assert d.status["canaryWeight"] == 0 and d.status["stableRevision"] == "old"
    assert _active(d) == {"old"}  # the aborted canary's children go
    assert [a.reason for a in _actions(d, Event)] == [
        "ImportFailed", "ImportFailed", "RolloutAborted"]  # fmt: skip
    [loaded] = [c for c in d.status["conditions"] if c["type"] == "ModelLoaded"]
    assert (loaded["status"], loaded["reason"], loaded["message"]) == (
        "False",
        "ImportFailed",
        said,
    )
    [degraded] = [c for c in d.status["conditions"] if c["type"] == "Degraded"]
    assert degraded["reason"] == "RolloutAborted" and said in degraded["message"]
    assert d.status["phase"] == "Degraded"
    # the next turns: aborted once, the fault said while the status names the canary
    again = decide(_spec(), d.status, obs, None, now=110.0)
    assert _kinds(again) == [] and again.status["aborted"] == d.status["aborted"]
    # the spec moves on: a new canary, the old one's faults are no longer the model's
    fixed = decide(_spec(), again.status, Observed(revision="fixed", served=7, latest=7,
                                                   store=_store(empty=()), faults=()), None, 120.0)  # fmt: skip
    assert fixed.status["canaryRevision"] == "fixed" and "aborted" not in fixed.status
    [loaded] = [c for c in fixed.status["conditions"] if c["type"] == "ModelLoaded"]
    assert (loaded["status"], loaded["reason"]) == ("True", "Loaded")


def test_a_canary_whose_learner_cannot_warm_start_is_aborted_with_the_uri_and_what_happened() -> (
    None
):
    # (issue 36: spec.model.warmStart.storageUri; the learner reports it as a model fault)
    status = {**_canary_status(step=1, weight=10), **_LOADED}
    message = "s3://models/fraud/v3.tdl: https://s3.amazonaws.com says NoSuchKey: The specified key does not exist."
    obs = Observed(revision="new", served=7, latest=7, store=_store(empty=()),
                   faults=(_fault("new", reason="WarmStartFailed", message=message),))  # fmt: skip
    d = decide(_spec(), status, obs, None, now=100.0)
    said = f"learner of revision new: {message}"
    assert d.status["aborted"]["reason"] == f"the model cannot be loaded (WarmStartFailed): {said}"
    assert [a.reason for a in _actions(d, Event)] == ["WarmStartFailed", "RolloutAborted"]
    [loaded] = [c for c in d.status["conditions"] if c["type"] == "ModelLoaded"]
    assert (loaded["status"], loaded["reason"], loaded["message"]) == (
        "False",
        "WarmStartFailed",
        said,
    )


def test_a_canary_that_cannot_load_is_not_promoted_by_annotation_either() -> None:
    status = {**_canary_status(step=1, weight=10), **_LOADED}
    obs = Observed(revision="new", annotations={PROMOTE: "true"}, served=7, latest=7,
                   store=_store(empty=()), faults=(_fault("new", reason="BadParams",
                                                          message="TypeError: bad depth"),))  # fmt: skip
    d = decide(_spec(), status, obs, None, now=100.0)
    assert d.status["stableRevision"] == "old" and d.status["aborted"]["revision"] == "new"
    assert "promote" not in _kinds(d)


@pytest.mark.parametrize(
    ("status", "component", "promoted"),
    [
        ({"stableRevision": "old", "storeEpoch": "e1"}, "learner", True),
        ({"stableRevision": "old", "storeEpoch": "e1", "latestVersion": 3}, "learner", False),
        ({"stableRevision": "old", "storeEpoch": "e1"}, "monitor", False),
    ],
    ids=[
        "a stable revision whose learner never loaded its model is replaced at once",
        "one that published versions before it broke keeps the canary's steps",
        "one whose learner loads it (only its monitor cannot) keeps the canary's steps",
    ],
)  # fmt: skip
def test_a_new_revision_replaces_a_stable_one_that_never_loaded_its_model(
    status, component, promoted
) -> None:
    obs = Observed(revision="new", store=_store(empty=("old",)), faults=(_fault("old", component),))
    d = decide(_spec(), status, obs, None, now=100.0)
    assert (d.status["stableRevision"] == "new") is promoted
    assert ("promote" in _kinds(d)) is promoted
    if promoted:
        [event] = [a for a in _actions(d, Event) if a.reason == "Promoted"]
        assert "revision old never loaded its model (ImportFailed): nothing to protect" in (
            event.message
        )
        assert "loadFaults" not in d.status  # the old revision's: not the model's any more
    else:
        assert d.status["canaryRevision"] == "new" and d.status["phase"] == "Degraded"


def test_a_fault_longer_than_the_status_holds_is_cut() -> None:
    obs = Observed(revision="old", served=7, latest=7, store=_store(empty=()),
                   faults=(_fault("old", message="x" * 5000, reason="R" * 100),))  # fmt: skip
    d = decide(_spec(), _LOADED, obs, None, now=100.0)
    [f] = d.status["loadFaults"]
    assert len(f["message"]) == MAX_FAULT_MESSAGE and len(f["reason"]) == 64


GIB, MIB = 1 << 30, 1 << 20


def _memory(status: str, reason: str = "NearLimit") -> dict:
    return {"type": "LearnerMemory", "status": status, "reason": reason, "message": "m",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip


def _use(revision: str, share: float, state: int | None = 900 * MIB) -> MemoryUse:
    return MemoryUse(revision, int(share * 2 * GIB), 2 * GIB, state)


_ADVICE = ": raise spec.pods.learner.resources.limits.memory or bound the model"


@pytest.mark.parametrize(
    ("status", "memory", "events", "condition", "message"),
    [
        ({}, None, [], None, None),
        ({}, (), [], None, None),
        ({}, (_use("old", 0.5),), [], ("True", "Ok"),
         "learner of revision old uses 1 GiB of its 2 GiB limit (50 %); its state is 900 MiB"),
        ({}, (_use("old", 0.86),), ["LearnerMemoryNearLimit"], ("False", "NearLimit"),
         "learner of revision old uses 1.7 GiB of its 2 GiB limit (86 %); its state is 900 MiB"
         + _ADVICE),
        ({"conditions": [_memory("False")]}, (_use("old", 0.9),), [], ("False", "NearLimit"),
         None),
        ({"conditions": [_memory("False")]}, (_use("old", 0.82),), [], ("False", "NearLimit"),
         None),
        ({"conditions": [_memory("False")]}, (_use("old", 0.7),), ["LearnerMemoryOk"],
         ("True", "Ok"), None),
        ({"conditions": [_memory("True", "Ok")]}, (_use("old", 0.82),), [], ("True", "Ok"),
         None),
        ({"conditions": [_memory("False")]}, None, [], ("False", "NearLimit"), "m"),
        ({"conditions": [_memory("False")]}, (), [], ("False", "NearLimit"), "m"),
        ({}, (MemoryUse("old", 3 * GIB),), [], ("True", "Ok"),
         "learner of revision old uses 3 GiB with no memory limit"),
        ({"canaryRevision": "new", "currentStep": 1, "canaryWeight": 10},
         (_use("old", 0.4, None), _use("new", 0.95, 1900 * MIB)), ["LearnerMemoryNearLimit"],
         ("False", "NearLimit"),
         "learner of revision new uses 1.9 GiB of its 2 GiB limit (95 %); its state is 1.9 GiB"
         + _ADVICE),
        ({"canaryRevision": "new", "canaryWeight": 0,
          "aborted": {"revision": "new", "reason": "r", "at": 1.0}},
         (_use("old", 0.4, None), _use("new", 0.95)), [], ("True", "Ok"),
         "learner of revision old uses 819 MiB of its 2 GiB limit (40 %)"),
        ({}, (_use("gone", 0.95),), [], None, None),
    ],
    ids=[
        "no reading (Redis not read) and never shown: no condition",
        "no learner reported its memory yet: no condition",
        "a learner at half its limit: True, Ok, with its sizes",
        "a learner reaching 85 % of its limit: one Warning event, False, NearLimit, what to do",
        "still near: no second event",
        "between 80 % and 85 % after being near: still near (hysteresis), no event",
        "below 80 % again: one Normal event, True, Ok",
        "between 80 % and 85 % without being near first: still Ok",
        "Redis not read this turn: the condition as last seen",
        "the learner's reading gone from the store: the condition as last seen",
        "a learner without a memory limit is never near it, and the message says so",
        "a canary's learner near its limit is named alone, the stable one within it",
        "an aborted canary's learner is no concern any more",
        "a revision that is neither stable nor the canary is not looked at",
    ],
)  # fmt: skip
def test_a_learner_near_its_memory_limit_is_said_once_with_its_sizes(
    status, memory, events, condition, message
) -> None:
    status = {"stableRevision": "old", "storeEpoch": "e1", "latestVersion": 7,
              "servedVersion": 7, **status}  # fmt: skip
    revision = "new" if status.get("canaryRevision") else "old"
    observed = Observed(revision=revision, served=7, latest=7, store=_store(empty=()),
                        memory=memory)  # fmt: skip
    d = decide(_spec(), status, observed, None, now=100.0)
    said = [a for a in _actions(d, Event) if a.reason.startswith("LearnerMemory")]
    assert [a.reason for a in said] == events
    got = next((c for c in d.status["conditions"] if c["type"] == "LearnerMemory"), None)
    assert (got["status"], got["reason"]) == condition if condition else got is None
    if message is not None:
        assert got is not None and got["message"] == message
        assert all(a.message == message for a in said)
    assert d.status["phase"] != "Degraded" or status.get("aborted"), "a warning, not Degraded"


def _history_spec():
    doc = manifest(learning={"history": "2h"},
                   rollout={"steps": STEPS, "analysis": {"minSamples": 500,
                                                         "maxAccuracyDrop": 0.01}})  # fmt: skip
    return parse(doc).spec


def test_a_canary_with_history_serves_no_one_until_its_backtest_is_done() -> None:
    from tideline.contracts import Backtest

    spec = _history_spec()
    assert spec.rollout.steps[0].backtest == 3600.0  # (before the first setWeight)
    d = decide(spec, {"stableRevision": "old"}, Observed(revision="new"), None, now=100.0)
    assert (d.status["canaryRevision"], d.status["currentStep"], d.status["canaryWeight"]) == (
        "new", 0, 0)  # fmt: skip
    running = Backtest(read=400, total=9000, rows=4000, rate=20_000.0)
    d = decide(spec, d.status, Observed(revision="new", backtest=running), None, now=110.0)
    assert d.status["currentStep"] == 0 and d.status["canaryWeight"] == 0
    [c] = [c for c in d.status["conditions"] if c["type"] == "CatchingUp"]
    assert (c["status"], c["reason"]) == ("True", "CatchingUp")
    assert c["message"] == "4% of the history (400 of 9,000 entries, 4,000 rows) at 20,000 rows/s"
    assert d.status["backtest"]["rows"] == 4000 and not d.status["backtest"]["done"]


@pytest.mark.parametrize(
    ("samples", "difference", "half", "outcome"),
    [(3000, -0.08, 0.02, "BacktestFailed"), (3000, 0.004, 0.01, "BacktestPassed"),
     (120, -0.2, 0.25, "BacktestInconclusive"), (0, 0.0, 1.0, "BacktestInconclusive")],
    ids=["worse by more than maxAccuracyDrop: aborted", "within it on enough samples: passed",
         "worse but not surely: on", "no history: on"],
)  # fmt: skip
def test_a_backtest_stops_a_bad_revision_and_never_slows_a_good_one(
    samples: int, difference: float, half: float, outcome: str
) -> None:
    from tideline.contracts import Backtest

    spec = _history_spec()
    done = Backtest(done=True, read=9000, total=9000, rows=90_000, window=3600.0, samples=samples,
                    difference=difference, lower=difference - half, upper=difference + half)  # fmt: skip
    st = _canary_status(step=0, weight=0)
    d = decide(spec, st, Observed(revision="new", backtest=done), None, now=200.0)
    [event] = [a for a in d.actions if isinstance(a, Event) and a.reason.startswith("Backtest")]
    assert event.reason == outcome
    if outcome == "BacktestFailed":
        assert d.status["aborted"]["cause"] == "BacktestFailed" and d.status["canaryWeight"] == 0
        [degraded] = [c for c in d.status["conditions"] if c["type"] == "Degraded"]
        assert (degraded["status"], degraded["reason"]) == ("True", "BacktestFailed")
        assert (
            f"{difference:+.3f} [{difference - half:+.3f}, {difference + half:+.3f}] on "
            f"{samples} paired samples of the last 3600s of history" in degraded["message"]
        )
    else:
        assert "aborted" not in d.status
        assert d.status["currentStep"] == 2 and d.status["canaryWeight"] == 10
        [c] = [c for c in d.status["conditions"] if c["type"] == "CatchingUp"]
        assert (c["status"], c["reason"]) == ("False", "CaughtUp")
        assert d.status["backtest"]["samples"] == samples


def test_the_status_shows_what_online_learning_buys_over_the_frozen_warm_start() -> None:
    st = _canary_status()
    health = _health(100.0, baseline=(0, comparison(-0.03, half=0.01, samples=1500)))
    d = decide(_spec(), st, Observed(revision="new"), health, now=100.0)
    assert d.status["liftOverBaseline"] == {"difference": 0.03, "lower": 0.02, "upper": 0.04,
                                            "samples": 1500, "baselineVersion": 0}  # fmt: skip


def test_a_regression_model_shows_its_error_where_a_classifier_shows_its_accuracy() -> None:
    st = _canary_status()
    stable = {"rmse": 2.5, "mae": 1.75, "relative_mse": 0.4, "labelled": 5000, "window": 2000}
    d = decide(_spec(), st, Observed(revision="new"), _health(100.0, stable=stable), now=100.0)
    assert d.status["onlineError"] == {"rmse": 2.5, "mae": 1.75, "relativeToConstant": 0.4}
    assert "onlineAccuracy" not in d.status
    d = decide(_spec(), st, Observed(revision="new"), _health(100.0), now=100.0)
    assert "onlineError" not in d.status and d.status["onlineAccuracy"] == 0.9


def test_a_pause_for_concept_drift_holds_until_the_annotation_says_otherwise() -> None:
    """onConceptDrift: pause paused learning for one turn: the next read the annotation's
    absence as "not paused". A change of the annotation is a person's word; nothing else
    resumes."""
    spec = parse(manifest(guardrails={"onConceptDrift": "pause"})).spec
    obs = Observed(revision="old", served=7, last_good=6)
    health = _health(100.0, concept=_concept(), lastGood=(6, comparison(0.0, half=0.02)))
    d = decide(spec, {"stableRevision": "old"}, obs, health, now=100.0)
    assert d.status["learningPaused"] and d.status["learningPausedBy"] == "conceptDrift"
    st = d.status
    for now in (101.0, 150.0, 900.0):  # (the drift gone: still paused)
        d = decide(spec, st, obs, _health(now, lastGood=(6, comparison(0.0))), now=now)
        assert "pause-learning" not in _kinds(d) and d.status["learningPaused"]
        st = d.status
    resumed = decide(spec, st, Observed(revision="old", served=7, last_good=6,
                                        annotations={PAUSE_LEARNING: "false"}),
                     _health(901.0), now=901.0)  # fmt: skip
    assert "pause-learning" in _kinds(resumed) and not resumed.status["learningPaused"]
    # a later episode pauses again, the "false" left on the object notwithstanding
    again = decide(spec, resumed.status, Observed(revision="old", served=7, last_good=6,
                                                   annotations={PAUSE_LEARNING: "false"}),
                   _health(950.0, concept=_concept(949.0)), now=950.0)  # fmt: skip
    assert again.status["learningPaused"] and again.status["learningPausedBy"] == "conceptDrift"


def test_a_promotion_does_not_announce_the_concept_drift_episode_reacted_to_again() -> None:
    spec = _spec()
    health = _health(100.0, concept=_concept(), lastGood=(6, comparison(0.0, half=0.02)))
    st = _canary_status(step=len(STEPS) - 1, weight=50, lastConceptAt=99.0)
    d = decide(spec, st, Observed(revision="new", annotations={PROMOTE: "true"}), health,
               now=100.0)  # fmt: skip
    assert [a.reason for a in _actions(d, Event)] == ["Promoted"]
    after = decide(spec, d.status, Observed(revision="new"), _health(101.0, concept=_concept()),
                   now=101.0)  # fmt: skip
    assert "ConceptDrift" not in [a.reason for a in _actions(after, Event)]


def test_a_promote_left_on_the_object_asks_nothing_of_the_next_canary() -> None:
    """The promote annotation is read once, at a change: left on the object (Argo CD and
    kubectl tideline leave it), it promoted the next canary at its first turn."""
    spec = _spec()
    health = _health(100.0, canary=(2, comparison(0.0)))
    promote = {PROMOTE: "true"}
    d = decide(spec, _canary_status(), Observed(revision="new", annotations=promote), health,
               now=100.0)  # fmt: skip
    assert d.status["stableRevision"] == "new"
    # a second revision: its canary starts and stays at its first step
    d = decide(spec, d.status, Observed(revision="third", annotations=promote), health,
               now=101.0)  # fmt: skip
    d = decide(spec, d.status, Observed(revision="third", annotations=promote), health,
               now=102.0)  # fmt: skip
    assert d.status["canaryRevision"] == "third" and d.status["stableRevision"] == "new"
    # the annotation set to another canary's revision asks nothing; to this one's, promotes it
    d = decide(spec, d.status, Observed(revision="third", annotations={PROMOTE: "other"}),
               health, now=103.0)  # fmt: skip
    assert d.status["canaryRevision"] == "third"
    d = decide(spec, d.status, Observed(revision="third", annotations={PROMOTE: "third"}),
               health, now=104.0)  # fmt: skip
    assert d.status["stableRevision"] == "third" and "Promoted" in [
        a.reason for a in _actions(d, Event)]  # fmt: skip


def test_an_abort_asked_with_no_canary_in_flight_is_not_kept_for_the_next_one() -> None:
    spec = _spec()
    st = {"stableRevision": "old", "servedVersion": 7, "latestVersion": 7}
    ask = {ABORT: "true"}
    d = decide(spec, st, Observed(revision="old", served=7, annotations=ask), _health(100.0),
               now=100.0)  # fmt: skip
    d = decide(spec, d.status, Observed(revision="new", served=7, annotations=ask),
               _health(101.0), now=101.0)  # fmt: skip
    assert d.status["canaryRevision"] == "new" and "aborted" not in d.status


def test_requests_an_older_operator_left_unread_ask_nothing_and_absent_ones_are_recorded() -> None:
    """A status without requestsSeen (an operator before this one wrote it) records what is
    there and acts on nothing: a promote=true left then would promote a canary at once. An
    annotation removed is recorded as "" (the status is merge-patched: a key dropped stays)."""
    spec = _spec()
    st = {k: v for k, v in _canary_status().items() if k != "requestsSeen"}
    obs = Observed(revision="new", annotations={PROMOTE: "true"})
    d = decide(spec, st, obs, _health(100.0, canary=(2, comparison(0.0))), now=100.0)
    assert d.status["canaryRevision"] == "new" and "Promoted" not in [
        a.reason for a in _actions(d, Event)]  # fmt: skip
    assert d.status["requestsSeen"] == {PROMOTE: "true", ABORT: ""}
    d = decide(spec, d.status, Observed(revision="new"), _health(101.0), now=101.0)
    assert d.status["requestsSeen"] == {PROMOTE: "", ABORT: ""}
