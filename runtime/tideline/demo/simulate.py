"""Seeded synthetic streams for any OnlineModel's features, with concept drift.

Numeric features are Gaussian around their default, categorical ones draw
from 200 values with a Zipf-like skew (a few merchants or sites dominate, as
in real traffic). The label follows a random concept: a linear score on the
numeric features, one effect per categorical value, and one interaction, so
a forest has something a linear model cannot find. At ``drift_at`` the
concept is replaced by another (abrupt concept drift): a new random one, or
with ``same_difficulty`` the old one's effects shuffled and their signs
flipped at random, so the new world is as learnable as the old (a recovery
can then be measured against the accuracy before the drift).

A ``multiclass`` stream has one such concept per class (``classes``: how
many); a row's label is the class whose score, plus Gumbel noise, is
highest (a softmax draw), its index as a float.

Examples
--------
>>> s = SyntheticStream([{"name": "a", "type": "numeric"},
...                      {"name": "c", "type": "categorical"}], "binary", seed=3)
>>> rows, y = s.take(4)
>>> sorted(rows[0]), set(y.tolist()) <= {0.0, 1.0}
(['a', 'c'], True)
>>> s = SyntheticStream([{"name": "a"}, {"name": "b"}], "multiclass", classes=3, seed=3)
>>> sorted(set(s.take(300)[1].tolist()))
[0.0, 1.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_CATEGORIES = 200


class SyntheticStream:
    def __init__(
        self,
        features: Sequence[Mapping[str, Any]],
        task: str = "binary",
        *,
        seed: int = 0,
        drift_at: int | None = None,
        noise: float = 0.1,
        same_difficulty: bool = False,
        classes: int = 0,
    ) -> None:
        if (task == "multiclass") != (classes >= 2):
            raise ValueError(f"classes: 2 or more with task multiclass, 0 with {task}")
        self.classes = classes
        self.same_difficulty = same_difficulty
        self.features = [dict(f) for f in features]
        self.task = task
        self.drift_at = drift_at
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.seen = 0
        self.num = [f["name"] for f in self.features if f.get("type", "numeric") == "numeric"]
        self.cat = [f["name"] for f in self.features if f.get("type") == "categorical"]
        self.centre = np.array(
            [float(f.get("default") or 0.0) for f in self.features if f["name"] in self.num]
        )
        self.scale = np.maximum(np.abs(self.centre) * 0.5, 1.0)
        p = 1.0 / np.arange(1, _CATEGORIES + 1)
        self.cat_p = p / p.sum()
        self.concepts = [self._concept() for _ in range(max(classes, 1))]

    @property
    def concept(self) -> dict[str, Any]:
        """The concept of a binary or regression stream (a multiclass one has one a class)."""
        return self.concepts[0]

    def _concept(self) -> dict[str, Any]:
        r = self.rng
        return {
            "w": r.normal(0, 1.0, size=len(self.num)),
            "cat": r.normal(0, 0.7, size=(len(self.cat), _CATEGORIES)),
            "bias": r.normal(0, 0.3),
            "pair": r.normal(0, 1.0),
        }

    def _shuffled(self, c: dict[str, Any]) -> dict[str, Any]:
        """The same effects, moved to other features and categories, signs flipped at random."""
        r = self.rng
        w = r.permutation(c["w"]) * r.choice([-1.0, 1.0], size=len(c["w"]))
        cat = np.array([r.permutation(row) for row in c["cat"]]).reshape(c["cat"].shape)
        return {"w": w, "cat": -cat, "bias": -c["bias"], "pair": -c["pair"]}

    def take(self, n: int) -> tuple[list[dict[str, Any]], np.ndarray]:
        """The next ``n`` rows (dicts) and their labels."""
        X, C, y = self.take_arrays(n)
        rows = []
        for i in range(n):
            row: dict[str, Any] = dict(zip(self.num, X[i].tolist(), strict=True))
            for j, name in enumerate(self.cat):
                row[name] = f"{name}-{C[i, j]}"
            rows.append(row)
        return rows, y

    def take_arrays(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next ``n`` rows as (numeric matrix, category indices, labels)."""
        r = self.rng
        Z = r.normal(size=(n, len(self.num)))
        X = self.centre + Z * self.scale
        C = r.choice(_CATEGORIES, size=(n, len(self.cat)), p=self.cat_p)
        y = np.empty(n)
        start = 0
        while start < n:
            end = n
            if self.drift_at is not None and self.seen < self.drift_at < self.seen + n - start:
                end = start + (self.drift_at - self.seen)
            y[start:end] = self._label(Z[start:end], C[start:end])
            self.seen += end - start
            if self.drift_at is not None and self.seen == self.drift_at:
                self.concepts = [self._shuffled(c) if self.same_difficulty else self._concept()
                                 for c in self.concepts]  # fmt: skip
            start = end
        return X, C, y

    def _score(self, c: dict[str, Any], Z: np.ndarray, C: np.ndarray) -> np.ndarray:
        score = Z @ c["w"] + c["bias"]
        for j in range(C.shape[1]):
            score += c["cat"][j, C[:, j]]
        if Z.shape[1] >= 2:
            score += c["pair"] * Z[:, 0] * Z[:, 1]
        return score

    def _label(self, Z: np.ndarray, C: np.ndarray) -> np.ndarray:
        if self.classes:  # a softmax draw over the classes' scores (sharpened as binary's is)
            scores = np.stack([3.0 * self._score(c, Z, C) for c in self.concepts], axis=1)
            scores += self.rng.gumbel(size=scores.shape)
            return scores.argmax(axis=1).astype(float)
        score = self._score(self.concept, Z, C)
        score += self.rng.normal(0, self.noise, size=len(score))
        if self.task == "binary":
            return (self.rng.random(len(score)) < 1.0 / (1.0 + np.exp(-3.0 * score))).astype(float)
        return score
