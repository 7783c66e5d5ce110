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
import operator
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from typing import Any

import msgspec
import numpy as np

from tideline.spec import Feature


@lru_cache(maxsize=1 << 16)
def bucket_of(value: str, buckets: int) -> int:
    """Stable hash of a categorical value (crc32: the same on every replica and run).

    >>> bucket_of("fr", 1024) == bucket_of("fr", 1024), 0 <= bucket_of("x", 7) < 7
    (True, True)
    """
    return zlib.crc32(value.encode()) % buckets


class FeatureError(ValueError):
    """A row value of the wrong type; the message starts with its path (``instances[3].amount``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


_NUMBER_TYPES = (int, float)


@dataclass
class FeatureSchema:
    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        self.names = [f.name for f in self.features]
        # names and types: two schemas with the same signature read the same rows
        self.signature = tuple((f.name, f.type) for f in self.features)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.numeric = np.array([f.type == "numeric" for f in self.features], dtype=bool)
        self.num_idx = np.flatnonzero(self.numeric)
        self.cat_idx = np.flatnonzero(~self.numeric)
        self.all_numeric = bool(self.numeric.all())
        self._name_set = frozenset(self.names)
        num_names = [self.names[j] for j in self.num_idx]
        self._num_getter = operator.itemgetter(*num_names) if num_names else None
        self._cat_list = self.cat_idx.tolist()
        self._bucket_cache: list[dict[str, float]] = [{} for _ in self.features]
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
    def name_set(self) -> frozenset[str]:
        return self._name_set

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

    def row_type(self, arrays: bool = False) -> type[msgspec.Struct]:
        """A msgspec Struct for a strictly typed row, to decode request bodies straight into.

        Every feature present, numbers as JSON numbers (finite: JSON has no NaN,
        and msgspec refuses what overflows a double), categories as strings, no
        other names. Anything else (a missing or null value, a number as text,
        an unknown name) fails to decode, and the caller falls back to
        :meth:`encode_strict`, which counts, defaults or names it. With
        ``arrays``, a row is a JSON array of every feature's value in schema order.

        >>> s = FeatureSchema.from_spec([{"name": "amount"}, {"name": "country", "type": "categorical"}])
        >>> rows = msgspec.json.decode(b'[{"amount": 2, "country": "fr"}]', type=list[s.row_type()])
        >>> s.encode_typed(rows).tolist() == s.encode([{"amount": 2, "country": "fr"}]).tolist()
        True
        >>> rows = msgspec.json.decode(b'[[2, "fr"]]', type=list[s.row_type(arrays=True)])
        >>> s.encode_typed(rows).tolist() == s.encode([{"amount": 2, "country": "fr"}]).tolist()
        True
        """
        # fields f0, f1, ... renamed to the features' names: a name need not be an
        # identifier ("distance-km", "user.age")
        fields = [
            (f"f{j}", float if f.type == "numeric" else str) for j, f in enumerate(self.features)
        ]
        # gc=False: a row holds only numbers and strings, so the collector need not track it
        return msgspec.defstruct(
            "Row",
            fields,
            rename={f"f{j}": f.name for j, f in enumerate(self.features)},
            forbid_unknown_fields=True,
            gc=False,
            array_like=arrays,
        )

    def encode_typed(self, rows: Sequence[Any]) -> np.ndarray:
        """Encode rows decoded with :meth:`row_type` (every value present and of its type).

        A row may also be those values already taken out, in schema order (a
        tuple or list from :func:`msgspec.structs.astuple`). The rows' values are laid out row-major in one list (a C call per row),
        each categorical column is replaced by its codes through a strided
        slice, and ``struct`` packs the list into the matrix's buffer: every
        step is one C loop, with no Python-level work per cell and none of
        numpy's per-element conversion (``np.fromiter`` costs about twice as
        much per value as ``struct``).
        """
        n, width = len(rows), len(self.features)
        taken_out = bool(rows) and isinstance(rows[0], tuple | list)
        values = rows if taken_out else map(msgspec.structs.astuple, rows)
        flat: list[Any] = list(chain.from_iterable(values))
        for j in self._cat_list:
            flat[j::width] = self._codes(j, flat[j::width])
        X = np.empty((n, width), dtype=np.float64)
        struct.pack_into(f"{n * width}d", X.data, 0, *flat)
        return X

    def encode_columns(self, parts: Sequence[Sequence[Any]], n: int) -> np.ndarray:
        """Encode ``n`` rows given as columns: each part a block of rows, as one column a feature
        in schema order - a number column little-endian doubles (``bytes``), a categorical
        one its strings (:class:`tideline.pods.history.RecordDecoder` reads history records
        so). A column of the parts' numbers is one numpy read of their bytes joined; a
        categorical column one pass through the bucket cache.

        >>> s = FeatureSchema.from_spec([{"name": "amount"}, {"name": "country", "type": "categorical"}])
        >>> part = (struct.pack("<2d", 2.0, 3.5), ["fr", "de"])
        >>> s.encode_columns([part, part], 4).tolist() == s.encode(
        ...     [{"amount": 2.0, "country": "fr"}, {"amount": 3.5, "country": "de"}] * 2).tolist()
        True
        """
        width = len(self.features)
        X = np.empty((n, width), dtype=np.float64)
        cats = set(self._cat_list)
        for j, column in enumerate(zip(*parts, strict=True)):
            if j in cats:
                X[:, j] = self._codes(j, list(chain.from_iterable(column)))
            else:
                X[:, j] = np.frombuffer(b"".join(column), dtype="<f8")
        return X

    def _codes(self, j: int, values: Sequence[str]) -> list[float]:
        """Bucket codes of a column of strings, through the bounded per-feature cache."""
        cache = self._bucket_cache[j]
        try:  # the usual case: every value seen before (a miss stops the map at once)
            return list(map(cache.__getitem__, values))
        except KeyError:
            pass
        buckets = self.features[j].buckets
        if len(cache) > 100_000:  # bounded: a flood of new values resets it
            cache.clear()
        codes = list(map(cache.get, values))
        for i, code in enumerate(codes):
            if code is None:
                codes[i] = cache[values[i]] = bucket_of(values[i], buckets)
        return codes  # type: ignore[return-value]

    def encode_lenient(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Encode rows as logged or sent to learn: column-wise when every value has its type
        (:meth:`encode_strict`, the usual case), else cell by cell (:meth:`encode`: a bad
        value defaulted and counted, never refused).

        >>> s = FeatureSchema.from_spec([{"name": "amount"}])
        >>> s.encode_lenient([{"amount": 2}]).tolist(), s.encode_lenient([{"amount": "x"}]).tolist()
        ([[2.0]], [[0.0]])
        """
        try:
            return self.encode_strict(rows)
        except FeatureError:
            return self.encode(rows)

    def encode_one(self, row: Mapping[str, Any]) -> np.ndarray:
        return self.encode([row])

    def encode_strict(self, rows: Sequence[Any], path: str = "instances") -> np.ndarray:
        """Encode request rows, refusing values of the wrong type (for the HTTP API).

        A row is a dict (missing features take their defaults, counted; unknown
        names are counted) or a list in schema order. A numeric feature must be
        a finite number (or a bool); a categorical one a string or an integer.
        Raises :class:`FeatureError` naming the first bad value.

        The work is done a column at a time: a request of 64 rows costs a few
        list comprehensions and one numpy conversion per feature.
        """
        n = len(rows)
        width = len(self.features)
        if n and not isinstance(rows[0], Mapping):
            return self._encode_lists(rows, path)
        if n <= 8:
            return self._encode_few(rows, path)
        X = np.empty((n, width), dtype=np.float64)
        if set(map(type, rows)) != {dict}:
            for i, row in enumerate(rows):
                if not isinstance(row, Mapping):
                    raise FeatureError(
                        f"{path}[{i}]", "every row must be an object of features (like the first)"
                    )
        names = self._name_set
        if not names.issuperset(set().union(*rows)):  # the usual case costs one C-level union
            for row in rows:
                self.unknown_fields += sum(1 for k in row if k not in names)
        fast = len(self.num_idx) > 0 and self._fast_numeric(X, rows)
        for j in self._cat_list if fast else range(width):
            if fast and self._fast_categorical(X, j, rows):
                continue
            name = self.names[j]
            col = [row.get(name) for row in rows]
            self._fill_column(X, j, col, path, named=True)
        return X

    def _fast_numeric(self, X: np.ndarray, rows: Sequence[Any]) -> bool:
        """All numeric columns in one conversion, when every value is a present number.

        Returns False (and writes nothing) when a value is missing or not a
        number; the column-wise path then handles, counts or refuses it.
        """
        getter = self._num_getter
        if getter is None:
            return False
        try:
            block = list(map(getter, rows))  # one C call per row
        except KeyError:
            return False
        A = np.array(block)
        if A.ndim == 1:  # a single numeric feature: itemgetter returned scalars
            A = A.reshape(-1, 1)
        if A.dtype.kind not in "fiub" or A.ndim != 2:  # None, text or nested values
            return False
        A = A.astype(np.float64, copy=False)
        if not np.isfinite(A).all():
            return False
        X[:, self.num_idx] = A
        return True

    def _fast_categorical(self, X: np.ndarray, j: int, rows: Sequence[Any]) -> bool:
        """A categorical column whose every value is a string seen before: cached codes only."""
        try:
            codes = list(
                map(self._bucket_cache[j].get, map(operator.itemgetter(self.names[j]), rows))
            )
        except (KeyError, TypeError):  # missing, or unhashable
            return False
        if None in codes:
            return False
        X[:, j] = codes
        return True

    def _encode_few(self, rows: Sequence[Any], path: str) -> np.ndarray:
        """A handful of rows: plain Python per cell beats numpy's per-call overhead."""
        out = []
        names = self._name_set
        for i, row in enumerate(rows):
            if type(row) is not dict:
                if not isinstance(row, Mapping):
                    raise FeatureError(
                        f"{path}[{i}]", "every row must be an object of features (like the first)"
                    )
            elif not row.keys() <= names:
                self.unknown_fields += sum(1 for k in row if k not in names)
            vals = []
            for j, f in enumerate(self.features):
                v = row.get(f.name)
                t = type(v)
                if f.type == "numeric":
                    if t is float or t is int:
                        if v - v != 0:  # inf or nan
                            raise FeatureError(
                                f"{path}[{i}].{f.name}", f"must be finite (got {v!r})"
                            )
                        vals.append(v)
                        continue
                elif t is str:
                    code = self._bucket_cache[j].get(v)
                    vals.append(code if code is not None else self._codes(j, [v])[0])
                    continue
                tmp = np.empty((1, len(self.features)))
                self._fill_column(tmp, j, [v], path, named=True, offset=i)
                vals.append(tmp[0, j])
            out.append(vals)
        return np.array(out, dtype=np.float64).reshape(len(rows), len(self.features))

    def _encode_lists(self, rows: Sequence[Any], path: str) -> np.ndarray:
        width = len(self.features)
        for i, row in enumerate(rows):
            if not isinstance(row, list | tuple) or len(row) != width:
                raise FeatureError(
                    f"{path}[{i}]",
                    f"must be an object or a list of {width} values in the order {self.names}",
                )
        X = np.empty((len(rows), width), dtype=np.float64)
        for j in range(width):
            self._fill_column(X, j, [row[j] for row in rows], path, named=False)
        return X

    def _fill_column(
        self, X: np.ndarray, j: int, col: list[Any], path: str, named: bool, offset: int = 0
    ) -> None:
        f = self.features[j]

        def where(i: int) -> str:
            return f"{path}[{offset + i}].{f.name}" if named else f"{path}[{offset + i}][{j}]"

        if f.type == "numeric":
            try:
                arr = np.array(col, dtype=np.float64)  # None -> nan
            except (TypeError, ValueError):
                arr = None
            if arr is None or arr.ndim != 1:
                for i, v in enumerate(col):
                    if v is not None and not isinstance(v, _NUMBER_TYPES):
                        raise FeatureError(where(i), f"must be a number (got {v!r})") from None
                raise FeatureError(where(0), "must be a number")  # pragma: no cover
            if str in set(map(type, col)):  # numpy parses "3.5"; the API does not
                i = next(i for i, v in enumerate(col) if isinstance(v, str))
                raise FeatureError(where(i), f"must be a number (got {col[i]!r})")
            bad = ~np.isfinite(arr)
            if bad.any():
                for i in np.flatnonzero(bad).tolist():
                    if col[i] is not None:
                        raise FeatureError(where(i), f"must be finite (got {col[i]!r})")
                self.missing[j] += int(bad.sum())
                arr[bad] = self._defaults[j]
            X[:, j] = arr
            return
        cache = self._bucket_cache[j]
        codes = [cache.get(v) if type(v) is str else None for v in col]
        if None in codes:
            for i, v in enumerate(col):
                if codes[i] is not None:
                    continue
                if v is None:
                    self.missing[j] += 1
                    codes[i] = self._defaults[j]
                elif isinstance(v, str):
                    if len(cache) > 100_000:  # bounded: a flood of new values resets it
                        cache.clear()
                    codes[i] = cache[v] = bucket_of(v, f.buckets)
                elif isinstance(v, bool):
                    codes[i] = bucket_of("true" if v else "false", f.buckets)
                elif isinstance(v, int):
                    codes[i] = bucket_of(str(v), f.buckets)
                else:
                    raise FeatureError(where(i), f"must be a string or an integer (got {v!r})")
        X[:, j] = codes

    def check_matrix(self, X: np.ndarray) -> np.ndarray:
        """Validate a matrix given directly (e.g. to ``learn_many``)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.width:
            raise ValueError(
                f"X must have shape (n, {self.width}) with columns {self.names}, got {X.shape}"
            )
        return X
