"""River estimators (classifiers, regressors, pipelines) under the learner contract.

``algorithm: river`` with ``spec.model.river.pipeline: "teams.fraud:make"``: the
function is called with ``river.params`` and returns the estimator. Rows reach it as
dicts, one at a time (``learn_one``, ``predict_proba_one`` / ``predict_one``), as River
learns; binary labels as ``True``/``False``. The state is the estimator pickled (River's
own way to persist a model); tideline signs every version, and verifies it before it is
unpickled.

A multiclass model (``task: multiclass``) is a River classifier of many classes (one whose
``_multiclass`` is true: ``tree.HoeffdingTreeClassifier``, or a binary one inside
``multiclass.OneVsRestClassifier``) and learns and predicts the class **names** of
``spec.model.classes``, River's own shape: ``learn_one(x, "cat")``, and
``predict_proba_one(x)`` -> ``{"cat": 0.7, "dog": 0.3}``, read into one column per class in
the classes' order. A class it has not seen yet is 0, and each row is scaled to sum to 1
(before it learned anything: every class alike).

River is an extra (``pip install tideline[river]``): not in the runtime image; a team's
image built ``FROM`` it adds it.

Examples
--------
>>> from river import linear_model
>>> from tideline.spec import Feature
>>> m = RiverModel(ModelInfo("binary", (Feature("x"),)), linear_model.LogisticRegression())
>>> m.learn([{"x": 1.0}, {"x": -1.0}] * 50, np.array([1.0, 0.0] * 50))
>>> bool(m.predict([{"x": 2.0}])[0] > 0.5)
True
>>> from river import multiclass
>>> info = ModelInfo("multiclass", (Feature("x"),), ("lo", "mid", "hi"))
>>> m = RiverModel(info, multiclass.OneVsRestClassifier(linear_model.LogisticRegression()))
>>> m.predict([{"x": 0.0}]).tolist()
[[0.3333333333333333, 0.3333333333333333, 0.3333333333333333]]
>>> m.learn([{"x": -1.0}, {"x": 1.0}] * 50, np.array([0.0, 2.0] * 50))
>>> m.predict([{"x": 2.0}]).round(2).tolist()  # ("mid" never seen: 0)
[[0.29, 0.0, 0.71]]
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
from river import base as river_base

from tideline.model import ModelInfo, OnlineLearner


class RiverModel(OnlineLearner):
    """One River estimator, learning and predicting a row at a time."""

    rows = "dicts"

    def __init__(self, info: ModelInfo, estimator: Any) -> None:
        if info.task == "binary" and not isinstance(estimator, river_base.Classifier):
            raise TypeError(f"a binary model needs a River classifier (got "
                            f"{type(estimator).__name__})")  # fmt: skip
        if info.task == "regression" and not isinstance(estimator, river_base.Regressor):
            raise TypeError(f"a regression model needs a River regressor (got "
                            f"{type(estimator).__name__})")  # fmt: skip
        if info.task == "multiclass" and not (
            isinstance(estimator, river_base.Classifier) and estimator._multiclass
        ):
            raise TypeError(f"a multiclass model needs a River classifier of many classes (got "
                            f"{type(estimator).__name__}; a binary one goes inside "
                            "river.multiclass.OneVsRestClassifier)")  # fmt: skip
        self.info, self.estimator = info, estimator
        self._binary = info.task == "binary"
        self._classes = info.classes  # (multiclass: the names River learns and predicts)

    def _score(self, x: dict[str, Any]) -> float:
        if not self._binary:
            return float(self.estimator.predict_one(x) or 0.0)
        proba = self.estimator.predict_proba_one(x)
        if True in proba:
            return float(proba[True])
        return 1.0 - float(proba.get(False, 0.5))  # (nothing learned yet: {})

    def _probabilities(self, x: dict[str, Any]) -> list[float]:
        """A multiclass row: each class's probability, in the classes' order (not scaled)."""
        proba = self.estimator.predict_proba_one(x)
        return [proba.get(c, 0.0) for c in self._classes or ()]

    def _labels(self, y: np.ndarray) -> list[Any]:
        if self._classes is not None:
            names = self._classes
            return [names[int(v)] for v in y.tolist()]
        return [v == 1.0 for v in y.tolist()] if self._binary else y.tolist()

    def learn(self, X: Sequence[dict[str, Any]], y: np.ndarray) -> None:
        learn_one = self.estimator.learn_one
        for x, label in zip(X, self._labels(y), strict=True):
            learn_one(x, label)

    def predict(self, X: Sequence[dict[str, Any]]) -> np.ndarray:
        if self._classes is not None:
            return _scaled([self._probabilities(x) for x in X], len(self._classes))
        return np.array([self._score(x) for x in X], dtype=np.float64)

    def learn_predict(self, X: Sequence[dict[str, Any]], y: np.ndarray) -> np.ndarray:
        learn_one, out = self.estimator.learn_one, []
        if self._binary:  # (the common case inlined: this loop is the learner's whole cost)
            proba_one = self.estimator.predict_proba_one
            for x, label in zip(X, self._labels(y), strict=True):
                proba = proba_one(x)
                out.append(proba[True] if True in proba else 1.0 - proba.get(False, 0.5))
                learn_one(x, label)
        elif self._classes is not None:
            probabilities = self._probabilities
            for x, label in zip(X, self._labels(y), strict=True):
                out.append(probabilities(x))
                learn_one(x, label)
            return _scaled(out, len(self._classes))
        else:
            score = self._score
            for x, label in zip(X, y.tolist(), strict=True):
                out.append(score(x))
                learn_one(x, label)
        return np.array(out, dtype=np.float64)

    def save(self) -> bytes:
        return pickle.dumps(self.estimator, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self, state: bytes) -> None:
        self.estimator = pickle.loads(state)  # noqa: S301 - verified first (tideline.signing)


def _scaled(rows: list[Any], k: int) -> np.ndarray:
    """Rows of class probabilities as an ``(n, k)`` array, each scaled to sum to 1; a row of
    nothing (a model that learned nothing yet) every class alike."""
    p = np.array(rows, dtype=np.float64).reshape(len(rows), k)
    total = p.sum(axis=1, keepdims=True)
    empty = (total <= 0.0)[:, 0]
    p[empty], total[empty] = 1.0, k
    return p / total
