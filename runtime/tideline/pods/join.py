"""Delayed-feedback join: labels meet the predictions they are about, in Redis.

Servers log every request (:mod:`tideline.predlog`); label producers later
send ``{"id": ..., "label": ...}``. A :class:`LogJoin` finds each label's
prediction in the log by its id - a generated id names its log entry, a
client's own id is looked up in the log's index - so what a reader holds in
memory does not grow with traffic or with ``labelWindow``: a label is joined
whenever it comes within the window, at any prediction rate.

* A label more than ``labelWindow`` after its prediction is *late* (the
  label's time is its arrival on the feedback stream; a generated id
  carries the prediction's time, so no lookup is needed to say so).
* A label whose prediction is not in the log yet (it may overtake the
  server's write by a few milliseconds, or a Redis outage may hold the
  server's log back) waits, in memory, bounded by ``max_waiting`` (count)
  and ``max_waiting_bytes``, and is looked up again with a growing delay.
  Past either bound, a new label is *unmatched* at once (a flood of labels
  for ids that never existed must not grow the process); so is one that
  waited the window (at most ``MAX_WAIT``), and one whose server's log has
  gone past where its prediction would be (a made-up id).
* Only a label that may be genuine waits: one for a generated id of a
  server whose log is listed (``logs``: a server lists it before it answers,
  and while it lives). A generated id naming a server that is not (a made-up
  instance), and a client's own id that is in no index bucket (a server
  binds those before it answers: :meth:`tideline.pods.server.logwriter.PredictionLog.bind`),
  are *unmatched* at once. (They waited ``MAX_WAIT`` each, and 110,000 of
  them filled the waiting room and pushed a genuine label out.)
* A row the log did not keep (over its size limit: ``Meta.cut``) takes no
  label: *unmatched*, never joined with other features.
* With a default label (``default_after``), a label that comes more than
  ``after`` after its prediction comes after its default: *after-default*. With
  ``late="correct"`` (``spec.learning.lateLabel``) it is joined as a correction
  of the default, under a mark of its own (:data:`LATE`), when the prediction
  was taken by its default (which then leaves a second mark, :data:`DEFAULTED`:
  :meth:`LogJoin.defaulted`); as the prediction's label when nothing took it yet
  (the default, due about now, is then not given); and a *duplicate* when a
  label took it: the default and one late label, or one label, each once.
* A prediction takes one label: the first wins, a later one is a
  *duplicate*. The marks live in Redis (``taken:{reader}:{slice}``, dropped
  with the predictions they mark from the log), so
  they hold across restarts; a reader that acknowledges what it learned in
  a transaction (the learner) writes the marks in that same transaction
  (:meth:`LogJoin.commit`), and until then holds them in memory.

Every rejection is reported (:meth:`LogJoin.take_rejected`), never dropped.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import compress, filterfalse, repeat
from typing import Any

import redis

from tideline import predlog
from tideline.contracts import Keys
from tideline.predlog import Batch, Entry, Location

# Log entries kept once read (labels for one batch tend to come together), bounded by
# the bytes they came as (decoded rows take a few times that): entries hold up to 64 KiB.
ENTRY_CACHE_BYTES = 8 << 20
RETRY_FIRST, RETRY_MAX = 0.1, 5.0  # seconds between lookups of a waiting label
INDEX_CHUNK = 12  # index buckets (an hour) asked at a time for clients' own ids
# A label waits for its prediction to be logged this long at most (or labelWindow, if
# shorter): a server writes its log every 20 ms, or, through a Redis outage, once Redis
# is back; a label for an id that was never logged must not hold memory for days.
MAX_WAIT = 600.0


Mark = tuple[int, str]  # a joined prediction: (its slice of time, its key)
# Marks given as MessagePack arrays of keys (a history record's, as it was packed: see
# LogJoin.commit_packed) added to a slice's set in Redis, where they are unpacked: a
# catch-up's 100,000 marks took the reading process 30 ms as SADD's arguments, 5 ms so.
# KEYS[1]: the slice's set; ARGV[1]: when it expires; ARGV[2..]: the arrays. What is not a
# string in them is no mark, an array Redis cannot unpack none (a record written by hand);
# the set expires with each batch added (a script that fails midway has added them).
_ADD_PACKED = """
local key, at, batch, n = KEYS[1], ARGV[1], {}, 0
local function add()
  redis.call('SADD', key, unpack(batch, 1, n))
  redis.call('EXPIREAT', key, at)
  batch, n = {}, 0
