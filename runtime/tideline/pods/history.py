"""Labelled history: the joined samples of the last ``spec.learning.history``, kept in Redis.

The monitor joins every label (and every default, ``labelDefault``) with its
logged prediction; with ``spec.learning.history`` it also appends each join
(:func:`record_of`) to the model's ``history`` stream, in the pipeline that marks them: the rows as logged, their labels, when each
label arrived, the prediction's time and marks, and what was served for each
row - its score, its track and the (revision, version) that answered. The
stream is trimmed by time (``XADD ... MINID ~``: entries older than the
history go as new ones come), so its size follows the label rate times the
history; :func:`cost` measures it.

A new revision's learner reads it before its first version
(:mod:`tideline.pods.learner`, the catch-up): it learns the rows in the order
they were joined, prequentially, and compares its predictions on the last
``window`` with those stable served for the same rows (:mod:`tideline.backtest`).

An entry is one logged request's joined rows, packed in ``record`` (:class:`Packed`,
MessagePack): its rows as columns, a feature's values together - every row's number in one
string of little-endian doubles when they are all floats (a column a catch-up lays out with
one numpy call, where JSON rows cost a parse of every number and a field name every cell:
issue 35) - beside the labels, when each came, the marks and what was served:

    {"ts": 1733..., "rows": 64, "columns": {"amount": b"...", "country": ["fr", ...]},
     "labels": [...], "received": [...], "marks": [...], "scores": [...],
     "tracks": [...], "models": {track: [rev, v]}, "fallback": false}

A record whose rows cannot be columns (not all objects with the same names, or a value
MessagePack cannot hold) is written as before, as JSON in ``data``, its rows as objects;
the readers read both (a stream written before keeps its ``data`` entries).

>>> rec = Record(ts=10.0, rows=[{"x": 1}], labels=[1.0], received=[12.5], marks=["a b 0 0"],
...              scores=[0.8], tracks=["stable"], models={"stable": ("r1", 3)})
>>> Record.decode(rec.encode()) == rec
True
>>> Record.of(rec.fields()) == rec, list(rec.fields())
(True, [b'record'])
>>> rec.served_by_track("stable").tolist(), rec.served_by_track("canary").tolist()
([True], [False])

A catch-up reads them with a :class:`RecordDecoder` of its model's features and task: a
packed record whose columns are the schema's features, numbers as doubles and categories as
strings, decodes into those columns (:meth:`tideline.features.FeatureSchema.encode_columns`
lays a chunk's out at once); a JSON record whose every row has every feature, typed as the
schema says, into typed rows (no dict a row) that
:meth:`tideline.features.FeatureSchema.encode_typed` lays out in bulk, as the learner's
:class:`tideline.samples.SampleDecoder` reads packed samples; any other record decodes as a
plain :class:`Record`, its rows as logged.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any, Literal, NamedTuple

import msgspec
import numpy as np

from tideline.contracts import Keys
from tideline.features import FeatureSchema
from tideline.pods.join import Joined
from tideline.samples import Label, Number
from tideline.tasks import Task

# A page of the history: about READ_BYTES of entries, as the learner's reads of its source
# (issue 35: pages of 500 entries, 7 MB of joined requests of 64 rows, made the catch-up
# learn more slowly than pages of about 1 MB - a reply that big leaves the learner's data
# out of the CPU's caches, and the read-ahead thread holds the GIL the longer to parse it)
READ_BYTES = 1 << 20
FIRST_READ_ENTRIES = 64  # the first page's entries (then sized from the last page's)
MIN_READ_ENTRIES, MAX_READ_ENTRIES = 16, 4096


class Record(msgspec.Struct, omit_defaults=True):
    """One logged request's joined rows (see the module docs)."""

    ts: float  # when the prediction was made (seconds)
    rows: list[Any]
    labels: list[Any]
    received: list[float]  # when each label arrived (seconds; a default's: when it was given)
    marks: list[str]  # each row's prediction key (the join's marks)
    scores: list[Any]  # what each row was answered with
    tracks: list[str]
    models: dict[str, tuple[str, int]] = {}  # track -> (revision, version) that answered
    fallback: bool = False  # a fallback answered the request

    def encode(self) -> bytes:
        """The JSON form (``data``: a record whose rows cannot be columns)."""
        return _encoder.encode(self)

    @staticmethod
    def decode(raw: bytes) -> Record:
        """From the JSON form; ``ValueError`` when it is not a record."""
        try:
            return _decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise ValueError(f"not a history record: {e}") from None

    def fields(self) -> dict[bytes, bytes]:
        """The stream entry's fields: packed (``record``) when its rows can be columns, else
        the JSON form (``data``)."""
        packed = self.pack()
        return {PACKED: packed} if packed is not None else {JSON: self.encode()}

    def pack(self) -> bytes | None:
        """The packed form (:class:`Packed`); None when the rows are not all objects with the
        same names, or hold what MessagePack cannot (an integer past 64 bits)."""
        rows = self.rows
        if set(map(type, rows)) - {dict}:
            return None
        names = rows[0].keys() if rows else {}.keys()
        if any(row.keys() != names for row in rows):
            return None
        columns: dict[str, bytes | list[Any]] = {}
        if names:  # (the rows' values by name, a tuple a column: C loops, none in Python)
            got = map(operator.itemgetter(*names), rows)
            values = zip(*got, strict=True) if len(names) > 1 else [tuple(got)]
            for name, column in zip(names, values, strict=True):
                doubles = set(map(type, column)) == {float} and all(map(math.isfinite, column))
                columns[name] = (
                    struct.pack(f"<{len(column)}d", *column) if doubles else list(column)
                )
        packed = Packed(ts=self.ts, rows=len(rows), columns=columns, labels=self.labels,
                        received=self.received, marks=self.marks, scores=self.scores,
                        tracks=self.tracks, models=self.models, fallback=self.fallback)  # fmt: skip
        try:
            return _packer.encode(packed)
        except (OverflowError, TypeError, msgspec.EncodeError):
            return None

    @staticmethod
    def of(fields: Mapping[bytes, bytes]) -> Record:
        """A stream entry's record, packed or JSON; ``ValueError`` when it is not one."""
        if PACKED in fields:
            try:
                return _unpacker.decode(fields[PACKED]).record()
            except (msgspec.DecodeError, msgspec.ValidationError, struct.error) as e:
                raise ValueError(f"not a history record: {e}") from None
        if JSON in fields:
            return Record.decode(fields[JSON])
        raise ValueError("not a history record: no 'record' nor 'data' field")

    def served_by_track(self, track: str) -> np.ndarray:
        """Which rows ``track`` answered (no fallback): the ones a backtest compares on."""
        if self.fallback:
            return np.zeros(len(self.rows), dtype=bool)
        return np.array([t == track for t in self.tracks], dtype=bool)


