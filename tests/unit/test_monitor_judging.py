"""Which labels judge the versions, without Redis (:mod:`tideline.monitoring.judging`): feedback while it
flows, labelled samples after a quiet minute; what they bring to the evidence, and when."""

from __future__ import annotations

import numpy as np
import pytest

from tideline import samples
from tideline.monitoring.judging import FEEDBACK_QUIET, Judging, labelled_samples
from tideline.monitoring.tracks import Labelled
from tideline.tasks import Task


def _feedback(arrived: list[float]) -> Labelled:
    n = len(arrived)
    return Labelled([{"x": float(i)} for i in range(n)], np.ones(n), arrived)


@pytest.mark.parametrize(
    ("arrivals", "now", "by_feedback"),
    [([], 0.0, False), ([[100.0]], 100.0 + FEEDBACK_QUIET, True),
     ([[100.0]], 100.1 + FEEDBACK_QUIET, False), ([[100.0, 150.0], [120.0]], 200.0, True),
     ([[150.0], [100.0]], 150.0 + FEEDBACK_QUIET, True)],
    ids=["no feedback yet: the samples judge", "feedback a quiet minute ago: it still judges",
         "nothing for longer than a quiet minute: the samples judge again",
         "the newest label of any request counts",
         "a late label of an older request does not move the time back"],
)  # fmt: skip
def test_feedback_judges_while_it_flows_and_samples_after_a_quiet_minute(
    arrivals: list[list[float]], now: float, by_feedback: bool
) -> None:
    judging = Judging()
    for arrived in arrivals:
        judging.feedback(_feedback(arrived), ts=90.0)
    assert judging.by_feedback(now) is by_feedback


def test_the_evidence_gets_the_judging_labels_once_in_the_order_they_came() -> None:
    judging = Judging()
    assert judging.take() is None, "nothing yet"
    judging.feedback(_feedback([10.0, 11.0]), ts=9.0)
    judging.samples([{"x": 7.0}], [0.0], [12.0])
    judging.feedback(Labelled(bad=2), ts=9.0)  # (labels that were no targets: nothing)
    got = judging.take()
    assert got is not None
    rows, y, arrived = got
    assert (rows, y.tolist(), arrived.tolist()) == (
        [{"x": 0.0}, {"x": 1.0}, {"x": 7.0}], [1.0, 1.0, 0.0], [10.0, 11.0, 12.0],
    )  # fmt: skip
    assert judging.take() is None, "taken: nothing is handed twice"


def test_samples_do_not_count_as_feedback_nor_as_its_lag() -> None:
    judging = Judging()
    judging.samples([{"x": 7.0}], [0.0], [12.0])
    assert not judging.by_feedback(12.0)
    assert judging.lags.summary() is None
    judging.feedback(_feedback([12.0, 16.0]), ts=10.0)
    lag = judging.lags.summary()
    assert lag is not None and lag.p50 == 4.0


@pytest.mark.parametrize(
    ("task", "labels", "rows", "targets"),
    [(Task("binary"), [1.0, 0.0], 2, [1.0, 0.0]),
     (Task("multiclass", ("cat", "dog")), ["dog", "eel"], 1, [1.0]),
     (Task("regression"), [2.5, float("inf")], 1, [2.5])],
    ids=["binary: every sample", "multiclass: a label that is no class left out",
         "regression: a label that is no finite number left out"],
)  # fmt: skip
def test_labelled_samples_arrive_with_their_entry(
    task: Task, labels: list[object], rows: int, targets: list[float]
) -> None:
    entries = [(b"4000-0", {b"data": samples.pack([{"x": 1}, {"x": 2}], labels)}),
               (b"6500-1", {b"data": samples.pack([{"x": 3}], [labels[0]])})]  # fmt: skip
    got_rows, got_targets, arrived = labelled_samples(task, entries)
    assert len(got_rows) == rows + 1
    assert got_targets == [*targets, targets[0]]
    assert arrived == [4.0] * rows + [6.5]
