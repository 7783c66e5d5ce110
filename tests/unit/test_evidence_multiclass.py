"""The common window of a multiclass model: each candidate's (n, k) answers kept, the paired
difference of correctness in accuracy points, the majority class as the constant; binary and
regression as they were."""

from __future__ import annotations

import numpy as np
import pytest

from tideline.evidence import CommonWindow, Constant
from tideline.tasks import Task

TASK = Task("multiclass", ("cat", "dog", "fox", "owl"))


class Answers:
    """A candidate that answers class ``(y + shift) % 4`` where ``right`` says it is right
    (the rows are the labels, for the test), with probability ``top`` on its answer."""

    schema = None

    def __init__(self, right: np.ndarray, shift: int = 1, top: float = 0.7) -> None:
        self.right, self.shift, self.top, self.seen = right, shift, top, 0

    def predict_many(self, rows: list) -> np.ndarray:
        y = np.array([r["y"] for r in rows], dtype=np.intp)
        right = self.right[self.seen : self.seen + len(rows)]
        self.seen += len(rows)
        answer = np.where(right, y, (y + self.shift) % 4)
        p = np.full((len(rows), 4), (1.0 - self.top) / 3)
        p[np.arange(len(rows)), answer] = self.top
        return p


def _window(n: int, a_right: np.ndarray, b_right: np.ndarray, seed: int = 0):
    """A window of n labelled rows scored by a and b (added first, so each scores each row once)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=n).astype(float)
    w = CommonWindow(TASK, size=n)
    w.add_candidate("a", Answers(a_right))
    w.add_candidate("b", Answers(b_right, shift=2))
    w.add_samples([{"y": v} for v in y.tolist()], y)
    return w, y


def test_each_candidate_is_scored_on_its_class_probabilities_and_compared_by_correctness() -> None:
    rng = np.random.default_rng(1)
    a_right, b_right = rng.random(3000) < 0.8, rng.random(3000) < 0.7
    w, y = _window(3000, a_right, b_right)
    assert w.score("a")["accuracy"] == pytest.approx(a_right.mean())
    assert w.score("a")["logloss"] == pytest.approx(
        -(a_right * np.log(0.7) + ~a_right * np.log(0.1)).mean()
    )
    assert len(w.score("b")["recall"]) == 4
    pair = w.compare("a", "b")
    # correct a - correct b per sample, its mean the difference of the accuracies
    assert pair.n == 3000 and pair.mean == pytest.approx(a_right.mean() - b_right.mean())
    diff, lo, hi = w.relative(pair)
    assert diff == pair.mean and (lo, hi) == pair.interval(), "accuracy points, as binary's"
    assert lo > 0, "a 10-point better version is proven on 3,000 samples"
    assert w.compare("b", "a").interval()[1] < 0


def test_two_versions_that_answer_the_same_classes_differ_by_nothing() -> None:
    right = np.random.default_rng(2).random(500) < 0.6
    w = CommonWindow(TASK, size=500)
    w.add_candidate("a", Answers(right, top=0.9))
    w.add_candidate("b", Answers(right, top=0.4))  # other probabilities, the same answers
    y = np.random.default_rng(3).integers(0, 4, size=500).astype(float)
    w.add_samples([{"y": v} for v in y.tolist()], y)
    pair = w.compare("a", "b")
    assert (pair.mean, pair.variance) == (0.0, 0.0)


def test_the_constant_of_a_multiclass_window_answers_its_majority_class() -> None:
    y = np.array([2.0, 0.0, 2.0, 1.0, 2.0, 3.0])
    c = Constant.best(TASK, y)
    np.testing.assert_array_equal(c.predict_many([{}] * 2), [[0, 0, 1, 0], [0, 0, 1, 0]])
    w = CommonWindow(TASK, size=10)
    w.add_samples([{}] * 6, y)
    w.add_candidate(("constant",), c)
    assert w.score(("constant",))["accuracy"] == pytest.approx(0.5)
    assert w.score(("constant",))["recall"] == [0.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize(
    ("task", "y", "value"),
    [("binary", [1.0, 0.0, 1.0], 1.0), ("binary", [0.0, 0.0, 1.0], 0.0), ("binary", [], 1.0),
     ("regression", [1.0, 2.0, 6.0], 3.0), ("regression", [], 0.5)],
    ids=["binary: the majority class 1", "binary: the majority class 0",
         "binary, no label yet: 1 (as the monitor always answered)", "regression: the mean",
         "regression, no label yet: 0.5"],
)  # fmt: skip
def test_the_constant_of_binary_and_regression_is_what_it_was(task, y, value) -> None:
    c = Constant.best(Task(task), np.array(y))
    assert c.value == value
    np.testing.assert_array_equal(c.predict_many([{}] * 3), np.full(3, value))


def test_binary_and_regression_windows_take_the_task_s_name_as_before() -> None:
    w = CommonWindow("binary", size=4)
    w.add_samples([{}] * 4, np.array([1.0, 1.0, 0.0, 1.0]))
    w.add_candidate("one", Constant(1.0))
    w.add_candidate("zero", Constant(0.0))
    assert w.compare("one", "zero").mean == 0.5 and w.relative(w.compare("one", "zero"))[0] == 0.5
    r = CommonWindow(Task("regression"), size=4)
    r.add_samples([{}] * 2, np.array([1.0, 3.0]))
    r.add_candidate("two", Constant(2.0))
    r.add_candidate("zero", Constant(0.0))
    pair = r.compare("two", "zero")  # squared errors 1, 1 against 1, 9: 4 less, of 5
    assert r.relative(pair)[0] == pytest.approx(4.0 / 5.0)


def test_a_multiclass_window_needs_the_classes() -> None:
    with pytest.raises(ValueError, match="classes"):
        CommonWindow("multiclass", size=10)