PACKED, JSON = b"record", b"data"  # an entry's field: the packed form, or the JSON form


class Packed(msgspec.Struct, omit_defaults=True):
    """A record packed (see the module docs): ``rows`` rows, each feature's values a column -
    little-endian doubles when every one is a float, else the values as logged."""

    ts: float
    rows: int
    columns: dict[str, bytes | list[Any]]
    labels: list[Any]
    received: list[float]
    marks: list[str]
    scores: list[Any]
    tracks: list[str]
    models: dict[str, tuple[str, int]] = {}
    fallback: bool = False

    def record(self) -> Record:
        """Its rows as objects again (``struct.error``: a column of doubles that is not
        ``rows`` long; ``ValueError``: a column of values that is not)."""
        n = self.rows
        columns = [list(struct.unpack(f"<{n}d", c)) if isinstance(c, bytes) else c
                   for c in self.columns.values()]  # fmt: skip
        if any(len(c) != n for c in columns):
            raise ValueError(f"not a history record: a column not {n} rows long")
        names = list(self.columns)
        rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
        return Record(ts=self.ts, rows=rows if names else [{} for _ in range(n)],
                      labels=self.labels, received=self.received, marks=self.marks,
                      scores=self.scores, tracks=self.tracks, models=self.models,
                      fallback=self.fallback)  # fmt: skip


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Record)
_packer = msgspec.msgpack.Encoder()
_unpacker = msgspec.msgpack.Decoder(Packed)

