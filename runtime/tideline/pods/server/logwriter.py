"""One server process's prediction log (:mod:`tideline.predlog`): the ids its requests are
answered with, the slots they take in the log's entries, the queue, and the task that
writes it to Redis off the requests' time.

A request takes a slot when its ids are made (the ids name the slot: no index, no
lookup for a label later) and fills it when it is answered
(:meth:`PredictionLog.fill`); a slot whose request failed in between stays an
empty request. Every ``flush_interval`` the writer sends what is queued, in one
round trip, and trims the stream to ``labelWindow`` and a grace. Through a Redis
outage the queue is bounded (requests and bytes): the oldest entries go, counted.
A body is logged within ``row_bytes`` a row (:func:`tideline.predlog.bounded`).

A request that names its own ids has them bound to its slot before it is
answered (:meth:`PredictionLog.bind`: one round trip, for those requests only);
an id another request holds in its window is refused (409), and the slot
emptied. Until the bind is answered its entry, and every later one, waits in
the queue: a stream takes its ids in order, and a refused request must not be
written.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.exceptions

from tideline import predlog
from tideline.contracts import Keys
from tideline.pods.metrics import ServerMetrics
from tideline.pods.server.errors import Conflict, Unavailable, Unprocessable

log = logging.getLogger("tideline.server")

_SUFFIXES = [str(i) for i in range(10_000)]
_EMPTY_BODY = b'{"instances":[]}'
REGISTER_EVERY = 30.0  # seconds: an idle server's log is listed again this often (see run)


class GeneratedIds(Sequence[str]):
    """The ids this server gave a request's rows: ``prefix + str(i)`` for each row i.

    Kept as the prefix and the count: the response writes them with one string
    join, and the prediction log needs none of them (the prefix names the log
    entry, :func:`tideline.predlog.parse_id`). Indexing builds the list, once,
    for whoever needs single ids.

    >>> ids = GeneratedIds("ab1-", 3)
    >>> list(ids), ids[-1], ids.json()
    (['ab1-0', 'ab1-1', 'ab1-2'], 'ab1-2', b'["ab1-0","ab1-1","ab1-2"]')
    """

    __slots__ = ("prefix", "n", "_list")

    def __init__(self, prefix: str, n: int) -> None:
        self.prefix, self.n = prefix, n  # prefix: hex digits and '-', nothing to escape
        self._list: list[str] | None = None

    def _suffixes(self) -> Sequence[str]:
        return _SUFFIXES[: self.n] if self.n <= len(_SUFFIXES) else [str(i) for i in range(self.n)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        if self._list is None:
            p = self.prefix
            self._list = [p + s for s in self._suffixes()]
        return self._list[i]

    def json(self) -> bytes:
        """The ids as a JSON array."""
        p = self.prefix
        return ('["' + p + ('","' + p).join(self._suffixes()) + '"]').encode()


def ids_json(ids: Sequence[str]) -> Any:
    """Ids as orjson writes them into a response: generated ones through one join."""
    return orjson.Fragment(ids.json()) if isinstance(ids, GeneratedIds) else ids


@dataclass(slots=True)
class LogBatch:
    """Requests logged in one stream entry, queued for the writer."""

    entry: str  # the stream entry id the prediction ids name
    metas: list[predlog.Meta] = field(default_factory=list)
    scores: list[bytes] = field(default_factory=list)  # the JSON arrays the responses carried
    bodies: list[Any] = field(default_factory=list)  # bodies as they came, or the rows
    counts: list[int] = field(default_factory=list)  # rows of each request
    rows: int = 0
    size: int = 0  # bytes it holds, about: its bodies, or 256 a row without one
    closed: bool = False  # full: the next request starts another batch
    binding: int = 0  # requests whose own ids are being bound (PredictionLog.bind)
    # a body is rows, or over its rows' limit: written again (else bodies go as they came)
    rewrite: bool = False

    def fields(self, row_bytes: int) -> dict[bytes, bytes]:
        """The entry's stream fields, each body within ``row_bytes`` a row (the rows cut
        from one named in its request's metadata)."""
        if not self.rewrite:  # (the usual entry: bodies that came within their limit)
            return predlog.encode(self.metas, self.scores, self.bodies)
        bodies = []
        for k, (body, n) in enumerate(zip(self.bodies, self.counts, strict=True)):
            kept, cut = predlog.bounded(body, n, row_bytes)
            if cut is not None:
                self.metas[k].cut = cut
            bodies.append(kept)
        return predlog.encode(self.metas, self.scores, bodies)


Slot = tuple[LogBatch, int]  # a request's place in the log: its entry's batch, its index


