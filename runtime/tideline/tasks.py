"""What a task means wherever a label or a score crosses a process: one object per model.

``binary`` (a probability of class 1 per row, labels 0/1 or booleans),
``regression`` (a value per row, labels numbers) and ``multiclass`` (a
probability per class per row, labels the class names of
``spec.model.classes``). The learner, the servers and the monitor ask the
model's :class:`Task` what a label is worth as a target, what a row's loss or
error is, and what a row's answer says; none of them tests the task's name.

Labels of a multiclass model are **class names** on every wire (a feedback
body, the ``samples`` and ``feedback`` streams, Kafka): a string is a class
name, a whole number is a class's index (``classes[i]``), anything else is
refused with the reason. Inside the loop a target is the class's index as a
float (the learners' arrays).

Examples
--------
>>> t = Task("multiclass", ("cat", "dog", "eel"))
>>> t.target("dog"), t.target(2), t.label(1.0)
(1.0, 2.0, 'dog')
>>> t.target("fox")
Traceback (most recent call last):
...
ValueError: 'fox' is not a class of this model (classes: cat, dog, eel)
>>> p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
>>> t.predicted(p).tolist(), t.wrong(p, np.array([0.0, 1.0])).tolist()
([0, 2], [0.0, 1.0])
>>> Task("binary").target(True), Task("regression").target(-2.5)
(1.0, -2.5)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tideline.algorithms.base import check_target, check_targets
from tideline.evaluate import log_loss

NAMES_SHOWN = 10  # class names an error lists at most
# what a comparison of two versions may count: a classifier's, a regression's
METRICS = {False: ("accuracy", "logloss"), True: ("squaredError",)}


@dataclass(frozen=True)
class Task:
    """A model's task (``spec.model.task``) and, for multiclass, its class names."""

    name: str
    classes: tuple[str, ...] | None = None
    # what a comparison of two versions counts (``spec.model.metric``; None: the task's
    # usual - accuracy for a classifier, the squared error for regression)
    metric: str | None = None
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.name == "multiclass") != (self.classes is not None):
            raise ValueError(f"classes: with task multiclass only, and required there "
                             f"(task {self.name}, classes {self.classes})")  # fmt: skip
        usual = "squaredError" if self.name == "regression" else "accuracy"
        metric = self.metric or usual
        if metric not in METRICS[self.name == "regression"]:
            raise ValueError(f"metric {metric} is not one of a {self.name} model's "
                             f"({', '.join(METRICS[self.name == 'regression'])})")  # fmt: skip
        object.__setattr__(self, "metric", metric)
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.classes or ())})

    @classmethod
    def of(cls, model: Any) -> Task:
        """The task of a ``spec.model`` (:class:`tideline.spec.ModelSpec`)."""
        return cls(model.task, model.classes, getattr(model, "metric", None))

    @property
    def relative(self) -> bool:
        """Whether a comparison is a relative reduction of a loss (log loss, squared error),
        not accuracy points."""
        return self.metric != "accuracy"

    @property
    def n_classes(self) -> int:
        """The number of classes (0 unless multiclass): the width of a row's scores."""
        return len(self.classes) if self.classes is not None else 0

    @property
    def multiclass(self) -> bool:
        return self.classes is not None

    @property
    def classifies(self) -> bool:
        """Whether a row's answer is right or wrong (binary, multiclass), not near or far."""
        return self.name != "regression"

    # -- labels ------------------------------------------------------------------------------
    def target(self, value: Any) -> float:
        """A label as a client or a stream gives it, as a target; ``ValueError`` saying why not."""
        if self.classes is None:
            if isinstance(value, str):
                raise ValueError(f"labels must be numbers (got the string {_short(value)})")
            return check_target(self.name, value)
        if isinstance(value, str):
            i = self._index.get(value)
            if i is None:
                raise ValueError(f"{_short(value)} is not a class of this model "
                                 f"(classes: {self._shown()})")  # fmt: skip
            return float(i)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"a label must be a class name or a class index "
                             f"(got {type(value).__name__})")  # fmt: skip
        if not (isinstance(value, int) or math.isfinite(value) and value == math.floor(value)):
            raise ValueError(f"a class index must be a whole number (got {value!r})")
        return check_target(self.name, value, self.n_classes)

    def targets(self, values: Iterable[Any], n: int = -1) -> np.ndarray:
        """Many labels as float64 targets (a class name mapped through the class table);
        ``ValueError`` for the first that is not one."""
        if self.classes is None:
            return check_targets(self.name, np.fromiter(values, np.float64, n))
        index, out = self._index, []
        for v in values:
            i = index.get(v) if isinstance(v, str) else None
            out.append(float(i) if i is not None else self.target(v))  # (unknown: raises)
        return np.asarray(out, dtype=np.float64)

    def label(self, y: float) -> str | float:
        """A target as a person reads it: the class name, or the number."""
        return self.classes[int(y)] if self.classes is not None else y

    def _shown(self) -> str:
        assert self.classes is not None
        shown = ", ".join(self.classes[:NAMES_SHOWN])
        more = len(self.classes) - NAMES_SHOWN
        return shown if more <= 0 else f"{shown} and {more} more"

    # -- scores --------------------------------------------------------------------------------
    def checked(self, scores: Any, n: int, probabilities: bool = True) -> np.ndarray:
        """``scores`` a model gave for ``n`` rows, as an array; ``ValueError`` saying why they
        are not this task's: not numbers, not its shape (``(n,)``; multiclass ``(n, k)``), not
        finite, or (``probabilities``) a classifier's probability outside [0, 1].

        >>> Task("multiclass", ("a", "b", "c")).checked([[0.2, 0.8]], 1)
        Traceback (most recent call last):
        ...
        ValueError: scores of shape (1, 2) for 1 rows (a multiclass model of 3 classes gives (1, 3))
        """
        try:
            p = np.asarray(scores, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"scores that are not numbers ({e})") from None
        want = self.rows(n)
        if p.shape != want:
            kind = f"multiclass model of {self.n_classes} classes" if self.multiclass else (
                f"{self.name} model")  # fmt: skip
            raise ValueError(f"scores of shape {p.shape} for {n} rows (a {kind} gives {want})")
        if not np.isfinite(p).all():
            raise ValueError("a score that is not finite")
        if probabilities and self.classifies and ((p < 0.0) | (p > 1.0)).any():
            raise ValueError("a probability outside [0, 1]")
        return p

    def predicted(self, p: np.ndarray) -> np.ndarray:
        """Each row's answer as a class (multiclass: its index; binary: 0/1); regression: the
        values as they are."""
        if self.classes is not None:
            return p.argmax(axis=1)
        if self.name == "binary":
            return (p >= 0.5).astype(np.int64)
        return p

    def wrong(self, p: np.ndarray, y: np.ndarray) -> np.ndarray:
        """1.0 where a classifier's answer is not the label, else 0.0 (regression: the squared
        error, the loss a paired comparison of values reads)."""
        if self.classes is not None:
            return (p.argmax(axis=1) != y).astype(np.float64)
        if self.name == "binary":
            return ((p >= 0.5) != (y >= 0.5)).astype(np.float64)
        return (p - y) ** 2

    def loss(self, p: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Each row's loss: log loss (binary, multiclass), squared error (regression)."""
        if self.name == "regression":
            return (p - y) ** 2
        return log_loss(p, y)

    def constant(self, y: np.ndarray) -> np.ndarray:
        """The best constant answer on labels ``y``, as one row's scores: the majority class
        (binary: 0 or 1; multiclass: its one-hot row), or the mean; by log loss, each class's
        share (binary: the positive rate).

        >>> Task("binary", metric="logloss").constant(np.array([1.0, 0.0, 0.0, 0.0])).tolist()
        0.25
        """
        if self.metric == "logloss":
            if self.classes is None:
                return np.array(float(np.mean(y)) if len(y) else 0.5)
            counts = np.bincount(y.astype(np.intp), minlength=self.n_classes).astype(np.float64)
            total = counts.sum()
            return counts / total if total else np.full(self.n_classes, 1.0 / self.n_classes)
        if self.classes is not None:
            row = np.zeros(self.n_classes)
            if len(y):
                row[int(np.bincount(y.astype(np.intp), minlength=self.n_classes).argmax())] = 1.0
            return row
        if self.name == "binary":
            return np.array(float(np.mean(y) >= 0.5) if len(y) else 0.0)
        return np.array(float(np.mean(y)) if len(y) else 0.0)

    def answer_of(self, value: Any) -> np.ndarray:
        """A fixed answer (``serving.fallback.value``) as one row's scores: a class name or index
        one-hot (multiclass), else the number."""
        if self.classes is not None:
            row = np.zeros(self.n_classes)
            row[int(self.target(value))] = 1.0
            return row
        return np.array(float(value))

    def rows(self, n: int) -> tuple[int, ...]:
        """The shape of ``n`` rows' scores."""
        return (n, self.n_classes) if self.classes is not None else (n,)


def _short(value: str, limit: int = 64) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")
