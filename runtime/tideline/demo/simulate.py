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

Examples
--------
>>> s = SyntheticStream([{"name": "a", "type": "numeric"},
...                      {"name": "c", "type": "categorical"}], "binary", seed=3)
>>> rows, y = s.take(4)
>>> sorted(rows[0]), set(y.tolist()) <= {0.0, 1.0}
(['a', 'c'], True)
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
    ) -> None:
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
        self.concept = self._concept()

    def _concept(self) -> dict[str, Any]:
        r = self.rng
        return {
            "w": r.normal(0, 1.0, size=len(self.num)),
            "cat": r.normal(0, 0.7, size=(len(self.cat), _CATEGORIES)),
            "bias": r.normal(0, 0.3),
            "pair": r.normal(0, 1.0),
        }

    def _shuffled(self) -> dict[str, Any]:
        """The same effects, moved to other features and categories, signs flipped at random."""
        r, c = self.rng, self.concept
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
                self.concept = self._shuffled() if self.same_difficulty else self._concept()
            start = end
        return X, C, y

    def _label(self, Z: np.ndarray, C: np.ndarray) -> np.ndarray:
        c = self.concept
        score = Z @ c["w"] + c["bias"]
        for j in range(C.shape[1]):
            score += c["cat"][j, C[:, j]]
        if Z.shape[1] >= 2:
            score += c["pair"] * Z[:, 0] * Z[:, 1]
        score += self.rng.normal(0, self.noise, size=len(score))
        if self.task == "binary":
            return (self.rng.random(len(score)) < 1.0 / (1.0 + np.exp(-3.0 * score))).astype(float)
        return score
