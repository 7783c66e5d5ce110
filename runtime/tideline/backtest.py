"""A new revision against stable on labelled history, before it serves anyone.

While a new revision's learner catches up on the history (:mod:`tideline.pods.history`)
it predicts each row before it learns it (prequential, as it learns live). On the rows
of the last ``window`` seconds that the stable track answered, its predictions and the
ones stable served are paired the way the live analysis pairs a canary with stable
(:func:`tideline.evidence.paired_difference`, the same confidence sequence): the
operator's ``backtest`` step aborts a candidate that is surely worse by more than
``maxAccuracyDrop``, and lets any other go on to its live steps.

>>> from tideline.tasks import Task
>>> w = BacktestWindow(Task("binary"), start=100.0)
>>> y = np.array([1.0, 0.0, 1.0, 0.0])
>>> w.add(np.array([99.0, 101.0, 102.0, 103.0]), np.array([0.9, 0.8, 0.7, 0.2]),
...       np.array([0.9, 0.1, 0.8, 0.3]), y, np.array([True, True, True, False]))
>>> w.samples, [round(v, 3) for v in w.result()[:1]]
(2, [-0.5])
"""

from __future__ import annotations

import numpy as np

from tideline.evidence import Paired, in_units, paired_difference
from tideline.tasks import Task


class BacktestWindow:
    """The paired comparison of a candidate's prequential predictions with stable's served
    ones, on the rows whose label came after ``start`` (the window's beginning)."""

    def __init__(self, task: Task, start: float) -> None:
        self.task = task
        self.start = start
        self.pair = Paired()

    @property
    def samples(self) -> int:
        return self.pair.n

    def add(
        self,
        received: np.ndarray,
        candidate: np.ndarray,
        served: np.ndarray,
        y: np.ndarray,
        by_stable: np.ndarray,
    ) -> None:
        """Rows learned: when each label came, the candidate's prediction (by what it had
        learned when stable's was made: :mod:`tideline.pods.catchup`), what was served for it,
        its label, and whether the stable track served it."""
        keep = by_stable & (received > self.start)
        if keep.any():
            d, reference = paired_difference(self.task, candidate[keep], served[keep], y[keep])
            self.pair.update(d, reference)

    def result(self) -> tuple[float, float, float]:
        """The candidate's quality minus stable's, and its interval, in the task's decision
        units (accuracy points; for regression, the relative reduction of the squared error)."""
        return in_units(self.task, self.pair)