# how a record's rows came out of RecordDecoder.decode: typed rows (the schema's row structs),
# the schema's columns (a tuple of them, in its order), or rows as logged
Rows = Literal["typed", "columns", "logged"]


class Decoded(NamedTuple):
    """A history entry as :meth:`RecordDecoder.decode` reads it: the record, how its rows came
    out, and its rows' marks as a MessagePack array of keys (as a packed record holds them:
    :meth:`tideline.pods.join.LogJoin.commit_packed` takes them so; a packed record's own
    ``marks`` are then left empty, never made a string a row)."""

    record: Record
    how: Rows
    marks: bytes


def array_length(packed: bytes) -> int:
    """How many items a MessagePack array holds (-1: ``packed`` is not one).

    >>> array_length(_packer.encode(["a"] * 3)), array_length(_packer.encode(["a"] * 70))
    (3, 70)
    >>> array_length(_packer.encode("a")), array_length(b"")
    (-1, -1)
    """
    head = packed[0] if packed else 0
    if 0x90 <= head <= 0x9F:  # (fixarray)
        return head & 0x0F
    if head in (0xDC, 0xDD):  # (array 16, array 32)
        return int.from_bytes(packed[1 : 3 if head == 0xDC else 5], "big")
    return -1


class RecordDecoder:
    """Decodes history entries for one model's features and task: typed when it can be.

    :meth:`decode` returns a :class:`Decoded`: the :class:`Record`, how its rows came out -
    ``"columns"`` for a packed record whose columns are the model's features and no other,
    numbers as doubles and categories as strings (``rows`` then holds those columns in the
    schema's order, for :meth:`tideline.features.FeatureSchema.encode_columns`); ``"typed"``
    for a JSON record whose every row has every feature and no other, numbers as numbers,
    categories as strings (``rows`` are structs of
    :meth:`tideline.features.FeatureSchema.row_type`); in both, every label a number, or a
    class name for a multiclass model, and every score the task's. Any other record: the
    plain :meth:`Record.of`, its rows as logged (``"logged"``) - and its marks packed. A
    packed record's marks and tracks are not made a string a row: the marks stay packed (a
    catch-up adds them to Redis so), and the tracks of one served by stable alone are one
    list shared with every such record of its length.

    >>> schema = FeatureSchema.from_spec([{"name": "x"}])
    >>> decoder = RecordDecoder(schema, Task("binary"))
    >>> rec = Record(ts=1.0, rows=[{"x": 2.0}], labels=[1], received=[2.0], marks=["k"],
    ...              scores=[0.5], tracks=["stable"])
    >>> got, how, marks = decoder.decode(rec.fields())
    >>> how, schema.encode_columns([got.rows], 1).tolist(), got.labels, got.tracks
    ('columns', [[2.0]], [1.0], ['stable'])
    >>> got.marks, msgspec.msgpack.decode(marks)
    ([], ['k'])
    >>> got, how, marks = decoder.decode({b"data": rec.encode()})
    >>> how, schema.encode_typed(got.rows).tolist(), got.marks, msgspec.msgpack.decode(marks)
    ('typed', [[2.0]], ['k'], ['k'])
    >>> decoder.decode(Record(**{**msgspec.structs.asdict(rec), "rows": [{"x": None}]}).fields())[:2]
    (Record(ts=1.0, rows=[{'x': None}], labels=[1], received=[2.0], marks=['k'], scores=[0.5], tracks=['stable'], models={}, fallback=False), 'logged')
    """

    def __init__(self, schema: FeatureSchema, task: Task) -> None:
        label = Label if task.multiclass else Number
        score = list[float] if task.multiclass else float
        typed = msgspec.defstruct(
            "TypedRecord",
            [("rows", list[schema.row_type()]), ("labels", list[label]),  # type: ignore[misc,valid-type]
             ("scores", list[score])],  # type: ignore[valid-type]
            bases=(Record,),
            omit_defaults=True,
        )  # fmt: skip
        self._typed: msgspec.json.Decoder[Record] = msgspec.json.Decoder(typed)
        # the schema's columns: numbers as doubles, categories as strings, no other name
        columns = msgspec.defstruct(
            "Columns",
            [(f"f{j}", bytes if f.type == "numeric" else list[str])
             for j, f in enumerate(schema.features)],
            rename={f"f{j}": f.name for j, f in enumerate(schema.features)},
            forbid_unknown_fields=True,
        )  # fmt: skip
        packed = msgspec.defstruct(
            "TypedPacked",
            [("columns", columns), ("labels", list[label]), ("scores", list[score]),  # type: ignore[valid-type]
             ("marks", msgspec.Raw), ("tracks", msgspec.Raw)],
            bases=(Packed,),
            omit_defaults=True,
        )  # fmt: skip
        self._packed: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(packed)
        self._tracks = msgspec.msgpack.Decoder(list[str])
        self._widths = [8 if f.type == "numeric" else 1 for f in schema.features]
        self._lengths_of: dict[int, list[int]] = {}
        self._stable_of: dict[int, tuple[bytes, list[str]]] = {}

    def _lengths(self, n: int) -> list[int]:
        """The lengths of ``n`` rows' columns: a double's 8 bytes a row, a string a row."""
        got = self._lengths_of.get(n)
        if got is None:
            got = self._lengths_of[n] = [w * n for w in self._widths]
        return got

    def _tracks_of(self, packed: bytes, n: int) -> list[str]:
        """The tracks of a packed record of ``n`` rows (``msgspec.ValidationError``: not
        strings): those of ``n`` rows stable served, one list for every such record."""
        stable = self._stable_of.get(n)
        if stable is None:
            if len(self._stable_of) > 1024:  # (bounded: requests of many sizes)
                self._stable_of.clear()
            tracks = ["stable"] * n
            stable = self._stable_of[n] = (_packer.encode(tracks), tracks)
        return stable[1] if packed == stable[0] else self._tracks.decode(packed)

    def decode(self, fields: Mapping[bytes, bytes]) -> Decoded:
        """The entry's record, how its rows came out and its marks; ``ValueError`` when it is
        not one."""
        if PACKED in fields:
            try:
                got = self._packed.decode(fields[PACKED])
                n, columns = got.rows, msgspec.structs.astuple(got.columns)
                marks, tracks = bytes(got.marks), self._tracks_of(bytes(got.tracks), n)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return self._plain(Record.of(fields))
            fit = n == len(got.labels) and array_length(marks) == n
            if fit and list(map(len, columns)) == self._lengths(n):
                return Decoded(Record(ts=got.ts, rows=list(columns), labels=got.labels,
                                      received=got.received, marks=[], scores=got.scores,
                                      tracks=tracks, models=got.models, fallback=got.fallback),
                               "columns", marks)  # fmt: skip
            return self._plain(Record.of(fields))
        raw = fields.get(JSON)
        if raw is None:
            return self._plain(Record.of(fields))  # (raises: not a record)
        try:
            return self._plain(self._typed.decode(raw), "typed")
        except (msgspec.DecodeError, msgspec.ValidationError):
            return self._plain(Record.decode(raw))

    @staticmethod
    def _plain(rec: Record, how: Rows = "logged") -> Decoded:
        """A record decoded whole: its marks packed as a packed record's are."""
        return Decoded(rec, how, _packer.encode(rec.marks))


