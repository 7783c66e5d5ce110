"""Prequential (test-then-train) evaluation and rolling-window quality metrics.

Every sample is predicted before it is learned, so the metric is an honest
estimate of what a served model scores on data it has not seen. Metrics are
computed over a bounded rolling window: accuracy, log-loss and expected
calibration error for ``binary``; MAE and RMSE for ``regression``; for
``multiclass`` (predictions ``(n, k)``, labels the class indices) accuracy,
log-loss, the calibration error of the top class and each class's recall.

Examples
--------
>>> import numpy as np
>>> m = RollingMetrics("binary", window=4)
>>> m.update(np.array([0.9, 0.2, 0.7, 0.4, 0.8]), np.array([1, 0, 0, 0, 1]))
>>> round(m.report()["accuracy"], 2), m.report()["count"]
(0.75, 4)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_P_CLIP = 1e-7


def ramp_size(n_seen: int, batch_size: int) -> int:
    """The next mini-batch size for a learner that has seen ``n_seen`` samples.

    A fresh model learns its first samples one by one and doubles its batch
    (1, 2, 4, ...) until it reaches ``spec.learning.batchSize``: otherwise the
    first 64 predictions of a stream are made by an untrained model, which
    costs a short stream (River's Phishing, 1,250 rows) a point and a half of
    accuracy. Derived from ``n_seen`` alone, so a restart keeps the schedule.

    >>> [ramp_size(n, 8) for n in (0, 1, 3, 7, 15, 1000)]
    [1, 2, 4, 8, 8, 8]
    """
    return min(batch_size, 1 << (n_seen + 1).bit_length() - 1)


def log_loss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row's log loss: of the probability of class 1 (``p`` of shape ``(n,)``, 0/1
    labels), or of the label's probability (``(n, k)``, class indices)."""
    if p.ndim == 2:
        mine = p[np.arange(len(y)), y.astype(np.intp)]
        return -np.log(np.clip(mine, _P_CLIP, 1.0))
    p = np.clip(p, _P_CLIP, 1.0 - _P_CLIP)
    return -(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))


def calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins."""
    if len(p) == 0:
        return 0.0
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    conf = np.bincount(idx, weights=p, minlength=bins)
    hits = np.bincount(idx, weights=y, minlength=bins)
    return float(np.abs(conf - hits).sum() / len(p))


def auc(p: np.ndarray, y: np.ndarray) -> float | None:
    """The area under the ROC curve of scores ``p`` for labels ``y`` (0/1): the chance a
    positive scores above a negative, ties counting half (the Mann-Whitney U over average
    ranks); None without both classes.

    >>> auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    >>> auc(np.array([0.5, 0.5]), np.array([0, 1])), auc(np.array([0.2]), np.array([1]))
    (0.5, None)
    """
    pos = y >= 0.5
    n1 = int(pos.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return None
    _, where, counts = np.unique(p, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[where]  # (1-based, ties averaged)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def recall(p: np.ndarray, y: np.ndarray) -> list[float | None]:
    """Each class's recall (the share of its rows predicted as it), by class index; None for a
    class with no rows.

    >>> recall(np.array([[0.8, 0.2, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0]]), np.array([0, 1, 1]))
    [1.0, 0.5, None]
    """
    k = p.shape[1]
    y = y.astype(np.intp)
    rows = np.bincount(y, minlength=k)
    hits = np.bincount(y[p.argmax(axis=1) == y], minlength=k)
    return [float(h / r) if r else None for h, r in zip(hits.tolist(), rows.tolist(), strict=True)]


def scores(task: str, p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Quality of predictions ``p`` against labels ``y`` (no window).

    >>> s = scores("multiclass", np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]), np.array([0, 1]))
    >>> s["accuracy"], round(s["logloss"], 3), s["recall"]
    (0.5, 0.78, [1.0, 0.0, None])
    """
    n = len(y)
    if n == 0:
        return {"count": 0}
    if task == "multiclass":
        top = p.argmax(axis=1)
        hit = (top == y).astype(np.float64)
        return {
            "count": n,
            "accuracy": float(np.mean(hit)),
            "logloss": float(np.mean(log_loss(p, y))),
            "calibration": calibration_error(p[np.arange(n), top], hit),
            "recall": recall(p, y),
        }
    if task == "binary":
        out = {
            "count": n,
            "accuracy": float(np.mean((p >= 0.5) == (y >= 0.5))),
            "logloss": float(np.mean(log_loss(p, y))),
            "calibration": calibration_error(p, y),
            # what a click-through team reads: the rate predicted against the rate observed
            "mean_predicted": float(np.mean(p)),
            "mean_observed": float(np.mean(y)),
        }
        area = auc(p, y)
        if area is not None:
            out["auc"] = area
        return out
    err = p - y
    mse = float(np.mean(err**2))
    out = {"count": n, "mae": float(np.mean(np.abs(err))), "rmse": math.sqrt(mse)}
    # the squared error relative to the best constant's (the labels' mean, whose is their
    # variance): 1 - R^2, below 1 where the model beats a constant
    variance = float(np.var(y))
    if variance > 0.0:
        out["relative_mse"] = mse / variance
    return out


class RollingMetrics:
    """Metrics over the last ``window`` (prediction, label) pairs, in a ring buffer;
    ``n_classes``: the number of classes of a multiclass task (predictions ``(n, k)``)."""

    def __init__(self, task: str, window: int = 1000, n_classes: int = 0) -> None:
        if (task == "multiclass") != (n_classes >= 2):
            raise ValueError(f"n_classes: 2 or more with task multiclass, 0 with {task} "
                             f"(got {n_classes})")  # fmt: skip
        self.task = task
        self.window = window
        self._p = np.zeros((window, n_classes) if n_classes else window)
        self._y = np.zeros(window)
        self._pos = 0
        self._full = False
        self.total = 0

    def update(self, p: np.ndarray, y: np.ndarray) -> None:
        p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
        self.total += len(p)
        if len(p) >= self.window:
            p, y = p[-self.window :], y[-self.window :]
        slots = (self._pos + np.arange(len(p))) % self.window
        self._p[slots] = p
        self._y[slots] = y
        end = self._pos + len(p)
        self._full = self._full or end >= self.window
        self._pos = end % self.window

    def labels(self) -> np.ndarray:
        """The labels in the window (in slot order)."""
        return self._y[: self.window if self._full else self._pos]

    def report(self) -> dict[str, Any]:
        n = self.window if self._full else self._pos
        return scores(self.task, self._p[:n], self._y[:n])


def prequential(
    learner: Any, X: np.ndarray, y: np.ndarray, batch_size: int = 64, ramp: bool = True
) -> np.ndarray:
    """Test-then-train over a stream; returns the prediction made for every row before learning it
    (``(n, k)`` for a multiclass learner)."""
    k = getattr(learner, "n_classes", 0)
    preds = np.empty((len(y), k) if k else len(y))
    i = 0
    while i < len(y):
        j = min(i + (ramp_size(i, batch_size) if ramp else batch_size), len(y))
        preds[i:j] = learner.predict_many(X[i:j])
        learner.learn_many(X[i:j], y[i:j])
        i = j
    return preds
