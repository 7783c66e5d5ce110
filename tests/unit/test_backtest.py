"""The backtest reads what the live analysis reads: on the same samples, the same paired
differences and the same interval (one code path, :func:`tideline.evidence.paired_difference`)."""

from __future__ import annotations

import numpy as np
import pytest

from tideline.backtest import BacktestWindow
from tideline.evidence import CommonWindow
from tideline.tasks import Task


class Fixed:
    """A candidate that answers given scores, row by row (the window's rows are indices)."""

    schema = None

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def predict_many(self, rows: list) -> np.ndarray:
        return self.scores[np.asarray(rows, dtype=int)]


@pytest.mark.parametrize(
    "task", [Task("binary"), Task("regression"), Task("multiclass", ("a", "b", "c")),
             Task("binary", metric="logloss"),
             Task("multiclass", ("a", "b", "c"), metric="logloss")],
    ids=["binary", "regression", "multiclass", "binary-logloss", "multiclass-logloss"],
)  # fmt: skip
def test_the_backtest_and_the_live_analysis_agree_on_the_same_samples(task: Task) -> None:
    rng = np.random.default_rng(4)
    n = 3000
    if task.multiclass:
        y = rng.integers(0, 3, n).astype(float)
        cand, stable = rng.dirichlet([1, 1, 1], n), rng.dirichlet([1, 1, 1], n)
    elif task.name == "binary":
        y = (rng.random(n) < 0.4).astype(float)
        cand, stable = rng.random(n), rng.random(n)
    else:
        y = rng.normal(size=n)
        cand, stable = y + rng.normal(0, 0.9, n), y + rng.normal(0, 1.0, n)
    live = CommonWindow(task, size=n)
    live.add_candidate("candidate", Fixed(cand))
    live.add_candidate("stable", Fixed(stable))
    live.add_samples(list(range(n)), y)
    pair = live.compare("candidate", "stable")
    back = BacktestWindow(task, start=0.0)
    for a in range(0, n, 500):  # (in blocks, as the catch-up learns)
        part = slice(a, a + 500)
        back.add(np.full(500, 1.0), cand[part], stable[part], y[part], np.ones(500, dtype=bool))
    assert back.samples == pair.n == n
    assert back.result() == pytest.approx(live.relative(pair), rel=1e-12)


def test_only_the_window_s_rows_the_stable_track_served_are_compared() -> None:
    back = BacktestWindow(Task("binary"), start=100.0)
    received = np.array([50.0, 150.0, 160.0, 170.0])
    by_stable = np.array([True, True, False, True])
    back.add(received, np.array([1.0, 1.0, 1.0, 0.0]), np.zeros(4), np.ones(4), by_stable)
    assert back.samples == 2 and back.pair.mean == 0.5  # rows 1 (+1) and 3 (0)


def test_by_log_loss_an_overconfident_candidate_is_worse_where_accuracy_sees_none() -> None:
    """A click-through model that learned too fast answers the same side of 0.5, far too
    sure: accuracy cannot tell it from stable, log loss can (relative to stable's)."""
    rng = np.random.default_rng(7)
    n = 4000
    rate = rng.uniform(0.01, 0.3, n)
    y = (rng.random(n) < rate).astype(float)
    calibrated, overconfident = rate, np.where(rate < 0.5, 1e-4, 1 - 1e-4)
    received, stable = np.arange(n, dtype=float), np.ones(n, dtype=bool)
    said = {}
    for metric in ("accuracy", "logloss"):
        w = BacktestWindow(Task("binary", metric=metric), start=-1.0)
        w.add(received, overconfident, calibrated, y, stable)
        said[metric] = w.result()
    same, lo, hi = said["accuracy"]
    assert same == 0.0 and lo < 0.0 < hi  # (the same answers: no difference at all)
    difference, lower, upper = said["logloss"]
    assert upper < -0.5  # (surely worse: more than half again stable's log loss)
    assert lower <= difference <= upper


def test_a_metric_the_task_cannot_count_is_refused() -> None:
    with pytest.raises(ValueError, match="squaredError is not one of a binary model's"):
        Task("binary", metric="squaredError")
    with pytest.raises(ValueError, match="logloss is not one of a regression model's"):
        Task("regression", metric="logloss")