end
for i = 2, #ARGV do
  local ok, marks = pcall(cmsgpack.unpack, ARGV[i])
  if ok and type(marks) == 'table' then
    for _, mark in pairs(marks) do
      if type(mark) == 'string' then
        n = n + 1
        batch[n] = mark
        if n == 1000 then add() end
      end
    end
  end
end
if n > 0 then add() end
return 1
"""
LATE = " late"  # a late label's mark: its prediction's key and this (lateLabel: correct)
DEFAULTED = " default"  # the mark a default leaves beside its prediction's (the same)


@dataclass(frozen=True)
class Joined:
    """Labels with their predictions: rows of one logged request, in the labels' order."""

    entry: Entry  # the logged request
    ts: float  # when it was made (seconds)
    rows: list[int]  # the rows the labels are about
    labels: list[Any]
    feedback_ids: list[str]
    received: list[float]  # when each label arrived (seconds)
    # the predictions this takes (see :meth:`LogJoin.commit`): their slice of time (a
    # request's rows share one) and keys
    slice: int
    keys: list[str]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def marks(self) -> list[Mark]:
        """Each label's mark: (the slice of time, its prediction's key)."""
        return list(zip(repeat(self.slice), self.keys))

    @property
    def late(self) -> list[bool]:
        """Which labels came after their prediction's default (``late="correct"``)."""
        return [key.endswith(LATE) for key in self.keys]

    def features(self) -> list[dict[str, Any]]:
        """The labelled rows' features, as objects (``ValueError`` when the entry's are not)."""
        return self.entry.pick(self.rows)


@dataclass(frozen=True)
class Rejected:
    feedback_id: str
    prediction_id: str
    label: Any
    reason: str  # "late", "unmatched" or "duplicate", perhaps with ": detail"


@dataclass
class _Label:
    """A label waiting for its prediction to be logged."""

    feedback_id: str
    prediction_id: str
    label: Any
    received: float
    delay: float = RETRY_FIRST
    next_try: float = 0.0

    @property
    def size(self) -> int:
        return len(self.prediction_id) + len(self.feedback_id) + 200  # strings and objects


# a label as it is resolved: (feedback id, prediction id, label, received, row, waited)
_Item = tuple[str, str, Any, float, int, "_Label | None"]


class _Request:
    """The labels of one resolve that name one logged request, and where it is."""

    __slots__ = ("instance", "entry", "k", "secret", "ts", "key", "items", "keys", "late")

    def __init__(self, instance: str, entry: str, k: int, secret: str | None) -> None:
        self.instance, self.entry, self.k, self.secret = instance, entry, k, secret
        self.ts = predlog.entry_seconds(entry)
        self.key = f"{instance} {entry} {k} "  # a row's key adds its number
        self.items: list[_Item] = []
        self.keys: list[str] = []  # each item's prediction (its key: the marks')
        self.late: list[bool] = []  # each item: past its default's time (lateLabel: correct)


def _rows(entry: Entry) -> int:
    """Rows a logged request answered (0 when its entry cannot be read)."""
    try:
        return len(entry)
    except (ValueError, TypeError):
        return 0


def _request(head: str) -> _Request | None:
    """The request a generated id's head names (:func:`tideline.predlog.parse_head`)."""
    where = predlog.parse_head(head)
    return _Request(*where) if where is not None else None


