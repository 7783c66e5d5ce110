"""A multiclass model's health summary: its figures on the wire, and the rollout's decisions on
them - the same as a binary model's (accuracy points), not a regression model's."""

from __future__ import annotations

import msgspec
import orjson
import pytest

from tests.helpers import comparison, health_at, manifest
from tideline import health as h
from tideline.spec import parse
from tideline_operator.rollout import Observed, RollbackTo, RolloutStatus, analyze, decide

CLASSES = ["cat", "dog", "fox"]
MODELS = {
    "binary": {"task": "binary", "algorithm": "sgd", "features": [{"name": "a"}]},
    "multiclass": {"task": "multiclass", "algorithm": "sgd", "classes": CLASSES,
                   "features": [{"name": "a"}]},
    "regression": {"task": "regression", "algorithm": "sgd", "features": [{"name": "a"}]},
}  # fmt: skip


def _spec(task: str):
    return parse(manifest(model=MODELS[task], rollout={
        "steps": [{"setWeight": 50}, {"analysis": {}}],
        "analysis": {"interval": "10s", "minSamples": 500, "maxAccuracyDrop": 0.01}})).spec  # fmt: skip


def _health(now: float, quality: dict[str, h.Candidate], pin: h.PinEvidence | None = None,
            canary: bool = False) -> h.Health:  # fmt: skip
    stable = {"accuracy": 0.9, "labelled": 5000, "window": 2000,
              "recall": {"cat": 0.95, "dog": 0.9, "fox": 0.8}}  # fmt: skip
    canary_track = {"accuracy": 0.7, "labelled": 3000, "window": 2000} if canary else None
    return health_at(now, stable=stable, canary=canary_track, candidates=quality, pin=pin)


def test_the_classes_recall_travels_by_name_and_a_binary_summary_has_none() -> None:
    multiclass = h.TrackHealth(accuracy=0.8, logloss=0.6, calibration=0.04,
                               recall={"cat": 0.9, "dog": 0.7})  # fmt: skip
    wire = orjson.loads(h.encode(h.Health(ts=1.0, tracks={"stable": multiclass})))
    assert wire["tracks"]["stable"]["recall"] == {"cat": 0.9, "dog": 0.7}
    decoded = h.decode(h.encode(h.Health(ts=1.0, tracks={"stable": multiclass})))
    assert decoded is not None and decoded.track("stable").recall == {"cat": 0.9, "dog": 0.7}
    binary = h.encode(h.Health(ts=1.0, tracks={"stable": h.TrackHealth(accuracy=0.8)}))
    assert "recall" not in orjson.loads(binary)["tracks"]["stable"]
    old = msgspec.json.encode({"ts": 1.0, "tracks": {"stable": {"accuracy": 0.8}}})
    assert h.decode(old).track("stable").recall == {}, "a summary from before decodes"


def _decide(task: str, status: dict, observed: Observed, health: h.Health, now: float):
    d = decide(_spec(task), RolloutStatus.from_status(status), observed, health, now)
    return d.status.to_status(), d.actions


_PINNED = {"stableRevision": "old", "pinned": True, "servedVersion": 6, "lastGoodVersion": 6,
           "lastRollback": {"at": 50.0, "from": 8, "to": 6, "latest": 8}}  # fmt: skip


@pytest.mark.parametrize(
    ("task", "unpinned"),
    [("multiclass", True), ("binary", True), ("regression", False)],
    ids=["multiclass: an error of 12 % against 10 % before the pin is within the guardrail's "
         "5 points: unpinned",
         "binary: the same figures, the same decision",
         "regression: the same figures read as MSE, 20 % higher, over 5 %: stays pinned"],
)  # fmt: skip
def test_the_unpin_reads_a_multiclass_error_in_accuracy_points_as_binary_s(task, unpinned) -> None:
    status, got = dict(_PINNED), False
    pin = h.PinEvidence(at=50.0, version=6, samples=2000, error_before=0.10, error_since=0.12)
    for now in (100.0, 110.0, 120.0):
        latest = h.Candidate(revision="old", version=9, samples=2000, vs_served=comparison(0.0),
                             since_pin=comparison(-0.002, half=0.005))  # fmt: skip
        served = h.Candidate(revision="old", version=6, samples=2000, served_labelled=5000)
        health = _health(now, {"served": served, "latest": latest}, pin=pin)
        status, actions = _decide(task, status, Observed(revision="old", served=6, last_good=6,
                                                         latest=9), health, now)  # fmt: skip
        got = got or any(a.kind == "unpin" for a in actions)
    assert got is unpinned


@pytest.mark.parametrize("task", ["multiclass", "binary"])
def test_a_proven_version_surely_better_rolls_back_a_multiclass_model_in_accuracy_points(
    task,
) -> None:
    served = h.Candidate(revision="old", version=7, samples=2000, served_labelled=5000)
    good = h.Candidate(
        revision="old", version=6, samples=2000, vs_served=comparison(0.2, half=0.03)
    )
    health = _health(100.0, {"served": served, "lastGood": good})
    _, actions = _decide(task, {"stableRevision": "old"},
                         Observed(revision="old", served=7, last_good=6), health, 100.0)  # fmt: skip
    (rollback,) = [a for a in actions if isinstance(a, RollbackTo)]
    assert rollback.to == 6 and "(accuracy)" in rollback.pin.reason


@pytest.mark.parametrize("task", ["multiclass", "binary"])
def test_a_multiclass_canary_surely_worse_fails_its_analysis_on_accuracy(task) -> None:
    canary = h.Candidate(revision="new", version=2, samples=2000, vs_served=comparison(-0.1))
    served = h.Candidate(revision="old", version=7, samples=2000, served_labelled=5000)
    result = analyze(_spec(task), _health(100.0, {"served": served, "canary": canary},
                                          canary=True), now=100.0)  # fmt: skip
    assert (result.outcome, result.metric) == ("fail", "accuracy")
    assert "(accuracy)" in result.message
