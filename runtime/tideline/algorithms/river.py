"""River estimators (classifiers, regressors, pipelines) under the learner contract.

``algorithm: river`` with ``spec.model.river.pipeline: "teams.fraud:make"``: the
function is called with ``river.params`` and returns the estimator. Rows reach it as
dicts, one at a time (``learn_one``, ``predict_proba_one`` / ``predict_one``), as River
learns; binary labels as ``True``/``False``. The state is the estimator pickled (River's
own way to persist a model); tideline signs every version, and verifies it before it is
unpickled.

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
        self.info, self.estimator = info, estimator
        self._binary = info.task == "binary"

    def _score(self, x: dict[str, Any]) -> float:
        if not self._binary:
            return float(self.estimator.predict_one(x) or 0.0)
        proba = self.estimator.predict_proba_one(x)
        if True in proba:
            return float(proba[True])
        return 1.0 - float(proba.get(False, 0.5))  # (nothing learned yet: {})

    def _labels(self, y: np.ndarray) -> list[Any]:
        return [v == 1.0 for v in y.tolist()] if self._binary else y.tolist()

    def learn(self, X: Sequence[dict[str, Any]], y: np.ndarray) -> None:
        learn_one = self.estimator.learn_one
        for x, label in zip(X, self._labels(y), strict=True):
            learn_one(x, label)

    def predict(self, X: Sequence[dict[str, Any]]) -> np.ndarray:
        return np.array([self._score(x) for x in X], dtype=np.float64)

    def learn_predict(self, X: Sequence[dict[str, Any]], y: np.ndarray) -> np.ndarray:
        learn_one, out = self.estimator.learn_one, []
        if self._binary:  # (the common case inlined: this loop is the learner's whole cost)
            proba_one = self.estimator.predict_proba_one
            for x, label in zip(X, self._labels(y), strict=True):
                proba = proba_one(x)
                out.append(proba[True] if True in proba else 1.0 - proba.get(False, 0.5))
                learn_one(x, label)
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
