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

An entry is one logged request's joined rows, as JSON in ``data``:

    {"ts": 1733..., "rows": [...], "labels": [...], "received": [...],
     "marks": [...], "scores": [...], "tracks": [...], "models": {track: [rev, v]},
     "fallback": false}

>>> rec = Record(ts=10.0, rows=[{"x": 1}], labels=[1.0], received=[12.5], marks=["a b 0 0"],
...              scores=[0.8], tracks=["stable"], models={"stable": ("r1", 3)})
>>> Record.decode(rec.encode()) == rec
True
>>> rec.served_by_track("stable").tolist(), rec.served_by_track("canary").tolist()
([True], [False])

A catch-up reads them with a :class:`RecordDecoder` of its model's features and task: a
record whose every row has every feature, typed as the schema says, decodes into typed rows
(no dict a row) that :meth:`tideline.features.FeatureSchema.encode_typed` lays out in bulk,
as the learner's :class:`tideline.samples.SampleDecoder` reads packed samples; any other
record decodes as a plain :class:`Record`, its rows as logged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from typing import Any

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
        return _encoder.encode(self)

    @staticmethod
    def decode(raw: bytes) -> Record:
        """``ValueError`` when it is not a record."""
        try:
            return _decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise ValueError(f"not a history record: {e}") from None

    def served_by_track(self, track: str) -> np.ndarray:
        """Which rows ``track`` answered (no fallback): the ones a backtest compares on."""
        if self.fallback:
            return np.zeros(len(self.rows), dtype=bool)
        return np.array([t == track for t in self.tracks], dtype=bool)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Record)


class RecordDecoder:
    """Decodes history records for one model's features and task: typed when it can be.

    :meth:`decode` returns a :class:`Record` whose ``rows`` are structs of
    :meth:`tideline.features.FeatureSchema.row_type` (``typed`` True: every row has every
    feature and no other, numbers as numbers, categories as strings; every label a number,
    or a class name for a multiclass model; every score the task's) - or, for any other
    record, the plain :meth:`Record.decode`, its rows as dicts (``typed`` False).

    >>> schema = FeatureSchema.from_spec([{"name": "x"}])
    >>> decoder = RecordDecoder(schema, Task("binary"))
    >>> rec = Record(ts=1.0, rows=[{"x": 2}], labels=[1], received=[2.0], marks=["k"],
    ...              scores=[0.5], tracks=["stable"])
    >>> got, typed = decoder.decode(rec.encode())
    >>> typed, schema.encode_typed(got.rows).tolist(), got.labels
    (True, [[2.0]], [1.0])
    >>> decoder.decode(Record(**{**msgspec.structs.asdict(rec), "rows": [{"x": None}]}).encode())
    (Record(ts=1.0, rows=[{'x': None}], labels=[1], received=[2.0], marks=['k'], scores=[0.5], tracks=['stable'], models={}, fallback=False), False)
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

    def decode(self, raw: bytes) -> tuple[Record, bool]:
        """The record, and whether its rows are typed; ``ValueError`` when it is not one."""
        try:
            return self._typed.decode(raw), True
        except (msgspec.DecodeError, msgspec.ValidationError):
            return Record.decode(raw), False


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
        pipe.xadd(keys.history, {b"data": rec.encode()}, minid=minid, approximate=True)


def read(client: Any, keys: Keys, after: str = "-", until: str = "+") -> Iterator[tuple[str, Record | None]]:  # fmt: skip
    """The history's entries from ``after`` (exclusive, unless "-") to ``until``, oldest
    first: each id and its record (None: not one, as the caller counts)."""
    yield from read_with(client, keys, Record.decode, after, until)


def read_with(
    client: Any,
    keys: Keys,
    decode: Callable[[bytes], Any],
    after: str = "-",
    until: str = "+",
    ahead: Executor | None = None,
) -> Iterator[tuple[str, Any]]:
    """As :func:`read`, each entry's ``data`` decoded by ``decode`` (``RecordDecoder.decode``:
    a record and whether it is typed); None when it raises ``ValueError``. With ``ahead``
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
                yield eid.decode(), decode(fields[b"data"])
            except (KeyError, ValueError):
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
    size = sum(len(fields.get(b"data") or b"") for _, fields in got)
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
