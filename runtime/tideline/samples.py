"""The ``samples`` stream: labelled rows for the learner, one per entry or many (packed).

An entry has one field, ``data``, a JSON object in one of two shapes:

* one row: ``{"features": {"amount": 12.5, "country": "fr"}, "label": 1}``
* packed: ``{"instances": [{...}, {...}], "labels": [1, 0]}`` - the body the
  ``:learn`` route takes, written as one entry per request.

A label is what the model's :class:`tideline.tasks.Task` reads as a target: a
number (a boolean, 0 or 1), or for a multiclass model a class name of
``spec.model.classes`` (``"label": "dog"``; a whole number is a class's index).

An entry is learned whole (its rows in one mini-batch, acknowledged together),
so a learner killed at any moment learns each of its rows exactly once.

Readers decode a whole read at once (:class:`SampleDecoder`): when every entry
has every feature, typed as the schema says, and a number or a boolean for a
label (or a class name, multiclass), the read is one msgspec decode into typed
rows and one pass into the matrix, with no dict per row. Anything else (a
missing or null value, a number as text, an unknown name, a bad label, not
JSON) is read entry by entry, and each row is defaulted and counted, or
refused with its reason, as it always was.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import msgspec
import numpy as np
import orjson

from tideline.contracts import json_object
from tideline.features import FeatureSchema
from tideline.tasks import Task

Entries = Sequence[tuple[bytes, Mapping[bytes, bytes]]]
LARGE_ENTRY_BYTES = 1024  # entries of a read larger than this on average: decoded one by one

# A label as the typed path decodes it: a number, or a boolean, the natural JSON of a binary
# label (true/false once sent the whole read entry by entry: the fraud example learned at
# 95,000/s against 210,000/s with 0/1; issue "Every label type on the fast path"); and a class
# name, multiclass only: another task's reads decode their labels as Number, so that a string
# in one fails the typed decode and is refused on the general path with the task's reason
# (np.fromiter would read "1" as 1.0). SampleDecoder._targets makes them float64 targets.
Number = float | bool
Label = Number | str


def pack(rows: Sequence[Mapping[str, Any]], labels: Sequence[float | str]) -> bytes:
    """A packed entry's ``data``: rows (feature objects) and their labels."""
    return orjson.dumps({"instances": list(rows), "labels": list(labels)})


def one(features: Mapping[str, Any], label: float | str) -> bytes:
    """A one-row entry's ``data``."""
    return orjson.dumps({"features": features, "label": label})


def rows_of(entries: Entries, task: Task | None = None) -> tuple[list[dict[str, Any]], list[float]]:
    """The rows (feature objects) and labels, as targets, of these entries, both shapes,
    skipping what cannot be read - for readers that score samples (the learner refuses them).

    ``task``: the model's, which reads each label as the learner does (a multiclass model's
    class names as their indices; a label the task refuses is skipped). Without it a label
    is any finite number, as it was before a label could be a class name.

    >>> entries = [(b"1-0", {b"data": pack([{"x": 1}, {"x": 2}], ["dog", "fox"])})]
    >>> rows_of(entries, Task("multiclass", ("cat", "dog")))
    ([{'x': 1}], [1.0])
    """
    target = task.target if task is not None else _finite
    rows: list[dict[str, Any]] = []
    labels: list[float] = []
    for _, fields in entries:
        try:
            doc = orjson.loads(fields[b"data"])
            if "instances" in doc:
                xs, ys = doc["instances"], doc["labels"]
                if len(xs) != len(ys):
                    continue
            else:
                xs, ys = [doc["features"]], [doc["label"]]
        except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):
            continue
        for row, label in zip(xs, ys, strict=True):
            try:
                y = target(label)
            except (ValueError, TypeError):
                continue
            if isinstance(row, dict):
                rows.append(row)
                labels.append(y)
    return rows, labels


