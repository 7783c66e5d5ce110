"""The verdict of a ``tideline run`` (issue 37): sentences from hand-made summaries."""

from __future__ import annotations

from typing import Any

import pytest

from tideline.demo.verdict import verdict


def _ev(t: float, reason: str, message: str = "") -> dict[str, Any]:
    return {"t": t, "type": "Normal", "reason": reason, "message": message}


BINARY = {
    "model": "default/fraud", "seconds": 90.0, "duration": 90.0, "interrupted": False,
    "quality": "accuracy", "served_accuracy_mean": 0.9123, "request_errors": 0,
    "restarts": {}, "phase": "Healthy", "bad_revision_canary_predictions": 0,
    # 0.9 until 20 s, a dip to 0.6, back to 0.9 from 25 s; 0.89 during the poisoning
    "accuracy_timeline": [0.9] * 20 + [0.6, 0.7, 0.8, 0.85, 0.87] + [0.9] * 10
    + [0.89] * 8 + [0.9] * 47,
    "events": [
        _ev(20.0, "DriftInjected"), _ev(21.4, "ConceptDrift", "the error rate rose"),
        _ev(35.0, "PoisonInjected"), _ev(36.2, "RolledBack", "v12 -> v8: worse than lastGood"),
        _ev(43.0, "PoisonEnded"), _ev(52.0, "Unpinned", "v8 unpinned"),
        _ev(60.0, "Applied", "model.params: a bad new revision"),
        _ev(61.5, "BacktestFailed", "worse on history"),
        _ev(70.0, "Applied", "learning.batchSize -> 128"), _ev(71.0, "CanaryStarted"),
        _ev(77.0, "Promoted", "revision b2 (steps done)"),
    ],
}  # fmt: skip

REGRESSION = {
    "model": "default/demand", "seconds": 40.0, "duration": 40.0, "interrupted": False,
    "quality": "rmse", "served_accuracy_mean": None, "served_rmse_mean": 0.7312,
    "rmse_timeline": [0.5] * 10 + [2.0, 1.0, 0.54] + [0.5] * 27, "request_errors": 2,
    "restarts": {"demand-learner": 1}, "phase": "Healthy",
    "events": [_ev(10.0, "DriftInjected"), _ev(11.0, "ConceptDrift")],
}  # fmt: skip

INTERRUPTED = {"model": "default/fraud", "seconds": 0.4, "duration": 30.0, "interrupted": True,
               "events": []}  # fmt: skip


@pytest.mark.parametrize(
    ("summary", "expected"),
    [
        (BINARY, [
            "Concept drift injected at 20 s: noticed at 21.4 s (ConceptDrift, 1.4 s later); "
            "served accuracy went from 0.90 to as low as 0.60, back within 2 points by 25 s.",
            "Label poisoning 35-43 s: rolled back at 36.2 s to v8, pinned until 52 s; "
            "served accuracy 0.89 while it lasted (0.90 before).",
            "Bad revision at 60 s: stopped by its backtest at 61.5 s, 0 canary predictions.",
            "New revision at 70 s: promoted at 77 s.",
            "Overall: served accuracy 0.91 on average, 0 request errors, no process restarts.",
        ]),
        (REGRESSION, [
            "Concept drift injected at 10 s: noticed at 11 s (ConceptDrift, 1.0 s later); "
            "served RMSE went from 0.500 to at worst 2.000, back within 10 % by 12 s.",
            "Overall: served RMSE 0.731 on average, 2 request errors, 1 process restart.",
        ]),
        (INTERRUPTED, [
            "Interrupted after 0.4s of 30s: what ran until then.",
            "Overall: no served accuracy measured, no process restarts.",
        ]),
    ],
    ids=[
        "a binary run says when the drift was noticed, the rollback, the stopped and the promoted revision",
        "a regression run speaks of RMSE, where lower is better",
        "an interrupted run says so first and claims nothing it did not see",
    ],
)  # fmt: skip
def test_the_verdict_tells_the_run_in_sentences(
    summary: dict[str, Any], expected: list[str]
) -> None:
    assert verdict(summary) == expected


def test_a_drift_never_noticed_and_never_recovered_is_said_plainly() -> None:
    summary = {"quality": "accuracy", "accuracy_timeline": [0.9] * 10 + [0.6] * 10,
               "events": [_ev(10.0, "DriftInjected")]}  # fmt: skip
    assert verdict(summary)[0] == (
        "Concept drift injected at 10 s: not flagged as concept drift; served accuracy went "
        "from 0.90 to as low as 0.60, not back within 2 points by the end."
    )


def test_a_canary_still_running_at_the_end_is_not_called_promoted() -> None:
    summary = {"phase": "Progressing", "events": [_ev(70.0, "Applied"), _ev(71.0, "CanaryStarted")]}
    assert "New revision at 70 s: not promoted by the end (phase Progressing)." in verdict(summary)
