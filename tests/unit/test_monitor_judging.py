"""Which labels judge the versions, without Redis (:mod:`tideline.monitoring.judging`): feedback while it
flows, labelled samples after a quiet minute; what they bring to the evidence, and when."""

from __future__ import annotations

import numpy as np
import pytest

from tideline import samples
from tideline.evidence import CommonWindow, Constant
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


@pytest.mark.parametrize(
    ("after", "clicks"),
    [(0.0, 0.0), (5.0, 0.43)],
    ids=[
        "at their arrival a version published meanwhile is scored on the defaults alone",
        "at their predictions' maturity it is scored on the clicks and defaults of each time",
    ],
)
def test_a_clicks_only_label_is_out_of_sample_from_when_its_prediction_is_mature(
    after: float, clicks: float
) -> None:
    """labelDefault after 5 s: the learner learns a click and the defaults of its time when
    the prediction is 5 s old. A version that learned up to 100 s (the predictions up to
    95 s) is scored on the predictions after: taken at its arrival (0.5 s after its
    prediction), a click of one at 95-99.5 s looked learned, its defaults (at 100-104.5 s)
    did not."""
    rng = np.random.default_rng(0)
    judging = Judging(after=5.0) if after else Judging()
    for k in range(450):  # a request each 10 ms at 95-99.5 s, 96 rows, 43 % clicked
        ts = 95.0 + 0.01 * k
        y = (rng.random(96) < 0.43).astype(float)
        came = np.where(y == 1.0, ts + 0.5, ts + 5.0).tolist()
        judging.feedback(Labelled([{"x": 0.0}] * 96, y, came), ts)
    rows, y, t = judging.take()
    window = CommonWindow("binary", size=len(y))
    window.add_candidate("served", Constant(0.9), learned_until=100.0)
    window.add_samples(rows, y, t)
    assert window.score("served")["mean_observed"] == pytest.approx(clicks, abs=0.01)
