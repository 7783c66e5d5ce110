"""Default labels: the predictions no label came for, learned with ``spec.learning.labelDefault``.

In a click or chargeback stream most labels never come: an impression not clicked sends
nothing. With ``labelDefault: {value: 0, after: 30m}`` a logged prediction with no label
``after`` its time is learned with ``value``, in prediction-time order, exactly once.

* :class:`DefaultLabels` follows every server's prediction log (``log:{instance}``, the
  streams :mod:`tideline.predlog` writes) with a cursor each, up to ``after`` before the
  time the learner has read its labels to. A row no label took (the same ``taken`` marks a
  label's join writes, :meth:`tideline.pods.join.LogJoin.free`) comes out as a
  :class:`tideline.pods.join.Joined` with the default label, and is learned as a label is.
* Exactly once: its mark is written in the checkpoint's transaction with what was
  learned, as a label's is; the cursors are in the checkpoint too, each at the oldest entry
  with a default not learned yet. After a crash the entries from there are read again, and
  the rows marked are skipped.
* A label wins when it came within ``after`` (the learner issues defaults only up to the
  time it has read its labels to); one that comes later never takes its prediction
  (``after-default``, :meth:`tideline.pods.join.LogJoin._place`).
* It keeps up: an entry is read once (64 rows of single-row requests), its rows' marks
  asked in one SMISMEMBER a slice of time; what it holds is a cursor per server and the
  entries whose defaults wait to be learned. Most rows of a click stream are taken by
  nothing: a request none of whose rows is taken is given its defaults whole, one
  :class:`tideline.pods.join.Joined` (its keys, no object a row), learned as one run
  (:class:`TypedRows`: its body decoded straight into the schema's typed rows).
* :class:`Defaulting` is when, for the learner and the monitor alike: a look for defaults
  every :data:`DEFAULTS_EVERY` seconds of labels read, up to :data:`CLOCK_SLACK` before the
  time every label has been read by, and the labels held for their predictions to be mature
  (:class:`tideline.maturing.Maturing`) let go up to the same time.
"""

from __future__ import annotations

import collections
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec
import orjson

from tideline import predlog
from tideline.contracts import Keys
from tideline.features import FeatureSchema
from tideline.maturing import Maturing
from tideline.pods.join import Joined, LogJoin

log = logging.getLogger("tideline.learner")

DEFAULTS = "defaults"  # what runs and dead letters of default labels name as their stream
READ_ENTRIES = 256  # log entries a read of one server's log takes at most
READS = 8  # reads a call of issue() makes at most (the learner's turn goes on)
START = "0-0"  # where a log no cursor names is read from: all of it
DEFAULTS_EVERY = 0.2  # seconds of labels read between two looks for rows to give defaults
# a label's time is the clock of the Redis (or Kafka) it came through: defaults wait this
# much longer than spec.learning.labelDefault.after for labels that clocks put late
CLOCK_SLACK = 2.0

T = TypeVar("T")


def next_id(entry_id: str) -> str:
    """The smallest stream id after ``entry_id``.

    >>> next_id("1764500000000-3")
    '1764500000000-4'
    """
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def entry_name(at: float, instance: str, entry_id: str) -> str:
    """What the runs of a log entry's default labels name as their entry: when the labels
    "came" (``after`` past the prediction: what ``learnedUntil`` counts), the log, the
    entry.

    >>> entry_name(1764500030.0, "0a1b2c3d4e5f", "1764500000000-3")
    '1764500030000-0a1b2c3d4e5f:1764500000000-3'
    """
    return f"{int(at * 1000)}-{instance}:{entry_id}"