def pick_marks(marks: bytes, picked: Sequence[int]) -> bytes:
    """Those rows' of a record's packed marks (:class:`Decoded`), packed.

    >>> msgspec.msgpack.decode(pick_marks(_packer.encode(["a", "b", "c"]), [0, 2]))
    ['a', 'c']
    """
    got = msgspec.msgpack.decode(marks)
    return _packer.encode([got[i] for i in picked])


def record_of(j: Joined) -> Record | None:
    """A join as history keeps it (None: its logged rows cannot be read)."""
    entry = j.entry
    try:
        rows = j.features()
        scores = entry.scores
        served = [scores[i] for i in j.rows]
    except (ValueError, TypeError, IndexError):
        return None
    return Record(ts=j.ts, rows=rows, labels=list(j.labels), received=list(j.received),
                  marks=list(j.keys), scores=served,
                  tracks=[entry.track(i) for i in j.rows],
                  models={t: (rev, v) for t, (rev, v) in entry.meta.models.items()},
                  fallback=entry.meta.fallback is not None)  # fmt: skip


def append(pipe: Any, keys: Keys, records: Sequence[Record], keep: float, now: float) -> None:
    """Add ``records`` to the history with the commands of ``pipe``, and let go of what is
    older than ``keep`` seconds (approximately: Redis trims whole nodes)."""
    if not records:
        return
    minid = f"{int((now - keep) * 1000)}-0"
    for rec in records:
        pipe.xadd(keys.history, rec.fields(), minid=minid, approximate=True)  # type: ignore[arg-type]