class LogJoin:
    """Joins labels with the prediction log in Redis for one reader (see module docs)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        label_window: float,
        reader: str,
        *,
        default_after: float | None = None,
        late: str = "ignore",
        max_waiting: int = 100_000,
        max_waiting_bytes: int = 32 << 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.r: Any = client
        self.keys = keys
        self.label_window = label_window
        # with spec.learning.labelDefault: a prediction is learned with the default label
        # when no label came this long after it (tideline.pods.defaults), and a label that
        # comes later does not take it (see _place)
        self.default_after = default_after
        self.late = late  # such a label: "ignore"d (after-default), or joined to "correct"
        self.retention = predlog.retention(label_window)
        # The marks of a prediction go with it from the log: kept in sets per slice of
        # time, an eighth of the retention (10 s to 5 min), each dropped whole.
        self.mark_seconds = int(min(300.0, max(10.0, self.retention / 8)))
        self.reader = reader
        self.max_waiting, self.max_waiting_bytes = max_waiting, max_waiting_bytes
        self.clock = clock
        self._new: list[tuple[str, str, Any, float]] = []
        self._waiting: list[_Label] = []
        self._waiting_bytes = 0
        self._held: set[str] = set()  # predictions joined here, not yet marked in Redis
        self._defaulted: set[str] = set()  # of them, those a default took (late="correct")
        self._cache: collections.OrderedDict[tuple[str, str], tuple[Batch, int]] = (
            collections.OrderedDict()
        )
        self._cache_bytes = 0
        self._rejected: list[Rejected] = []
        self.overflow = 0  # labels refused because the waiting room was full
        self.lookups = 0  # log entries read from Redis (the cache missed)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def add(self, feedback_id: str, pred_id: str, label: Any, received: float) -> None:
        """A label to join at the next :meth:`resolve`."""
        self._new.append((feedback_id, pred_id, label, received))

    def take_rejected(self) -> list[Rejected]:
        out, self._rejected = self._rejected, []
        return out

    def _reject(self, item: _Item, reason: str) -> None:
        self._rejected.append(Rejected(item[0], item[1], item[2], reason))

    # -- resolving -----------------------------------------------------------------------
    def resolve(self) -> list[Joined]:
        """Join the labels added since, and the waiting ones that are due: a :class:`Joined`
        per logged request they name, each request's labels in the order they came."""
        now = self.clock()
        new, self._new = self._new, []
        due: list[_Label] = []
        if self._waiting and any(w.next_try <= now for w in self._waiting):
            due = [w for w in self._waiting if w.next_try <= now]
            self._waiting = [w for w in self._waiting if w.next_try > now]
            self._waiting_bytes = sum(w.size for w in self._waiting)
        if not new and not due:
            return []
        requests = self._locate(due, new, now)
        entries, taken = self._read(requests)
        out: list[Joined] = []
        misses: list[_Request] = []
        for req in requests:
            batch = entries.get((req.instance, req.entry))
            if batch is None:
                misses.append(req)
                continue
            joined = self._match(req, batch, taken)
            if joined is not None:
                out.append(joined)
        if misses:
            self._missed(misses, now)
        return out

    def _match(self, req: _Request, batch: Batch, taken: set[str]) -> Joined | None:
        """The labels of a request that take their predictions; the rest rejected."""
        try:
            entry = batch.request(req.k)
        except IndexError:
            for item in req.items:
                self._reject(item, "unmatched: no such request in the entry")
            return None
        if req.secret is not None and entry.meta.secret != req.secret:
            for item in req.items:
                self._reject(item, "unmatched: the id's secret is not its prediction's")
            return None
        n, held, b = _rows(entry), self._held, int(req.ts // self.mark_seconds)
        cut = entry.meta.cut
        rows: list[int] = []
        labels: list[Any] = []
        fids: list[str] = []
        received: list[float] = []
        keys: list[str] = []
        for item, key, late in zip(req.items, req.keys, req.late, strict=True):
            row = item[4]
            if row >= n:
                self._reject(item, "unmatched: no such row in the request")
                continue
            elif cut is not None and row in cut:
                self._reject(item, "unmatched: the row was over the log's size limit, not logged")
                continue
            if late and (key in held or key in taken):  # past 'after': taken by its default?
                defaulted = key in self._defaulted or key + DEFAULTED in taken
                key += LATE
                if not defaulted:
                    self._reject(item, "duplicate")
                    continue
            if key in held or key in taken:
                self._reject(item, "duplicate")
            else:
                held.add(key)
                rows.append(row)
                labels.append(item[2])
                fids.append(item[0])
                received.append(item[3])
                keys.append(key)
        if not rows:
            return None
        return Joined(entry, req.ts, rows, labels, fids, received, b, keys)

    def _locate(
        self, due: list[_Label], new: list[tuple[str, str, Any, float]], now: float
    ) -> list[_Request]:
        """The requests the labels name: from a generated id's head (one parse a request),
        or from the index of clients' ids; each label checked against the window."""
        requests: dict[str, _Request | None] = {}
        clients: list[_Item] = []
        items: list[_Item] = [
            (w.feedback_id, w.prediction_id, w.label, w.received, -1, w) for w in due
        ]
        items += [(f, p, y, t, -1, None) for f, p, y, t in new]
        for item in items:
            head, _, row = item[1].rpartition("-")
            req = requests.get(head, False) if predlog.is_row(row) else None
            if req is False:
                req = requests[head] = _request(head)
            if req is None:
                clients.append(item)
                continue
            assert isinstance(req, _Request)
            self._place(req, item, int(row))
        out = [req for req in requests.values() if req is not None and req.items]
        if clients:
            out += self._locate_clients(clients, now)
        return out

    def _locate_clients(self, clients: list[_Item], now: float) -> list[_Request]:
        requests: dict[str, _Request] = {}
        for item, hit in zip(clients, self._index(clients, now), strict=True):
            where = Location.from_key(hit) if hit is not None else None
            if where is None:  # bound before its prediction was answered: there is none
                self._reject(item, "unmatched: no prediction has this id")
                continue
            head = f"{where.instance} {where.entry} {where.request}"
            req = requests.get(head)
            if req is None:
                req = requests[head] = _Request(where.instance, where.entry, where.request, None)
            self._place(req, item, where.row)
        return [req for req in requests.values() if req.items]

    def _place(self, req: _Request, item: _Item, row: int) -> None:
        """A label to its request's, if it came within the window of the request's time."""
        if item[3] - req.ts > self.label_window:
            self._reject(item, "late")
        elif req.ts > item[3] + predlog.FUTURE_SECONDS:
            self._reject(item, "unmatched: the id names a time to come")
        elif self.default_after is not None and item[3] - req.ts > self.default_after:
            if self.late != "correct":
                self._reject(item, "after-default: the prediction was learned with the "
                             "default label")  # fmt: skip
            else:
                req.items.append((*item[:4], row, item[5]))
                req.keys.append(req.key + str(row))
                req.late.append(True)
        else:
            req.items.append((*item[:4], row, item[5]))
            req.keys.append(req.key + str(row))
            req.late.append(False)

    def _index(self, clients: list[_Item], now: float) -> list[str | None]:
        """Where the clients' own ids are logged: the index buckets, newest first, a few at a
        time, each asked only for the ids not found yet (a window of days has hundreds)."""
        out: list[str | None] = [None] * len(clients)
        left = list(range(len(clients)))
        order = predlog.buckets(now, self.label_window)
        for at in range(0, len(order), INDEX_CHUNK):
            if not left:
                break
            names = [clients[i][1] for i in left]
            pipe = self.r.pipeline(transaction=False)
            for b in order[at : at + INDEX_CHUNK]:
                pipe.hmget(self.keys.log_ids(b), names)
            found = pipe.execute()
            still = []
            for k, i in enumerate(left):
                hit = next((f[k] for f in found if f[k] is not None), None)
                if hit is None:
                    still.append(i)
                else:
                    out[i] = hit.decode()
            left = still
        return out

    def _read(self, requests: list[_Request]) -> tuple[dict[tuple[str, str], Batch], set[str]]:
        """The log entries the requests are in (cached or read), and which of the labelled
        predictions are taken."""
        entries: dict[tuple[str, str], Batch] = {}
        want: list[tuple[str, str]] = []
        marks: dict[int, list[str]] = {}
        held = self._held
        for req in requests:
            k = (req.instance, req.entry)
            hit = self._cache.get(k)
            if hit is not None:
                self._cache.move_to_end(k)
                entries[k] = hit[0]
            elif k not in entries and k not in want:
                want.append(k)
            names = marks.setdefault(int(req.ts // self.mark_seconds), [])
            names.extend(key for key in req.keys if key not in held)
            for key, late in zip(req.keys, req.late, strict=True):
                if late:  # (whether a default took it, and whether a late label did)
                    names += [key + DEFAULTED, key + LATE]
        marks = {b: names for b, names in marks.items() if names}
        if not want and not marks:
            return entries, set()
        pipe = self.r.pipeline(transaction=False)
        for instance, entry_id in want:
            pipe.xrange(self.keys.log(instance), entry_id, entry_id, count=1)
        self._ask_taken(pipe, marks)
        replies = pipe.execute()
        self.lookups += len(want)
        for k, found in zip(want, replies, strict=False):
            if not found:
                continue
            fields = found[0][1]
            try:
                batch = predlog.decode(fields)
            except ValueError:
                continue  # not an entry a server wrote: as if it were not there
            size = sum(map(len, fields.values()))
            entries[k] = batch
            self._cache[k] = (batch, size)
            self._cache_bytes += size
            while self._cache_bytes > ENTRY_CACHE_BYTES and len(self._cache) > 1:
                self._cache_bytes -= self._cache.popitem(last=False)[1][1]
        return entries, _taken(marks, replies[len(want) :])

    def _missed(self, misses: list[_Request], now: float) -> None:
        """Requests whose entry is not in the log: still to come, gone, or never there."""
        instances = sorted({req.instance for req in misses})
        pipe = self.r.pipeline(transaction=False)
        pipe.zmscore(self.keys.logs, instances)
        for instance in instances:
            pipe.xrevrange(self.keys.log(instance), "+", "-", count=1)
        listed, *found = pipe.execute()
        known = {i for i, score in zip(instances, listed, strict=True) if score is not None}
        tops = {
            i: (top[0][0].decode() if top else None)
            for i, top in zip(instances, found, strict=True)
        }
        for req in misses:
            top = tops[req.instance]
            gone = now - req.ts > self.retention - 1.0  # (then it is late, whatever else)
            late = "late: the prediction left the log before the label was read"
            if req.instance not in known and top is None:
                # no server writes that log, and it holds nothing: a made-up instance, or a
                # server gone with its log (then it may be late). Never a wait: see above.
                for item in req.items:
                    self._reject(item, late if gone else "unmatched: no server writes the log "
                                 "the id names")  # fmt: skip
            elif top is not None and predlog.entry_order(req.entry) <= predlog.entry_order(top):
                # the server has written past it: the entry was trimmed, or never was
                for item in req.items:
                    self._reject(item, late if gone else "unmatched: no such prediction in the log")
            else:
                for item in req.items:
                    self._wait(item, now, req.ts)

    def _wait(self, item: _Item, now: float, logged: float | None) -> None:
        """Look for a label's prediction again later (``logged``: its time, if the id says)."""
        since = logged if logged is not None else item[3]
        patience = min(self.label_window, MAX_WAIT)
        if now - since > patience:
            self._reject(item, "unmatched")
            return
        w = item[5] or _Label(*item[:4])
        if (len(self._waiting) >= self.max_waiting
                or self._waiting_bytes + w.size > self.max_waiting_bytes):  # fmt: skip
            self.overflow += 1
            self._reject(item, "unmatched: too many labels wait for their prediction")
            return
        # looked up again later and later, and once more as the window closes
        w.next_try = min(now + w.delay, since + patience + 0.001)
        w.delay = min(w.delay * 2, RETRY_MAX)
        self._waiting.append(w)
        self._waiting_bytes += w.size

    # -- marks ---------------------------------------------------------------------------
    def free(self, marks: dict[int, list[str]]) -> set[str]:
        """Of these predictions (keys by slice of time), hold those no label took - neither
        marked in Redis nor held here - as a label's are when it takes one (:meth:`commit`
        or :meth:`release` them); the others, taken, are returned. Most of a click stream's
        predictions are taken by nothing: those cost a lookup each in Redis and in a set
        here, and no object."""
        if not marks:
            return set()
        pipe = self.r.pipeline(transaction=False)
        self._ask_taken(pipe, marks)
        taken = _taken(marks, pipe.execute())
        held = self._held
        for names in marks.values():
            if not held.isdisjoint(names):
                taken.update(filter(held.__contains__, names))
        for names in marks.values():
            free = names if not taken else list(filterfalse(taken.__contains__, names))
            held.update(free)
            if self.late == "correct":  # (a late label corrects what it took)
                self._defaulted.update(free)
        return taken

    def defaulted(self, keys: list[str]) -> list[str]:
        """The second marks predictions taken by their defaults leave (``late="correct"``:
        a late label may correct each, once), committed with the first, in their slice."""
        return [key + DEFAULTED for key in keys]

    def slice_of(self, ts: float) -> int:
        """The slice of time of a prediction made at ``ts`` (its marks' set)."""
        return int(ts // self.mark_seconds)

    def marks_of(self, ts: float, keys: Iterable[str]) -> list[Mark]:
        """The marks of the predictions ``keys`` all made at ``ts`` (one request's)."""
        return list(zip(repeat(self.slice_of(ts)), keys))

    def _ask_taken(self, pipe: Any, marks: dict[int, list[str]]) -> None:
        for b, names in marks.items():
            pipe.smismember(self._marks_key(b), names)

    def commit(self, pipe: Any, marks: list[Mark]) -> None:
        """Mark these predictions taken, in Redis, with the commands added to ``pipe``."""
        by_slice: dict[int, list[str]] = {}
        for b, key in marks:
            by_slice.setdefault(b, []).append(key)
        self.commit_slices(pipe, by_slice)

    def commit_slices(self, pipe: Any, by_slice: dict[int, list[str]]) -> None:
        """As :meth:`commit`, the marks already grouped by their slice of time (a catch-up's:
        one request's rows share one, so it need not make a tuple a row)."""
        for b, names in by_slice.items():
            key = self._marks_key(b)
            pipe.sadd(key, *names)
            pipe.expireat(key, self._marks_expire(b))

    def commit_packed(self, pipe: Any, by_slice: dict[int, list[bytes]]) -> None:
        """As :meth:`commit_slices`, each slice's marks in MessagePack arrays of keys (a
        history record's marks as they were packed: :class:`tideline.pods.history.Decoded`),
        unpacked in Redis."""
        for b, packed in by_slice.items():
            pipe.eval(_ADD_PACKED, 1, self._marks_key(b), self._marks_expire(b), *packed)

    def _marks_expire(self, b: int) -> int:
        """When the marks of slice ``b`` go (their predictions are out of the log)."""
        return int((b + 1) * self.mark_seconds + self.retention) + 1

    def _marks_key(self, b: int) -> str:
        return self.keys.taken(self.reader, f"{self.mark_seconds}s:{b}")

    def committed(self, marks: list[Mark]) -> None:
        """The marks :meth:`commit` added are in Redis: no need to hold them here."""
        self._let_go([key for _, key in marks])

    def committed_slices(self, by_slice: dict[int, list[str]]) -> None:
        """As :meth:`committed`, for the marks :meth:`commit_slices` added."""
        for names in by_slice.values():
            self._let_go(names)

    def release(self, marks: list[Mark]) -> None:
        """Joined labels were not taken after all (they are dead-lettered): the next may join."""
        self._let_go([key for _, key in marks])

    def _let_go(self, keys: list[str]) -> None:
        self._held.difference_update(keys)
        if self._defaulted:
            self._defaulted.difference_update(keys)


def _taken(marks: dict[int, list[str]], replies: list[list[int]]) -> set[str]:
    """The keys SMISMEMBER said are taken, of ``marks`` asked in order."""
    taken: set[str] = set()
    for (_, names), flags in zip(marks.items(), replies, strict=True):
        if any(flags):
            taken.update(compress(names, flags))
    return taken