class DefaultLabels:
    """The prediction log read for rows no label took ``after`` their time (see module)."""

    def __init__(
        self, client: Any, keys: Keys, join: LogJoin, value: Any, after: float, hold: bool = True
    ) -> None:
        self.r = client
        self.keys = keys
        self.join = join
        self.value = value  # the default as the reader's labels are (a learner's: a target)
        self.after = after
        # whether an entry's defaults stay open until done() (a learner: until learned and
        # checkpointed); a reader that handles them at once (the monitor) says no
        self.hold = hold
        self._fresh = START  # where a log no cursor names is read from
        # each log's next entry to read, and the entries read whose defaults are not learned
        # yet (oldest first), with how many of their rows are not
        self._next: dict[str, str] = {}
        self._open: dict[str, collections.OrderedDict[str, int]] = {}
        self.issued = 0  # rows given the default (learned or still pending)

    def start(self, state: dict[str, str] | None, fresh: str = START) -> None:
        """From the checkpoint's cursors (None: none); a log they do not name from ``fresh``
        (an entry id: every log from its start, or a reader that saw no label before some
        time from then)."""
        self._next = dict(state or {})
        self._open = {}
        self._fresh = fresh

    def state(self) -> dict[str, str]:
        """Where each log is to be read from after a restart: its oldest entry with a default
        not learned yet, or the next one."""
        out = dict(self._next)
        for instance, entries in self._open.items():
            if entries:
                out[instance] = next(iter(entries))
        return out

    def done(self, entry: bytes, rows: int = 1) -> None:
        """``rows`` default rows of ``entry`` (:func:`entry_name`) are learned or refused."""
        instance, _, entry_id = entry.decode().partition("-")[2].partition(":")
        entries = self._open.get(instance)
        if entries is None or entry_id not in entries:
            return
        entries[entry_id] -= rows
        if entries[entry_id] <= 0:
            del entries[entry_id]

    def issue(self, read_until: float) -> list[Joined]:
        """The rows no label took, of the predictions made ``after`` or more before
        ``read_until`` (the time every label that came before it has been read by)."""
        until_ms = int((read_until - self.after) * 1000)
        if until_ms <= 0:
            return []
        since = read_until - self.join.retention
        live = {m.decode(): last for m, last in
                self.r.zrangebyscore(self.keys.logs, since, "+inf", withscores=True)}  # fmt: skip
        for instance in list(self._next):  # (a log no server wrote for its retention is gone)
            if instance not in live and not self._open.get(instance):
                del self._next[instance]
        # the logs with entries not read yet, up to until_ms (a server lists its log with
        # the time it last wrote: a log whose cursor is past that has nothing new)
        todo = [
            instance
            for instance, last in live.items()
            if predlog.entry_order(self._next.get(instance, self._fresh))[0]
            <= min(last * 1000, until_ms)
        ]
        out: list[Joined] = []
        for _ in range(READS):
            if not todo:
                break
            pipe = self.r.pipeline(transaction=False)
            for instance in todo:
                pipe.xrange(self.keys.log(instance), self._next.get(instance, self._fresh), until_ms,
                            count=READ_ENTRIES)  # fmt: skip
            more = []
            read: list[_Read] = []
            for instance, entries in zip(todo, pipe.execute(), strict=True):
                read += [self._entry(instance, eid.decode(), fields) for eid, fields in entries]
                if len(entries) == READ_ENTRIES:
                    more.append(instance)
            out += self._free(read)
            todo = more
        return out

    def _entry(self, instance: str, entry_id: str, fields: dict[bytes, bytes]) -> _Read:
        """A logged entry's requests and their rows' keys (the rows a label may take)."""
        self._next[instance] = next_id(entry_id)
        read = _Read(instance, entry_id, predlog.entry_seconds(entry_id))
        try:
            batch = predlog.decode(fields)
        except ValueError:
            return read  # not an entry a server wrote (the join says so of its labels)
        for k in range(len(batch)):
            e = batch.request(k)
            try:
                n = len(e.scores)
            except (ValueError, TypeError, orjson.JSONDecodeError):
                continue
            prefix = f"{instance} {entry_id} {k} "  # (a row's key: LogJoin's, the marks')
            if e.meta.cut:  # (a row not logged takes no label)
                cut = set(e.meta.cut)
                rows = [i for i in range(n) if i not in cut]
                keys = [prefix + str(i) for i in rows]
            else:
                rows = list(range(n))
                keys = list(map(prefix.__add__, _row_names(n)))
            read.requests.append((e, rows, keys))
        return read

    def _free(self, read: list[_Read]) -> list[Joined]:
        """The rows of the entries read that no label took (asked at once: one round trip),
        as joined with the default label: a :class:`Joined` a request."""
        marks: dict[int, list[str]] = {}
        for entry in read:
            names = marks.setdefault(self.join.slice_of(entry.ts), [])
            for _, _, keys in entry.requests:
                names += keys
        taken = self.join.free({b: names for b, names in marks.items() if names})
        out: list[Joined] = []
        for entry in read:
            b = self.join.slice_of(entry.ts)
            name = entry_name(entry.ts + self.after, entry.instance, entry.entry_id)
            came = entry.ts + self.after
            given = 0
            for e, rows, keys in entry.requests:
                if taken and not taken.isdisjoint(keys):  # (most requests: none is taken)
                    mine = [(i, key) for i, key in zip(rows, keys, strict=True)
                            if key not in taken]  # fmt: skip
                    rows, keys = [i for i, _ in mine], [key for _, key in mine]
                n = len(rows)
                if not n:
                    continue
                given += n
                out.append(Joined(e, entry.ts, rows, [self.value] * n, [name] * n, [came] * n,
                                  b, keys))  # fmt: skip
            if given and self.hold:
                self._open.setdefault(entry.instance, collections.OrderedDict())[entry.entry_id] = (
                    given
                )
            self.issued += given
        return out


