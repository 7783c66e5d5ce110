"""The monitor's multiclass pieces without Redis: a track's figures by class name, the error
the unpin reads, logged scores as the task reads them, the per-class recall on /metrics."""

from __future__ import annotations

import numpy as np
import pytest

from tideline.monitoring.candidates import error_of
from tideline.monitoring.summary import metrics, recall
from tideline.monitoring.tracks import TrackState
from tideline.pods.metrics import MonitorMetrics
from tideline.tasks import Task

TASK = Task("multiclass", ("cat", "dog", "fox"))


def test_a_track_s_multiclass_figures_come_out_with_recall_by_class_name() -> None:
    t = TrackState(TASK, window=10)
    p = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    t.quality.update(p, np.array([0.0, 1.0, 1.0, 1.0]))
    report = t.quality.report()
    assert metrics(report) == pytest.approx(
        {
            "accuracy": 0.5,
            "logloss": -np.mean(np.log([0.8, 0.3, 0.7, 0.2])),
            "calibration": report["calibration"],
        }  # fmt: skip
    )
    assert recall(TASK, report) == {"cat": 1.0, "dog": pytest.approx(1 / 3)}, "fox: no label"
    assert recall(Task("binary"), {"accuracy": 1.0}) == {}


@pytest.mark.parametrize(
    ("task", "report", "error"),
    [(TASK, {"accuracy": 0.75}, 0.25), (Task("binary"), {"accuracy": 0.9}, 0.1),
     (Task("regression"), {"rmse": 2.0}, 4.0), (TASK, {"count": 0}, None)],
    ids=["multiclass: 1 - accuracy", "binary: 1 - accuracy", "regression: the mean squared error",
         "no label yet: none"],
)  # fmt: skip
def test_the_error_the_unpin_reads(task, report, error) -> None:
    assert error_of(task, report) == (pytest.approx(error) if error is not None else None)


@pytest.mark.parametrize(
    ("task", "scores", "shape"),
    [(TASK, [[0.2, 0.5, 0.3], [1, 0, 0]], (2, 3)), (Task("binary"), [0.25, True], (2,))],
    ids=["multiclass: a row of k probabilities each", "binary: a number each"],
)
def test_logged_scores_are_read_as_the_task_s(task, scores, shape) -> None:
    assert task.checked(scores, len(scores), probabilities=False).shape == shape


@pytest.mark.parametrize(
    ("task", "scores"),
    [(TASK, [0.2, 0.5]), (TASK, [[0.2, 0.8]]), (TASK, [[0.2, 0.5, 0.3], [0.1, 0.9]]),
     (TASK, [[0.2, None, 0.3]]), (Task("binary"), [None]), (Task("binary"), [[0.1, 0.9]])],
    ids=["multiclass: a number a row", "multiclass: two of three classes",
         "multiclass: rows of different widths", "multiclass: a null probability",
         "binary: a null score", "binary: a row of probabilities"],
)  # fmt: skip
def test_logged_scores_that_are_not_the_task_s_are_refused(task, scores) -> None:
    with pytest.raises(ValueError):
        task.checked(scores, len(scores), probabilities=False)


def test_per_class_recall_is_a_gauge_by_track_and_class_and_a_class_gone_is_no_series() -> None:
    m = MonitorMetrics(None)
    m.set_recall({"stable": {"cat": 0.9, "dog": 0.5}, "canary": {"cat": 0.4}})
    get = m.registry.get_sample_value
    assert get("tideline_monitor_recall", {"track": "stable", "class": "dog"}) == 0.5
    assert get("tideline_monitor_recall", {"track": "canary", "class": "cat"}) == 0.4
    m.set_recall({"stable": {"cat": 0.8}})  # dog's rows left the window; the canary went
    assert get("tideline_monitor_recall", {"track": "stable", "class": "cat"}) == 0.8
    assert get("tideline_monitor_recall", {"track": "stable", "class": "dog"}) is None
    assert get("tideline_monitor_recall", {"track": "canary", "class": "cat"}) is None