def read(client: Any, keys: Keys, after: str = "-", until: str = "+") -> Iterator[tuple[str, Record | None]]:  # fmt: skip
    """The history's entries from ``after`` (exclusive, unless "-") to ``until``, oldest
    first: each id and its record (None: not one, as the caller counts)."""
    yield from read_with(client, keys, Record.of, after, until)


def read_with(
    client: Any,
    keys: Keys,
    decode: Callable[[Mapping[bytes, bytes]], Any],
    after: str = "-",
    until: str = "+",
    ahead: Executor | None = None,
) -> Iterator[tuple[str, Any]]:
    """As :func:`read`, each entry's fields decoded by ``decode`` (``RecordDecoder.decode``:
    a record and how its rows came out); None when it raises ``ValueError``. With ``ahead``
    the next page is read there while this one is decoded (Redis answers, and the reply
    crosses the socket, while the caller works)."""

    def page(start: str, count: int) -> list[Any]:
        return client.xrange(keys.history, start, until, count=count)  # type: ignore[no-any-return]

    count = FIRST_READ_ENTRIES
    got = page(after, count)
    while True:
        more = len(got) == count
        start = "(" + got[-1][0].decode() if more else ""
        count = page_entries(got) if more else 0
        coming = ahead.submit(page, start, count) if more and ahead is not None else None
        for eid, fields in got:
            try:
                yield eid.decode(), decode(fields)
            except ValueError:
                yield eid.decode(), None
        if not more:
            return
        got = coming.result() if coming is not None else page(start, count)


def page_entries(got: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> int:
    """How many entries the next page of the history takes: about ``READ_BYTES`` of them, by
    the size of the entries of the last page ``got``.

    >>> page_entries([(b"1-0", {b"data": b"x" * 16_384})] * 64)
    64
    >>> page_entries([(b"1-0", {b"data": b"x" * 300})] * 64), page_entries([(b"1-0", {})])
    (3495, 4096)
    """
    size = sum(len(value) for _, fields in got for value in fields.values())
    fit = READ_BYTES * len(got) // max(size, 1)
    return int(min(MAX_READ_ENTRIES, max(MIN_READ_ENTRIES, fit)))


def span(client: Any, keys: Keys) -> tuple[int, str | None, str | None]:
    """How many entries the history holds, its first id and its last (None: empty)."""
    pipe = client.pipeline(transaction=False)
    pipe.xlen(keys.history)
    pipe.xrange(keys.history, "-", "+", count=1)
    pipe.xrevrange(keys.history, "+", "-", count=1)
    n, first, last = pipe.execute()
    return int(n), first[0][0].decode() if first else None, last[0][0].decode() if last else None


def cost(client: Any, keys: Keys, sample: int = 50) -> int | None:
    """The bytes the history holds in Redis (``MEMORY USAGE`` with ``sample`` nodes; None
    when Redis refuses the command)."""
    try:
        used = client.memory_usage(keys.history, samples=sample)
    except Exception:  # (a managed Redis may rename it)
        return None
    return int(used) if used is not None else 0
