"""Which labels judge the versions, and what they bring to the evidence.

The labels of served predictions (feedback) judge when there are any; a model that
gets none for ``FEEDBACK_QUIET`` seconds (learner-only) is judged on its labelled
samples, which the served version scores. Next to feedback, samples are training
data only: a producer that sends wrong labels through ``:learn`` must not read as
the model failing. What the judging labels bring to the common window (their rows,
targets and arrivals) waits here until the monitor hands it to
:class:`tideline.monitoring.candidates.Candidates` (once a read: the window scores each
candidate on a block); feedback's lag after its predictions goes to the summary.

Pure: the monitor (:class:`tideline.pods.monitor.Monitor`) reads the labels and
hands them in with the time; nothing here reads a clock or the network.

Examples
--------
>>> import numpy as np
>>> from tideline.monitoring.tracks import Labelled
>>> judging = Judging()
>>> judging.by_feedback(now=100.0)  # none yet: the samples judge
False
>>> judging.feedback(Labelled([{"x": 1.0}], np.array([1.0]), [100.0]), ts=98.0)
>>> judging.by_feedback(now=130.0), judging.by_feedback(now=161.0)
(True, False)
>>> rows, y, arrived = judging.take()
>>> rows, y.tolist(), arrived.tolist(), judging.lags.summary().p50
([{'x': 1.0}], [1.0], [100.0], 2.0)

With ``labelDefault`` (``after`` 5 s), a click is learned when its prediction is 5 s old:

>>> judging = Judging(after=5.0)
>>> judging.feedback(Labelled([{"x": 1.0}], np.array([1.0]), [100.0]), ts=98.0)
>>> judging.take()[2].tolist(), judging.last_feedback
([103.0], 100.0)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tideline import predlog, samples
from tideline.monitoring.summary import LabelLags
from tideline.monitoring.tracks import Labelled
from tideline.tasks import Task

FEEDBACK_QUIET = 60.0  # seconds without feedback before labelled samples judge versions


class Judging:
    """The time of the newest feedback, its lags, and the evidence's pending samples."""

    def __init__(self, quiet: float = FEEDBACK_QUIET, after: float = 0.0) -> None:
        self.quiet = quiet
        # spec.learning.labelDefault's 'after' (0: none): a label is learned when its
        # prediction is that old, with the defaults of its time, not when it came
        self.after = after
        self.last_feedback = -math.inf  # when the newest feedback label arrived
        self.lags = LabelLags()
        self._rows: list[dict[str, Any]] = []
        self._y: list[float] = []
        # when each label could be learned (it came, or its prediction became mature): a
        # version is scored on the samples after the newest it learned (out of sample)
        self._t: list[float] = []

    def by_feedback(self, now: float) -> bool:
        """Feedback came within ``quiet`` seconds: it alone judges (samples are training
        data)."""
        return now - self.last_feedback <= self.quiet

    def feedback(self, got: Labelled, ts: float) -> None:
        """Feedback on a logged request made at ``ts``: its labelled rows to the evidence.

        With a default label, a label's time for the evidence is when its prediction became
        mature (``ts + after``), as a version's ``learnedUntil`` counts it: the learner
        learns a click then, with its time's defaults. Taken at its arrival, a click came
        seconds before its defaults (``ts + after``); a version published meanwhile had
        learned neither, but was scored on the defaults alone - 0s only, for ``after``
        seconds of predictions - and one more prone to answer 1 than lastGood lost to it
        by 0.23 in a stationary clicks-only run: a rollback.
        """
        if not len(got.y):
            return
        came = got.arrived
        self._add(got.rows, got.y.tolist(),
                  [max(t, ts + self.after) for t in came] if self.after else came)  # fmt: skip
        self.last_feedback = max(self.last_feedback, *got.arrived)
        self.lags.add(ts, got.arrived)

    def samples(self, rows: list[dict[str, Any]], y: list[float], arrived: list[float]) -> None:
        """Labelled samples the served version scored (while no feedback judges)."""
        self._add(rows, y, arrived)

    def _add(self, rows: list[dict[str, Any]], y: list[float], arrived: list[float]) -> None:
        self._rows += rows
        self._y += y
        self._t += arrived

    def take(self) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray] | None:
        """The evidence's samples since the last take (rows, targets, arrivals), and let go;
        None when there are none."""
        if not self._rows:
            return None
        got = self._rows, np.array(self._y), np.array(self._t)
        self._rows, self._y, self._t = [], [], []
        return got


def labelled_samples(
    task: Task, entries: list[tuple[bytes, dict[bytes, bytes]]]
) -> tuple[list[dict[str, Any]], list[float], list[float]]:
    """The rows, targets and arrivals of ``samples`` stream entries (a sample's label arrived
    with it; a label the task refuses is left out, :func:`tideline.samples.rows_of`).

    >>> entries = [(b"1000-0", {b"data": samples.pack([{"x": 1}], [1.0])}),
    ...            (b"3000-0", {b"data": samples.pack([{"x": 2}, {"x": 3}], [0.0, "no"])})]
    >>> labelled_samples(Task("binary"), entries)
    ([{'x': 1}, {'x': 2}], [1.0, 0.0], [1.0, 3.0])
    """
    rows: list[dict[str, Any]] = []
    labels: list[float] = []
    arrived: list[float] = []
    for entry in entries:
        got, ys = samples.rows_of([entry], task)
        rows += got
        labels += ys
        arrived += [predlog.entry_seconds(entry[0])] * len(got)
    return rows, labels, arrived