def _row_names(n: int) -> list[str]:
    """``str(i)`` of rows 0 to n - 1 (made once: a request's keys add them to its prefix)."""
    while len(_ROW_NAMES) < n:
        _ROW_NAMES.extend(map(str, range(len(_ROW_NAMES), max(n, 2 * len(_ROW_NAMES)))))
    return _ROW_NAMES[:n]


_ROW_NAMES: list[str] = [str(i) for i in range(256)]


class TypedRows:
    """The rows of requests given their defaults, decoded straight into a schema's typed rows
    (:meth:`tideline.features.FeatureSchema.row_type`): a msgspec decode of a request's body,
    no dict a row, and one pass into the matrix
    (:meth:`tideline.features.FeatureSchema.encode_typed`)."""

    def __init__(self, schema: FeatureSchema) -> None:
        body = msgspec.defstruct("Body", [("instances", list[schema.row_type()])])  # type: ignore[misc,valid-type]
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(body)

    def of(self, j: Joined) -> list[Any] | None:
        """The rows of a request given their defaults, in order; None when they are not all
        of the schema (a value missing, null, of another type, a name it does not have, rows
        written as arrays): those are read as a label's are."""
        try:
            rows = self._decoder.decode(j.entry.body).instances
            whole = len(rows) == len(j) and j.rows[-1] == len(j) - 1  # (rows ascend)
            return rows if whole else [rows[i] for i in j.rows]
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, IndexError):
            return None


class Defaulting(Generic[T]):
    """When the defaults are given, and which labels wait for them: the bookkeeping a reader of
    labels keeps with ``spec.learning.labelDefault`` (the learner and the monitor, each with
    its own :class:`DefaultLabels`, or None without a default; the labels it holds are
    ``T``s, at most ``most_rows`` rows of them).

    After each read of the labels, :meth:`due`: every :data:`DEFAULTS_EVERY` seconds of labels
    read, the defaults up to :data:`CLOCK_SLACK` before the time every label has been read by
    (``mature_to``), and the labels held that are mature by then. A label of a prediction
    not ``after`` old by ``mature_to`` is :meth:`early`: the reader holds it (:meth:`hold`; or takes
    it at once when there is no room), and has it back from :meth:`due` with the defaults of
    its time.
    """

    def __init__(self, defaults: DefaultLabels | None, most_rows: int) -> None:
        self.defaults = defaults
        self.maturing: Maturing[T] = Maturing(defaults.after if defaults else 0.0, most_rows)
        self.read_until: float | None = None  # every label that came before it is read
        # the predictions up to this time (real) have their outcomes: labelled, or defaults
        # given
        self.mature_to: float | None = None
        self._looked = -math.inf  # read_until at the last look for defaults

    def due(
        self, asked: float, entries: int, most: int, new: bool
    ) -> tuple[list[Joined], list[tuple[T, float]]]:
        """After a read of the labels asked for at ``asked`` (the streams' time) that brought
        ``entries`` of the ``most`` it asked for, ``new`` ones or re-read ones (a consumer's
        pending entries after a restart): the defaults due now, and the labels held that are
        mature with them (each with its prediction's time, oldest first).

        A short read of new entries says every label that came before ``asked`` is read; a
        re-read says nothing of what came since. Nothing is due until :data:`DEFAULTS_EVERY`
        seconds of labels are read after the last look (a look reads every server's log)."""
        if entries < most and new:
            self.read_until = asked
        until = self.read_until
        if self.defaults is None or until is None or until - self._looked < DEFAULTS_EVERY:
            return [], []
        self._looked = until
        self.mature_to = until - CLOCK_SLACK
        return self.defaults.issue(self.mature_to), self.maturing.mature(self.mature_to)

    def early(self, ts: float) -> bool:
        """Whether a label of a prediction made at ``ts`` comes before the prediction is mature
        (with a default only: without, every label is)."""
        return self.defaults is not None and not self.maturing.ripe(ts, self.mature_to)

    def hold(self, item: T, ts: float, rows: int) -> bool:
        """Keep an early label's ``item`` (``rows`` rows) until :meth:`due` lets it go; False
        when there is no room (the reader takes it now)."""
        return self.maturing.hold(item, ts, rows)


@dataclass
class _Read:
    """A log entry as read: where it is, when its requests were made, and each request with
    its rows and their keys."""

    instance: str
    entry_id: str
    ts: float
    requests: list[tuple[predlog.Entry, list[int], list[str]]] = field(default_factory=list)
