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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from tideline import predlog
from tideline.predlog import Batch, Entry, Location
from tideline.store import Keys

MAX_ID_LENGTH = 256
# Log entries kept once read (labels for one batch tend to come together), bounded by
# the bytes they came as (decoded rows take a few times that): entries hold up to 64 KiB.
ENTRY_CACHE_BYTES = 8 << 20
RETRY_FIRST, RETRY_MAX = 0.1, 5.0  # seconds between lookups of a waiting label
INDEX_CHUNK = 12  # index buckets (an hour) asked at a time for clients' own ids
# A label waits for its prediction to be logged this long at most (or labelWindow, if
# shorter): a server writes its log every 20 ms, or, through a Redis outage, once Redis
# is back; a label for an id that was never logged must not hold memory for days.
MAX_WAIT = 600.0


def prediction_id(value: Any) -> str:
    """A prediction id as the join keys it: a string or an integer, at most 256 characters.

    >>> prediction_id(42), prediction_id("9f2c-0")
    ('42', '9f2c-0')
    >>> prediction_id(None)
    Traceback (most recent call last):
    ...
    ValueError: an id must be a string or an integer (got null)
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        name = "null" if value is None else type(value).__name__
        raise ValueError(f"an id must be a string or an integer (got {name})")
    text = str(value)
    if len(text) > MAX_ID_LENGTH:
        raise ValueError(f"an id must be at most {MAX_ID_LENGTH} characters (got {len(text)})")
    return text


@dataclass(frozen=True)
class Joined:
    """A label with its prediction: the log entry and the row in it."""

    feedback_id: str
    label: Any
    received: float  # when the label arrived (seconds)
    where: Location
    entry: Entry

    @property
    def ts(self) -> float:
        """When the prediction was made."""
        return self.where.ts

    @property
    def features(self) -> dict[str, Any]:
        return self.entry.row(self.where.row)


@dataclass(frozen=True)
class Rejected:
    feedback_id: str
    prediction_id: str
    label: Any
    reason: str  # "late", "unmatched" or "duplicate", perhaps with ": detail"


@dataclass
class _Label:
    feedback_id: str
    prediction_id: str
    label: Any
    received: float
    delay: float = RETRY_FIRST
    next_try: float = 0.0
    where: Location | None = field(default=None)

    @property
    def size(self) -> int:
        return len(self.prediction_id) + len(self.feedback_id) + 200  # strings and objects


def _rows(entry: Entry) -> int:
    """Rows a logged request answered (0 when its entry cannot be read)."""
    try:
        return len(entry)
    except (ValueError, TypeError):
        return 0


class LogJoin:
    """Joins labels with the prediction log in Redis for one reader (see module docs)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        label_window: float,
        reader: str,
        *,
        max_waiting: int = 100_000,
        max_waiting_bytes: int = 32 << 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.r: Any = client
        self.keys = keys
        self.label_window = label_window
        self.retention = predlog.retention(label_window)
        # The marks of a prediction go with it from the log: kept in sets per slice of
        # time, an eighth of the retention (10 s to 5 min), each dropped whole.
        self.mark_seconds = int(min(300.0, max(10.0, self.retention / 8)))
        self.reader = reader
        self.max_waiting, self.max_waiting_bytes = max_waiting, max_waiting_bytes
        self.clock = clock
        self._new: list[_Label] = []
        self._waiting: list[_Label] = []
        self._waiting_bytes = 0
        self._held: set[str] = set()  # predictions joined here, not yet marked in Redis
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
        self._new.append(_Label(feedback_id, pred_id, label, received))

    def take_rejected(self) -> list[Rejected]:
        out, self._rejected = self._rejected, []
        return out

    def _reject(self, item: _Label, reason: str) -> None:
        self._rejected.append(Rejected(item.feedback_id, item.prediction_id, item.label, reason))

    # -- resolving -----------------------------------------------------------------------
    def resolve(self) -> list[Joined]:
        """Join the labels added since, and the waiting ones that are due; in label order."""
        now = self.clock()
        items, self._new = self._new, []
        if self._waiting and any(w.next_try <= now for w in self._waiting):
            due = [w for w in self._waiting if w.next_try <= now]
            self._waiting = [w for w in self._waiting if w.next_try > now]
            self._waiting_bytes = sum(w.size for w in self._waiting)
            items = due + items
        if not items:
            return []
        located = self._locate(items, now)
        entries, taken = self._read(located)
        out: list[Joined] = []
        misses: list[_Label] = []
        for item in located:
            where = item.where
            assert where is not None
            batch = entries.get((where.instance, where.entry))
            if batch is None:
                misses.append(item)
                continue
            entry = batch.request(where.request) if where.request < len(batch) else None
            if entry is None:
                self._reject(item, "unmatched: no such request in the entry")
            elif where.secret is not None and entry.meta.secret != where.secret:
                self._reject(item, "unmatched: the id's secret is not its prediction's")
            elif where.row >= _rows(entry):
                self._reject(item, "unmatched: no such row in the request")
            elif where.key in self._held or where.key in taken:
                self._reject(item, "duplicate")
            else:
                self._held.add(where.key)
                out.append(Joined(item.feedback_id, item.label, item.received, where, entry))
        if misses:
            self._missed(misses, now)
        return out

    def _locate(self, items: list[_Label], now: float) -> list[_Label]:
        """Where each label's prediction is: from its id, or from the index of clients' ids."""
        located: list[_Label] = []
        clients: list[_Label] = []
        for item in items:
            where = item.where or predlog.parse_id(item.prediction_id)
            if where is None:
                clients.append(item)
            elif self._in_window(item, where):
                item.where = where
                located.append(item)
        for item, hit in zip(clients, self._index(clients, now), strict=True):
            where = Location.from_key(hit) if hit is not None else None
            if where is None:
                self._wait(item, now, None)
            elif self._in_window(item, where):
                item.where = where
                located.append(item)
        return located

    def _index(self, clients: list[_Label], now: float) -> list[str | None]:
        """Where the clients' own ids are logged: the index buckets, newest first, a few at a
        time, each asked only for the ids not found yet (a window of days has hundreds)."""
        out: list[str | None] = [None] * len(clients)
        left = list(range(len(clients)))
        order = predlog.buckets(now, self.label_window)
        for at in range(0, len(order), INDEX_CHUNK):
            if not left:
                break
            names = [clients[i].prediction_id for i in left]
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

    def _in_window(self, item: _Label, where: Location) -> bool:
        if item.received - where.ts > self.label_window:
            self._reject(item, "late")
            return False
        if where.ts > item.received + predlog.FUTURE_SECONDS:
            self._reject(item, "unmatched: the id names a time to come")
            return False
        return True

    def _read(self, located: list[_Label]) -> tuple[dict[tuple[str, str], Batch], set[str]]:
        """The log entries the labels name (cached or read) and which predictions are taken."""
        entries: dict[tuple[str, str], Batch] = {}
        want: list[tuple[str, str]] = []
        marks: dict[int, list[str]] = {}
        for item in located:
            where = item.where
            assert where is not None
            k = (where.instance, where.entry)
            hit = self._cache.get(k)
            if hit is not None:
                self._cache.move_to_end(k)
                entries[k] = hit[0]
            elif k not in entries and k not in want:
                want.append(k)
            if where.key not in self._held:
                marks.setdefault(self._slice(where), []).append(where.key)
        if not want and not marks:
            return entries, set()
        pipe = self.r.pipeline(transaction=False)
        for instance, entry_id in want:
            pipe.xrange(self.keys.log(instance), entry_id, entry_id, count=1)
        for b, names in marks.items():
            pipe.smismember(self._marks_key(b), names)
        replies = pipe.execute()
        self.lookups += len(want)
        for k, found in zip(want, replies, strict=False):
            if not found:
                continue
            fields = found[0][1]
            try:
                entry = predlog.decode(fields)
            except ValueError:
                continue  # not an entry a server wrote: as if it were not there
            size = sum(map(len, fields.values()))
            entries[k] = entry
            self._cache[k] = (entry, size)
            self._cache_bytes += size
            while self._cache_bytes > ENTRY_CACHE_BYTES and len(self._cache) > 1:
                self._cache_bytes -= self._cache.popitem(last=False)[1][1]
        taken: set[str] = set()
        for (_, names), flags in zip(marks.items(), replies[len(want) :], strict=True):
            taken.update(n for n, f in zip(names, flags, strict=True) if f)
        return entries, taken

    def _missed(self, misses: list[_Label], now: float) -> None:
        """Labels whose entry is not in the log: still to come, gone, or never there."""
        instances = sorted({m.where.instance for m in misses if m.where is not None})
        pipe = self.r.pipeline(transaction=False)
        for instance in instances:
            pipe.xrevrange(self.keys.log(instance), "+", "-", count=1)
        tops = {
            i: (found[0][0].decode() if found else None)
            for i, found in zip(instances, pipe.execute(), strict=True)
        }
        for item in misses:
            where = item.where
            assert where is not None
            top = tops[where.instance]
            if top is not None and predlog.entry_order(where.entry) <= predlog.entry_order(top):
                # the server has written past it: the entry was trimmed, or never was
                if now - where.ts > self.retention - 1.0:
                    self._reject(
                        item, "late: the prediction left the log before the label was read"
                    )
                else:
                    self._reject(item, "unmatched: no such prediction in the log")
            else:
                self._wait(item, now, where)

    def _wait(self, item: _Label, now: float, where: Location | None) -> None:
        since = where.ts if where is not None else item.received
        patience = min(self.label_window, MAX_WAIT)
        if now - since > patience:
            self._reject(item, "unmatched")
            return
        if (len(self._waiting) >= self.max_waiting
                or self._waiting_bytes + item.size > self.max_waiting_bytes):  # fmt: skip
            self.overflow += 1
            self._reject(item, "unmatched: too many labels wait for their prediction")
            return
        # looked up again later and later, and once more as the window closes
        item.next_try = min(now + item.delay, since + patience + 0.001)
        item.delay = min(item.delay * 2, RETRY_MAX)
        self._waiting.append(item)
        self._waiting_bytes += item.size

    # -- marks ---------------------------------------------------------------------------
    def commit(self, pipe: Any, joined: list[Location]) -> None:
        """Mark these predictions taken, in Redis, with the commands added to ``pipe``."""
        by_slice: dict[int, list[str]] = {}
        for where in joined:
            by_slice.setdefault(self._slice(where), []).append(where.key)
        for b, names in by_slice.items():
            key = self._marks_key(b)
            pipe.sadd(key, *names)
            pipe.expireat(key, int((b + 1) * self.mark_seconds + self.retention) + 1)

    def _slice(self, where: Location) -> int:
        return int(where.ts // self.mark_seconds)

    def _marks_key(self, b: int) -> str:
        return self.keys.taken(self.reader, f"{self.mark_seconds}s:{b}")

    def committed(self, joined: list[Location]) -> None:
        """The marks :meth:`commit` added are in Redis: no need to hold them here."""
        self._held.difference_update(w.key for w in joined)

    def release(self, where: Location) -> None:
        """A joined label was not taken after all (it is dead-lettered): the next may join."""
        self._held.discard(where.key)
