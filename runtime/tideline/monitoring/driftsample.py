"""The share of the prediction log that drift reads: which rows, and their features and scores.

Drift reads a share of the logged requests (``drift.sampleRate``), the same share
for every monitor (a hash of where a request is logged); of a request in the
sample, the rows the stable track answered, less those cut from the log
(``Meta.cut``: over its size limit for a row, logged as null), with their
features (decoded typed from the body as it came, else row by row, a missing
value its feature's default) and their scores (a multiclass model's predicted
class). What was read goes to the detectors a block at a time (:meth:`DriftSample.take`).

Pure: the monitor (:class:`tideline.pods.monitor.Monitor`) reads the log
(``XREAD``), hands in each request, and feeds the blocks to its drift part
(:class:`tideline.monitoring.signals.DriftSignals`) when the served version changes and after
each read; nothing here reads a clock or the network.

Examples
--------
>>> from tideline import predlog
>>> from tideline.tasks import Task
>>> meta = predlog.Meta(tracks=["stable", "canary", "stable"], cut=[2])
>>> body = b'{"instances": [{"amount": 2.5}, {"amount": 7.0}, null]}'
>>> e = predlog.decode(predlog.encode([meta], [b"[0.9, 0.2, 0.4]"], [body])).request(0)
>>> stable_rows(e, 3)
[0, 2]
>>> sample = DriftSample(Task("binary"), ["amount"], [0.0], rate=1.0)
>>> sample.add(e, stable_rows(e, 3), e.scores)
True
>>> X, scores = sample.take()
>>> X.tolist(), scores.tolist()
([[2.5]], [0.9])
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from collections.abc import Sequence
from itertools import chain
from typing import Any

import msgspec
import numpy as np
import orjson

from tideline.monitoring.tracks import logged
from tideline.predlog import Entry
from tideline.tasks import Task


def stable_rows(e: Entry, n: int) -> Sequence[int]:
    """The rows of a logged request of ``n`` predictions that the stable track answered.

    >>> from tideline import predlog
    >>> def entry(**meta):
    ...     fields = predlog.encode([predlog.Meta(**meta)], [b"[]"], [b"{}"])
    ...     return predlog.decode(fields).request(0)
    >>> list(stable_rows(entry(), 3)), list(stable_rows(entry(track="canary"), 3))
    ([0, 1, 2], [])
    >>> stable_rows(entry(tracks=["canary", "stable"]), 3)  # (a row no track names: none)
    [1]
    """
    tracks = e.meta.tracks or None  # (None: one track answered every row)
    if tracks is None:  # (the usual request: one track answered all its rows)
        return range(n) if e.meta.track == "stable" else ()
    return [i for i in range(n) if i < len(tracks) and tracks[i] == "stable"]


class DriftSample:
    """The stable rows of the sampled requests, gathered for the drift detectors: their
    features a column at a time (or typed rows) and their scores."""

    def __init__(self, task: Task, names: list[str], defaults: list[float], rate: float) -> None:
        self.task = task
        self.names = names  # the drift features (the numeric ones)
        self.defaults = defaults  # each feature's value when a row has none
        self.rate = rate  # the share of the requests read (drift.sampleRate)
        self._columns: list[list[Any]] = [[] for _ in names]  # read row by row
        self._typed: list[Any] = []  # rows decoded typed (DriftRow structs)
        self._scores: list[Any] = []
        self._body = _drift_body(names)
        self._body_cut = _drift_body(names, cut=True)  # (rows may be null)

    def sampled(self, stream: bytes, entry_id: bytes, k: int) -> bool:
        """Whether request ``k`` of a log entry is read: a request's rows are decoded only
        when it is."""
        return self.rate >= 1.0 or _sampled(stream, entry_id, k, self.rate)

    def add(self, e: Entry, stable: Sequence[int], scores: list[Any]) -> bool:
        """A sampled request's stable rows and their scores; False when they cannot be read (a
        bad entry: what was read of it before stays). Rows cut from the log are left out of
        features and scores alike: the other rows of the request still count (its drift was
        lost whole when a null row failed to read)."""
        if e.meta.cut is not None:  # rows over the log's size limit, logged as null
            stable = _without(stable, e.meta.cut)
            if not stable:
                return True
        if self.names:
            try:
                stable = self._features(e, stable)
            except (ValueError, TypeError, orjson.JSONDecodeError):
                return False
        picked = scores if len(stable) == len(scores) else [scores[i] for i in stable]
        if self.task.multiclass:  # prediction drift reads the predicted class
            try:
                picked = self.task.predicted(logged(self.task, picked)).tolist()
            except (ValueError, TypeError):
                return False
        self._scores += picked
        return True

    def _features(self, e: Entry, stable: Sequence[int]) -> Sequence[int]:
        """The drift features of a request's stable rows, onto their columns: decoded typed
        from the body as it came (objects of numbers), else from its rows one by one. The
        rows read (a body of fewer rows than scores has no more)."""
        decoder = self._body if e.meta.cut is None else self._body_cut
        try:
            typed: list[Any] = decoder.decode(e.body).instances
        except msgspec.DecodeError:
            n = len(e.rows)
            stable = [i for i in stable if i < n]
            picked = e.pick(stable)
            for column, f in zip(self._columns, self.names, strict=True):
                column += [r.get(f) for r in picked]
            return stable
        if len(stable) != len(typed) or stable[-1] != len(typed) - 1:
            stable = [i for i in stable if i < len(typed)]
            typed = [typed[i] for i in stable]
        if e.meta.cut is not None and any(r is None for r in typed):
            raise ValueError("a null row the log's cut rows do not name")
        self._typed += typed
        return stable

    def take(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """What was read since the last take, and let go: the features as a matrix (a row a
        stable row read, a column a feature) and the scores (multiclass: the predicted
        classes, checked as they were read); None for either when there is none."""
        columns, typed, scores = self._columns, self._typed, self._scores
        blocks = [_typed_rows(typed, self.defaults)] if typed else []
        if columns and columns[0]:
            X = np.empty((len(columns[0]), len(columns)))
            for j, (column, d) in enumerate(zip(columns, self.defaults, strict=True)):
                X[:, j] = _numbers(column, d)
            blocks.append(X)
        features = (blocks[0] if len(blocks) == 1 else np.vstack(blocks)) if blocks else None
        values = None
        if scores:
            values = (
                np.array(scores, dtype=np.float64)
                if self.task.multiclass
                else _numbers(scores, 0.5)
            )
        self._columns, self._typed, self._scores = [[] for _ in self.names], [], []
        return features, values


def _sampled(stream: bytes, entry_id: bytes, k: int, rate: float) -> bool:
    """Whether request ``k`` of a log entry is in the drift sample: a hash of where it is
    logged (the server's log, the entry, the request), so the share is ``rate`` whatever
    the traffic's shape, and the same for every reader."""
    return zlib.crc32(b"%s %s %d" % (stream, entry_id, k)) < rate * 4294967296.0


_NUMBER_TYPES = {float, int, bool, type(None)}


def _drift_body(names: list[str], cut: bool = False) -> msgspec.json.Decoder[Any]:
    """A decoder of a logged body straight to the drift features' values: rows that are
    objects, each feature a number, null or missing (other names ignored); with ``cut``,
    rows may be null too (a body with rows cut, :func:`tideline.predlog.bounded`).
    Anything else fails to decode, and the rows are read one by one (:func:`_num`)."""
    row: Any = msgspec.defstruct(
        "DriftRow",
        [(f"f{j}", float | None, None) for j in range(len(names))],
        rename={f"f{j}": name for j, name in enumerate(names)},
        gc=False,
    )
    body = msgspec.defstruct("DriftBody", [("instances", list[row | None] if cut else list[row])])
    return msgspec.json.Decoder(body)


def _without(rows: Sequence[int], cut: list[int]) -> list[int]:
    """Rows of a request less those cut from its log entry (logged as null: nothing to read).

    >>> _without(range(4), [1, 3])
    [0, 2]
    """
    gone = set(cut)
    return [i for i in rows if i not in gone]


def _typed_rows(rows: list[Any], defaults: list[float]) -> np.ndarray:
    """Rows decoded by :func:`_drift_body` as a matrix, a missing or non-finite value its
    feature's default: the values laid out flat by C calls (a tuple a row) and packed into
    the matrix's buffer by ``struct`` (:meth:`tideline.features.FeatureSchema.encode_typed`
    does the same), with no Python-level work per value."""
    n, width = len(rows), len(defaults)
    flat = list(chain.from_iterable(map(msgspec.structs.astuple, rows)))
    X = np.empty((n, width), dtype=np.float64)
    try:
        struct.pack_into(f"{n * width}d", X.data, 0, *flat)
    except struct.error:  # a missing value (None): NaN, then its default
        X = np.array(flat, dtype=np.float64).reshape(n, width)
    bad = ~np.isfinite(X)
    if bad.any():
        X[bad] = np.broadcast_to(np.asarray(defaults, dtype=np.float64), X.shape)[bad]
    return X


def _numbers(values: list[Any], default: float) -> np.ndarray:
    """:func:`_num` of each value: column-wise when every one is a number or missing (the
    server checked the rows it logged), else one by one."""
    if set(map(type, values)) <= _NUMBER_TYPES:
        with contextlib.suppress(OverflowError):
            x = np.array(values, dtype=np.float64)  # None: NaN
            x[~np.isfinite(x)] = default
            return x
    return np.array([_num(v, default) for v in values], dtype=np.float64)


def _num(v: Any, default: float) -> float:
    if isinstance(v, int | float) and v == v and abs(v) != float("inf"):
        return float(v)
    return default