class PredictionLog:
    """This server process's log: slots, the queue, the writer (see module docs)."""

    def __init__(
        self,
        keys: Keys,
        label_window: float,
        metrics: ServerMetrics,
        *,
        # A write to Redis costs ~0.4M instructions (redis-py) and two system
        # calls however many requests it carries: one every 20 ms keeps that near
        # 1% of a core at any load, with the log 20 ms behind the answers.
        flush_interval: float = 0.02,
        max_requests: int = 100_000,
        # 100k requests of 64 rows would be 1.1 GB of bodies: a Redis outage must
        # not take the pod's memory with it
        max_bytes: int = 256 << 20,
        row_bytes: int = predlog.row_bytes(64),  # a logged row at most (predlog.row_bytes)
    ) -> None:
        self.keys = keys
        self.label_window = label_window
        self.metrics = metrics
        self.flush_interval = flush_interval
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self.row_bytes = row_bytes
        self.queue: collections.deque[LogBatch] = collections.deque()
        self.bytes = 0  # what the queued batches hold, about (see LogBatch.size)
        self.requests = 0  # requests in the queued batches
        self.stopping = False  # the writer's loop ends on it (see DataPlane.stop)
        self._open: LogBatch | None = None  # the batch new requests join
        self._event = asyncio.Event()
        # Prediction ids name the log entry of their request (tideline.predlog): this
        # process's log (48 random bits, unique across replicas), the entry id (the
        # request's time in ms and a sequence, strictly increasing), 64 random bits
        # per request (an id cannot be guessed: a label needs the id its prediction
        # was answered with), the row's index. Cheap: the random bits come from one
        # os.urandom call per 1024 requests, no uuid per row.
        self.instance = os.urandom(predlog.INSTANCE_HEX // 2).hex()
        self._last_ms, self._seq = 0, 0
        self._random, self._random_at = "", 0

    # -- slots -------------------------------------------------------------------------
    def slot(self, n: int, given: Sequence[Any] | None) -> tuple[Sequence[str], Slot, str]:
        """A request's ids (the client's, or generated), its slot in the log and its secret."""
        batch = self._open
        ms = int(time.time() * 1000)
        if (batch is None or batch.closed or ms - self._last_ms > predlog.BATCH_MS
                or (batch.rows + n > predlog.BATCH_ROWS and batch.metas)):  # fmt: skip
            if ms > self._last_ms:
                self._last_ms, self._seq = ms, 0
            else:  # the same millisecond, or the clock went back: the stream needs a greater id
                self._seq += 1
            batch = self._open = LogBatch(f"{self._last_ms}-{self._seq}")
            self.queue.append(batch)
        k = len(batch.metas)
        batch.metas.append(predlog.Meta())  # an empty request until it is answered
        batch.scores.append(b"[]")
        batch.bodies.append(_EMPTY_BODY)
        batch.counts.append(n)
        batch.rows += n
        self.requests += 1
        at = self._random_at
        if at >= len(self._random):
            self._random, at = os.urandom(8 * 1024).hex(), 0
        secret, self._random_at = (
            self._random[at : at + predlog.SECRET_HEX],
            at + predlog.SECRET_HEX,
        )
        if given is not None:
            return [str(i) for i in given], (batch, k), secret
        prefix = predlog.id_prefix(self.instance, batch.entry, k, secret)
        return GeneratedIds(prefix, n), (batch, k), secret

    def fill(self, slot: Slot, meta: predlog.Meta, scores: bytes, body: Any, size: int) -> None:
        """A request answered: its slot filled (``body``: as it came, or its rows; ``size``
        its bytes, about). The writer sends it later; past the queue's bounds the oldest
        batches go, counted."""
        batch, k = slot
        batch.metas[k] = meta
        batch.scores[k] = scores
        batch.bodies[k] = body
        if type(body) is not bytes or len(body) > batch.counts[k] * self.row_bytes:
            batch.rewrite = True  # (predlog.bounded)
        batch.size += size
        if batch.size >= predlog.BATCH_BYTES:
            batch.closed = True
        self.bytes += size
        queue = self.queue
        while len(queue) > 1 and (self.requests > self.max_requests or self.bytes > self.max_bytes):
            dropped = queue.popleft()
            self.bytes -= dropped.size
            self.requests -= len(dropped.metas)
            self.metrics.log_dropped.inc(len(dropped.metas))
        self._event.set()

    # -- writing -----------------------------------------------------------------------
    async def bind(self, r: Any, slot: Slot | None) -> None:
        """Bind a request's own ids to its rows before it is answered (``r``: an asyncio
        client): one round trip, for requests that name their ids (no other pays it).

        Refused, the request's slot is emptied (nothing of it is logged): ``Conflict``
        when another request holds one of its ids in the window (:data:`tideline.predlog.BIND`),
        ``Unprocessable`` for an id given twice, ``Unavailable`` when Redis does not
        answer (ids the store cannot check are not answered for; the server's own ids
        need no store)."""
        assert slot is not None, "a request's slot in the log"
        batch, k = slot
        ids = batch.metas[k].ids
        assert ids is not None, "a request with its own ids"
        if len(set(ids)) < len(ids):  # (rare: a set of the ids is all it costs else)
            self._empty(slot)
            seen: set[str] = set()
            for i, x in enumerate(ids):
                if x in seen:
                    raise Unprocessable(f"ids[{i}]: {x!r} is given twice in the request")
                seen.add(x)
        names, args = predlog.bind_args(self.keys, self.instance, batch.entry, k, ids,
                                        self.label_window)  # fmt: skip
        batch.binding += 1  # the writer holds the entry (and what follows) until it is answered
        try:
            taken = await r.eval(predlog.BIND, len(names), *names, *args)
        except (redis.exceptions.RedisError, OSError) as e:
            log.warning("binding %d client ids failed: %s", len(ids), e)
            self._empty(slot)
            raise Unavailable(
                "store unavailable: a request's own ids are bound to it before it is answered; "
                "retry, or send no ids (the server's own need no store)"
            ) from None
        finally:
            batch.binding -= 1
            self._event.set()
        if taken:
            self._empty(slot)
            first = taken[0].decode()
            more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
            window = int(predlog.retention(self.label_window))
            raise Conflict(
                f"ids[{ids.index(first)}]: {first!r}{more} already names another prediction; an "
                f"id names one prediction for labelWindow and a grace ({window} s)"
            )

    def _empty(self, slot: Slot) -> None:
        """A request's slot as a request that was never answered: nothing of it is logged."""
        batch, k = slot
        batch.metas[k] = predlog.Meta()
        batch.scores[k] = b"[]"
        batch.bodies[k] = _EMPTY_BODY

    async def write(self, r: Any) -> None:
        """Send what is queued now to Redis (``r``: an asyncio client), in one round trip;
        on an error it stays queued, for the next try."""
        # What is queued now, no more: requests answered while this writes wait
        # for the next flush. (Writing until the queue is empty degenerated into
        # a round trip per request whenever requests came faster than Redis answered.)
        left = 0  # the batches before the first that waits for a bind (see bind)
        for q in self.queue:
            if q.binding:
                break
            left += 1
        if not left:
            return
        taken: list[LogBatch] = []
        now = time.time()
        keep = predlog.retention(self.label_window)
        # The readers need labelWindow of log and a grace, no more: trimmed by time.
        horizon = f"{int((now - keep) * 1000)}-0"
        stream = self.keys.log(self.instance)
        pipe = r.pipeline(transaction=False)
        try:
            while left:
                # Serialised 100 requests at a time, with the loop let go in between
                # (500 held the loop up to 8 ms, stalling every request in flight).
                # One round trip for them all: a round trip per 100 fell behind 10k
                # requests/s when Redis was slow.
                batch: list[LogBatch] = []
                while left and self.queue and len(batch) < 100:
                    if self.queue[0].binding:  # (a request came to it in the pause below)
                        left = 0
                        break
                    batch.append(self.queue.popleft())
                    left -= 1
                taken += batch
                for q in batch:
                    if q is self._open:  # requests answered from now on go to a new batch
                        self._open = None
                    self.bytes -= q.size
                    self.requests -= len(q.metas)
                    pipe.xadd(stream, q.fields(self.row_bytes), id=q.entry, minid=horizon,
                              approximate=False)  # fmt: skip
                if left:
                    await asyncio.sleep(0)
        except asyncio.CancelledError:  # stopped while serialising: nothing was sent
            self._put_back(taken)
            raise
        # a stream whose server is gone goes once its last entry is out of the window
        pipe.expire(stream, int(keep) + 60)
        pipe.zadd(self.keys.logs, {self.instance: now})
        try:
            replies = await pipe.execute(raise_on_error=False)
        except (redis.exceptions.RedisError, OSError):
            self._put_back(taken)  # keep them for the next try
            raise
        # An entry id already in the stream was written by a try that failed later
        # (a lost connection after some commands ran): it is there, not an error.
        errors = [
            e for e in replies if isinstance(e, Exception) and "equal or smaller" not in str(e)
        ]
        if errors:
            self._put_back(taken)
            raise errors[0]

    def _put_back(self, taken: list[LogBatch]) -> None:
        self.queue.extendleft(reversed(taken))
        self.bytes += sum(q.size for q in taken)
        self.requests += sum(len(q.metas) for q in taken)

    async def _register(self, r: Any) -> None:
        """This server's log in the registry of logs (``logs``), as written to now."""
        try:
            await r.zadd(self.keys.logs, {self.instance: time.time()})
        except (redis.exceptions.RedisError, OSError) as e:
            log.debug("prediction log not registered (%s)", e)

    async def run(self, r: Any) -> None:
        """The writer: what is queued, every ``flush_interval``, until ``stopping``; through
        a Redis outage, again and again, backing off up to 2 s."""
        await self._register(r)
        backoff = self.flush_interval
        while not self.stopping:
            try:
                await asyncio.wait_for(self._event.wait(), REGISTER_EVERY)
            except TimeoutError:
                # Readers take a server that is not in the log's registry for one that never
                # was (tideline.pods.join: its labels are unmatched at once): an idle server
                # stays listed, and a new one is listed before its first write.
                await self._register(r)
                continue
            self._event.clear()
            await asyncio.sleep(self.flush_interval)  # gather a batch
            try:
                await self.write(r)
                backoff = self.flush_interval
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.RedisError, OSError) as e:
                log.debug("prediction log not written (%s); %d queued", e, len(self.queue))
                self._event.set()
                backoff = min(backoff * 2, 2.0)
                await asyncio.sleep(backoff)
