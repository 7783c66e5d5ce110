"""Typed feature schema: rows (dicts) in, one float matrix out.

Rows arrive as dicts from HTTP bodies and stream entries; they become a numpy
matrix once, here, with one column per feature in the order of
``spec.model.features``. Numeric columns hold the raw value (the learner
standardises them online); categorical columns hold the hashed bucket index,
or ``-1`` when the value is missing and the feature has no default. Missing
and invalid values are counted per feature, never raised.

Examples
--------
>>> s = FeatureSchema.from_spec([{"name": "amount", "type": "numeric", "default": 1.0},
...                              {"name": "country", "type": "categorical", "buckets": 8}])
>>> X = s.encode([{"amount": 3.5, "country": "fr"}, {"country": "fr"}])
>>> X[:, 0].tolist(), bool(X[0, 1] == X[1, 1]), s.missing.tolist()
([3.5, 1.0], True, [1, 0])
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from tideline.spec import Feature


@lru_cache(maxsize=1 << 16)
def bucket_of(value: str, buckets: int) -> int:
    """Stable hash of a categorical value (crc32: the same on every replica and run).

    >>> bucket_of("fr", 1024) == bucket_of("fr", 1024), 0 <= bucket_of("x", 7) < 7
    (True, True)
    """
    return zlib.crc32(value.encode()) % buckets


@dataclass
class FeatureSchema:
    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        self.names = [f.name for f in self.features]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.numeric = np.array([f.type == "numeric" for f in self.features], dtype=bool)
        self.num_idx = np.flatnonzero(self.numeric)
        self.cat_idx = np.flatnonzero(~self.numeric)
        self.all_numeric = bool(self.numeric.all())
        self.buckets = np.array([f.buckets for f in self.features if f.type == "categorical"])
        self.cat_offsets = np.concatenate([[0], np.cumsum(self.buckets)[:-1]]).astype(np.int64)
        self.n_cat_total = int(self.buckets.sum()) if len(self.buckets) else 0
        self._defaults = np.array([self._default_value(f) for f in self.features], dtype=np.float64)
        self.missing = np.zeros(len(self.features), dtype=np.int64)
        self.invalid = np.zeros(len(self.features), dtype=np.int64)
        self.unknown_fields = 0

    @classmethod
    def from_spec(cls, features: Iterable[Feature | Mapping[str, Any]]) -> FeatureSchema:
        out = []
        for f in features:
            if isinstance(f, Feature):
                out.append(f)
            else:
                kw = dict(f)
                if kw.get("type", "numeric") == "categorical" and kw.get("default") is not None:
                    kw["default"] = str(kw["default"])
                out.append(Feature(**kw))
        return cls(tuple(out))

    @staticmethod
    def _default_value(f: Feature) -> float:
        if f.type == "numeric":
            return float(f.default if f.default is not None else 0.0)
        if f.default is None:
            return -1.0
        return float(bucket_of(str(f.default), f.buckets))

    def describe(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.features]

    @property
    def width(self) -> int:
        return len(self.features)

    def _cell(self, j: int, value: Any) -> float:
        f = self.features[j]
        if value is None:
            self.missing[j] += 1
            return self._defaults[j]
        if f.type == "numeric":
            if isinstance(value, bool):
                return float(value)
            if isinstance(value, int | float):
                v = float(value)
            elif isinstance(value, str):
                try:
                    v = float(value)
                except ValueError:
                    self.invalid[j] += 1
                    return self._defaults[j]
            else:
                self.invalid[j] += 1
                return self._defaults[j]
            if not math.isfinite(v):
                self.invalid[j] += 1
                return self._defaults[j]
            return v
        if isinstance(value, str | int) and not isinstance(value, bool):
            return float(bucket_of(str(value), f.buckets))
        if isinstance(value, bool):
            return float(bucket_of(str(value).lower(), f.buckets))
        self.invalid[j] += 1
        return self._defaults[j]

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """One float64 row per dict; columns in schema order."""
        X = np.empty((len(rows), len(self.features)), dtype=np.float64)
        names = self.names
        for i, row in enumerate(rows):
            get = row.get
            for j, name in enumerate(names):
                X[i, j] = self._cell(j, get(name))
            if len(row) > len(names):
                self.unknown_fields += sum(1 for k in row if k not in self.index)
        return X

    def encode_one(self, row: Mapping[str, Any]) -> np.ndarray:
        return self.encode([row])

    def check_matrix(self, X: np.ndarray) -> np.ndarray:
        """Validate a matrix given directly (e.g. to ``learn_many``)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.width:
            raise ValueError(
                f"X must have shape (n, {self.width}) with columns {self.names}, got {X.shape}"
            )
        return X