def _finite(label: Any) -> float:
    y = float(label)
    if not math.isfinite(y):
        raise ValueError("labels must be finite numbers")
    return y


@dataclass
class Refused:
    """A row (or a whole entry, ``row`` None) that cannot be learned, and why."""

    entry: bytes
    row: int | None
    reason: str
    fields: dict[bytes, bytes]


@dataclass
class Decoded:
    """What a read of the stream holds: rows to learn, entry by entry, and what is refused.

    ``runs`` has one ``(entry id, rows)`` per entry with rows to learn, in
    stream order; the rows of ``X``/``y`` are theirs, in that order. An entry
    whose every row is refused has no run (it is acknowledged with its dead
    letters); one with some rows refused has a run for the rest.
    """

    X: np.ndarray
    y: np.ndarray
    runs: list[tuple[bytes, int]]
    refused: list[Refused] = field(default_factory=list)
    fast: bool = False  # the whole read took the typed path

    def __len__(self) -> int:
        return len(self.y)


class SampleDecoder:
    """Decodes reads of the ``samples`` stream into matrices for one schema and task
    (a :class:`tideline.tasks.Task`; a task's name will do for binary and regression)."""

    def __init__(self, schema: FeatureSchema, task: Task | str) -> None:
        self.schema = schema
        self.task = task if isinstance(task, Task) else Task(task)
        row = schema.row_type()
        label = Label if self.task.multiclass else Number
        # class name -> target: the names of a read mapped in one pass at C speed (the task
        # reads anything else, label by label)
        self._table: dict[Label, float] = {
            c: float(i) for i, c in enumerate(self.task.classes or ())
        }
        one_t = msgspec.defstruct("Sample", [("features", row), ("label", label)])
        packed_t = msgspec.defstruct(
            "Samples",
            [("instances", list[row]), ("labels", list[label])],  # type: ignore[valid-type]
        )
        self._many_one = msgspec.json.Decoder(list[one_t])  # type: ignore[valid-type]
        self._many_packed = msgspec.json.Decoder(list[packed_t])  # type: ignore[valid-type]
        self._one = msgspec.json.Decoder(one_t)
        self._packed = msgspec.json.Decoder(packed_t)

    def decode(self, entries: Entries) -> Decoded:
        """The rows of these entries (see :class:`Decoded`)."""
        if not entries:
            return Decoded(np.zeros((0, self.schema.width)), np.zeros(0), [])
        fast = self._bulk(entries)
        if fast is not None:
            return fast
        blocks: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        runs: list[tuple[bytes, int]] = []
        refused: list[Refused] = []
        for entry_id, fields in entries:
            X, y = self._entry(entry_id, fields, refused)
            if len(y):
                blocks.append(X)
                labels.append(y)
                runs.append((entry_id, len(y)))
        if not blocks:
            return Decoded(np.zeros((0, self.schema.width)), np.zeros(0), [], refused)
        return Decoded(np.vstack(blocks), np.concatenate(labels), runs, refused)

    # -- the typed path: a whole read in one decode ---------------------------------------
    def _bulk(self, entries: Entries) -> Decoded | None:
        try:
            datas = [fields[b"data"] for _, fields in entries]
            size = sum(map(len, datas))
        except (KeyError, TypeError):
            return None
        schema = self.schema
        # small entries (one row each) joined into one document, decoded in one call;
        # large ones (packed) decoded one by one, without copying a read's megabyte again
        joined = size < LARGE_ENTRY_BYTES * len(datas)
        body = b"[" + b",".join(datas) + b"]" if joined else b""
        try:
            docs: list[Any] = (
                self._many_one.decode(body) if joined else list(map(self._one.decode, datas))
            )
        except (msgspec.MsgspecError, UnicodeDecodeError):
            pass
        else:
            y = self._targets((d.label for d in docs), len(docs))
            if y is None:
                return None
            X = schema.encode_typed([d.features for d in docs])
            return Decoded(X, y, [(eid, 1) for eid, _ in entries], fast=True)
        try:
            packs: list[Any] = (
                self._many_packed.decode(body) if joined else list(map(self._packed.decode, datas))
            )
        except (msgspec.MsgspecError, UnicodeDecodeError):
            return None
        if any(len(p.instances) != len(p.labels) or not p.labels for p in packs):
            return None
        runs = [(eid, len(p.labels)) for (eid, _), p in zip(entries, packs, strict=True)]
        y = self._targets(chain.from_iterable(p.labels for p in packs), sum(n for _, n in runs))
        if y is None:
            return None
        X = schema.encode_typed(list(chain.from_iterable(p.instances for p in packs)))
        return Decoded(X, y, runs, fast=True)

    def _targets(self, labels: Iterable[Label], n: int) -> np.ndarray | None:
        """The ``n`` labels of a typed read as float64 targets, or None when one is not a label
        of this task (the read then goes entry by entry, where each is refused with its reason).

        This is the one place a label becomes a target, as the task reads it
        (:meth:`tideline.tasks.Task.targets`): a class name mapped through the class table, a
        boolean 0.0 or 1.0 (binary, regression) as the general path reads it. A multiclass
        read of class names alone (what the wire carries) is mapped in one ``fromiter``: a
        third of the task's label-by-label time.
        """
        if self._table:
            labels = list(labels)
            try:
                return np.fromiter(map(self._table.__getitem__, labels), np.float64, n)
            except KeyError:  # (a class index, or a name not of this model)
                pass
        try:
            return self.task.targets(labels, n)
        except ValueError:
            return None

    # -- the general path: an entry at a time --------------------------------------------
    def _entry(
        self, entry_id: bytes, fields: Mapping[bytes, bytes], refused: list[Refused]
    ) -> tuple[np.ndarray, np.ndarray]:
        empty = np.zeros((0, self.schema.width)), np.zeros(0)

        def refuse(reason: str, row: int | None = None, what: Any = None) -> None:
            kept = dict(fields) if what is None else {b"row": orjson.dumps(what)}
            refused.append(Refused(entry_id, row, reason, kept))

        data = fields.get(b"data")
        if data is None:
            refuse("invalid: entry has no 'data' field")
            return empty
        try:
            doc = json_object(data)
        except ValueError as e:
            refuse(f"invalid: {e}")
            return empty
        if "instances" in doc or "labels" in doc:
            rows, labels = doc.get("instances"), doc.get("labels")
            if not isinstance(rows, list) or not isinstance(labels, list):
                refuse("invalid: a packed entry needs 'instances' and 'labels', both lists")
                return empty
            if len(rows) != len(labels) or not rows:
                refuse(f"invalid: {len(labels)} labels for {len(rows)} instances")
                return empty
            packed = True
        elif "features" in doc and "label" in doc:
            rows, labels, packed = [doc["features"]], [doc["label"]], False
        else:
            refuse("invalid: 'data' needs 'features' and 'label' (or 'instances' and 'labels')")
            return empty
        keep: list[dict[str, Any]] = []
        ys: list[float] = []
        for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
            at = i if packed else None
            where = f"instances[{i}]" if packed else "'features'"
            if not isinstance(row, dict):
                refuse(f"invalid: {where} must be an object", at,
                       {"features": row, "label": label} if packed else None)  # fmt: skip
                continue
            try:
                y = self.task.target(label)
            except (TypeError, ValueError) as e:
                if packed:
                    refuse(f"invalid label: {e}", at, {"features": row, "label": repr(label)})
                else:
                    refused.append(Refused(entry_id, None, f"invalid label: {e}",
                                           {b"label": repr(label).encode()}))  # fmt: skip
                continue
            keep.append(row)
            ys.append(y)
        if not keep:
            return empty
        return self.schema.encode(keep), np.array(ys)
