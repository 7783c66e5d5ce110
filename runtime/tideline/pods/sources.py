"""Where a learner's labelled samples and feedback come from: Redis streams or Kafka topics.

A learner reads entries - ``(entry id, {b"data": json})`` - from two streams,
``samples`` and ``feedback``, and says which it is done with (learned or
dead-lettered). What it is done with is made durable only inside the
checkpoint's MULTI/EXEC, with the model state that learned it, so a
``kill -9`` anywhere loses nothing and learns nothing twice:

* :class:`RedisStreams` (the default): a consumer group per revision; done
  entries are acknowledged (XACK) in the checkpoint's transaction, and after a
  restart the group's pending entries are read again first.
* :class:`tideline.pods.kafka.KafkaTopics`: the consumed positions are part of the
  checkpoint itself (:meth:`LabelSource.state`); on start the learner seeks to
  them.

An entry id's first part is its arrival time in milliseconds (``"{ms}-..."``),
whichever the source.

A consumer group can vanish under a running reader (Redis restarted empty, flushed,
or evicting keys under ``allkeys-lru``): a reply that says so (:func:`group_gone`)
makes it again where the reader had read to (:meth:`RedisStreams.regroup`,
:meth:`RedisFollower.regroup`), and reading goes on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import redis

from tideline.contracts import Keys, text
from tideline.predlog import entry_order

Entries = list[tuple[bytes, dict[bytes, bytes]]]
# (stream, entry id, fields, reason): an entry to dead-letter before anything is read
Refusal = tuple[str, bytes, dict[bytes, bytes], str]

# A samples entry delivered this often and never acknowledged killed every learner that
# read it (each start reads the pending entries again, twice counted): dead-lettered.
MAX_DELIVERIES = 10
# Redis < 7 does not count a group's undelivered entries: when the group has read some of
# the stream's entries and not all, they are counted by reading them, at most this many (a
# lag reported as this is "at least")
LAG_COUNT_CAP = 10_000


def group_gone(e: redis.ResponseError) -> bool:
    """Whether a reply says a consumer group (or its stream) is gone: ``NOGROUP`` (the store
    restarted empty, was flushed, evicted the stream or the group, or someone destroyed it),
    or ``UNBLOCKED`` (Redis >= 7 ends a blocked read whose stream was deleted). Inside a
    pipeline redis-py puts the command before the reply's text: the word is looked for
    anywhere in it."""
    said = str(e)
    return "NOGROUP" in said or said.startswith("UNBLOCKED") or " UNBLOCKED " in said


def _group(r: Any, stream: str, group: str, at: str) -> None:
    """The consumer group on the stream (and the stream), from ``at`` if it is new."""
    try:
        r.xgroup_create(stream, group, id=at, mkstream=True)
    except redis.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


class LabelSource(Protocol):
    """What a learner reads labelled samples and feedback through."""

    samples: str  # the streams' names, as runs and dead letters name them
    feedback: str
    # whether the last read was of entries not read before (not those a learner killed had
    # read and not acknowledged, read again first): then one that came back short says
    # every entry added before it was asked for is read
    new: bool

    def start(self, state: Any) -> list[Refusal]:
        """Ready to read, from ``state`` (the checkpoint's, or None); entries to dead-letter."""

    def read(self, count: int, block_ms: int) -> list[tuple[str, Entries]]:
        """Up to ``count`` entries per stream, waiting up to ``block_ms`` for the first."""

    def done(self, stream: str, entry: bytes) -> None:
        """The entry is learned or dead-lettered: durable with the next checkpoint."""

    def state(self) -> Any:
        """What the checkpoint keeps of the source (JSON), with the entries done so far."""

    def commit(self, pipe: Any) -> None:
        """Add what makes the done entries durable to the checkpoint's transaction."""

    def committed(self) -> None:
        """The checkpoint's transaction ran."""

    def maintain(self) -> None:
        """Now and then (every few seconds): housekeeping."""

    def lag(self) -> int | None:
        """Entries not done yet - not read, or read and not durable - as consumer-lag tools
        count them (None: not known now)."""

    def close(self) -> None: ...


def xread(client: Any, streams: dict[str, str], count: int) -> Any:
    """``XREAD COUNT count STREAMS ...`` as redis-py's ``xread`` answers it, the reply read
    straight (:func:`_entries`). On a Redis Cluster, redis-py's own."""
    if not hasattr(client, "connection_pool"):  # RedisCluster: it routes each key
        return client.xread(streams, count=count)
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_command("XREAD", "COUNT", count, "STREAMS", *streams, *streams.values())
        raw = conn.read_response()
    except BaseException:
        conn.disconnect()  # a reply half read is never read by the next command
        raise
    finally:
        pool.release(conn)
    return _entries(raw)


def _entries(raw: Any) -> Any:
    """An XREAD or XREADGROUP reply (a map on RESP3, pairs on RESP2) as redis-py gives it:
    ``[[stream, [(id, fields), ...]], ...]``, each entry's fields made a dict directly
    (redis-py's callback costs a function call an entry: a fifth of reading one-row
    entries)."""
    if not raw:
        return raw
    streams = raw.items() if isinstance(raw, dict) else raw
    return [
        [
            stream,
            [(e[0], {e[1][0]: e[1][1]} if len(e[1]) == 2 else _pairs(e[1])) for e in entries],
        ]  # fmt: skip
        for stream, entries in streams
    ]


def _pairs(flat: Any) -> dict[bytes, bytes]:
    """``[k1, v1, k2, v2, ...]`` (None: a deleted entry's) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {}


class RedisStreams:
    """The model's ``samples`` and ``feedback`` Redis streams, through the revision's group."""

    def __init__(self, client: Any, keys: Keys, group: str, warm_group: str | None) -> None:
        self.r = client
        self.keys = keys
        self.group = group
        self.consumer = "learner"
        self.warm_group = warm_group
        self.starts: dict[str, str] = {}  # where a new group starts on a stream, if not as usual
        self.samples = keys.samples
        self.feedback = keys.feedback
        self.new = False
        self._acks: dict[str, list[bytes]] = {self.samples: [], self.feedback: []}
        self._flushing: dict[str, list[bytes]] = {self.samples: [], self.feedback: []}
        # First re-read our own unacknowledged entries (after a restart), from these ids.
        self._history: dict[str, str] | None = {self.samples: "0", self.feedback: "0"}
        self._skip: set[bytes] = set()  # pending entries dead-lettered as poison pills
        # the newest entry id read of each stream: where a group lost is made again
        self._newest: dict[str, str] = {}
        self._cluster = not hasattr(client, "connection_pool")  # (RedisCluster has none)
        self._conn: Any = None  # the reading connection, with a read in flight or not
        self._in_flight = False

    # -- start-up ----------------------------------------------------------------------
    def group_start(self, stream: str) -> str:
        """Where a new consumer group starts: the whole retained stream, or - for a
        learner warm-started from another revision - where that revision's learner is,
        since the snapshot it starts from has learned what came before."""
        if stream in self.starts:
            return self.starts[stream]
        if not self.warm_group:
            return "0"
        source = self.warm_group.encode()
        try:
            groups = self.r.xinfo_groups(stream)
        except redis.ResponseError:
            return "0"
        for g in groups:
            if g.get("name") in (source, source.decode()):
                return text(g.get("last-delivered-id"))
        return "0"

    def start(self, state: Any = None) -> list[Refusal]:
        for stream in (self.samples, self.feedback):
            _group(self.r, stream, self.group, self.group_start(stream))
        self._claim_orphans()
        return list(self._poison_pills())

    def _claim_orphans(self) -> None:
        """Take over entries a learner under another consumer name read but never acked."""
        for stream in (self.samples, self.feedback):
            cursor = "0-0"
            while True:
                cursor, _, *_ = self.r.xautoclaim(
                    stream, self.group, self.consumer, min_idle_time=0, start_id=cursor,
                    count=1000,
                )  # fmt: skip
                if cursor in (b"0-0", "0-0"):
                    break

    def _poison_pills(self) -> Iterable[Refusal]:
        """The samples entries that were delivered ``MAX_DELIVERIES`` times unlearned.

        A row whose processing raises is dead-lettered where it raises; this
        catches what kills the process instead (a crash, the OOM killer), which
        would otherwise come back at every start: a crash loop on one entry.
        """
        stream = self.samples
        start = "-"
        while True:
            rows = self.r.xpending_range(stream, self.group, min=start, max="+", count=1000)
            for row in rows:
                n = int(row["times_delivered"])
                if n < MAX_DELIVERIES:
                    continue
                eid = row["message_id"]
                found = self.r.xrange(stream, eid, eid)
                fields = found[0][1] if found else {}
                self._skip.add(eid)
                yield stream, eid, fields, f"poison: delivered {n} times, never learned"
            if len(rows) < 1000:
                return
            last = rows[-1]["message_id"]
            start = "(" + text(last)

    # -- reading -----------------------------------------------------------------------
    def read(self, count: int, block_ms: int) -> list[tuple[str, Entries]]:
        history = self._history
        self.new = history is None
        if history is None:
            resp = self._read_ahead(count, block_ms)
        else:
            resp = self.r.xreadgroup(self.group, self.consumer, history, count=count)
        out: list[tuple[str, Entries]] = []
        got = 0
        for raw, entries in resp or []:
            stream = raw.decode()
            got += len(entries)
            if entries:
                self._newest[stream] = entries[-1][0].decode()
            if history is not None and entries:
                history[stream] = entries[-1][0].decode()
                entries = [e for e in entries if e[0] not in self._skip]
            out.append((stream, entries))
        if history is not None and got == 0:
            self._history = None  # our unacknowledged entries are back in memory: now new ones
        return out

    def _read_ahead(self, count: int, block_ms: int) -> Any:
        """New entries, the next read already sent when this one is answered: Redis makes
        the next reply while the learner learns this one (a fifth of a one-row learner's
        time was waiting for XREADGROUP). On a Redis Cluster, one read at a time."""
        if self._cluster:
            return self.r.xreadgroup(self.group, self.consumer, {self.samples: ">",
                                     self.feedback: ">"}, count=count, block=block_ms)  # fmt: skip
        if self._conn is None:
            self._conn = self.r.connection_pool.get_connection()
        if not self._in_flight:
            self._send(count, block_ms)
        try:
            raw = self._conn.read_response()
        except BaseException:
            self._drop()
            raise
        self._in_flight = False
        resp = _entries(raw)
        if resp:  # more may be waiting: ask now, take it at the next read
            self._send(count, block_ms)
        return resp

    def _send(self, count: int, block_ms: int) -> None:
        try:
            self._conn.send_command("XREADGROUP", "GROUP", self.group, self.consumer,
                                    "COUNT", count, "BLOCK", block_ms, "STREAMS",
                                    self.samples, self.feedback, ">", ">")  # fmt: skip
        except BaseException:
            self._drop()
            raise
        self._in_flight = True

    def _drop(self) -> None:
        """A connection whose reply is lost is closed, never reused."""
        if self._conn is not None:
            self._conn.disconnect()
            self.r.connection_pool.release(self._conn)
        self._conn, self._in_flight = None, False

    def regroup(self) -> None:
        """The revision's consumer groups again, after a reply said one is gone (:func:`group_gone`).

        Each is made at the newest entry this process has read of its stream, or at
        ``0`` when it read none: entries added after a store restarted empty have later
        ids (their first part is the time), and a group evicted or destroyed alone must
        not deliver the whole stream again. Entries read and not yet acknowledged stay
        in memory and are learned; their acknowledgement then finds nothing pending,
        which is what it would have made so. A read in flight is dropped: its reply
        (an error, or entries of a group that is gone) is never read.
        """
        self._drop()
        self._history = None  # a new group has no pending entries
        for stream in (self.samples, self.feedback):
            _group(self.r, stream, self.group, self._newest.get(stream, "0"))

    def done(self, stream: str, entry: bytes) -> None:
        self._acks[stream].append(entry)

    # -- durability --------------------------------------------------------------------
    def state(self) -> Any:
        return None  # the group's pending entries are the state

    def commit(self, pipe: Any) -> None:
        for stream, ids in self._acks.items():
            if ids:
                pipe.xack(stream, self.group, *ids)
        # acknowledged only if this transaction runs; kept for the next one otherwise
        self._flushing = {s: list(ids) for s, ids in self._acks.items()}

    def committed(self) -> None:
        for stream, ids in self._flushing.items():
            del self._acks[stream][: len(ids)]
            ids.clear()

    def maintain(self) -> None:
        self.trim()

    def lag(self) -> int | None:
        total = 0
        for stream in (self.samples, self.feedback):
            try:
                groups = self.r.xinfo_groups(stream)
            except redis.ResponseError:
                continue
            mine = [g for g in groups if g["name"] in (self.group, self.group.encode())]
            if not mine:
                return None
            g = mine[0]
            undelivered = g.get("lag")  # Redis >= 7 counts it; else it is counted here
            if undelivered is None:
                undelivered = self._undelivered(stream, text(g["last-delivered-id"]))
            total += int(undelivered) + int(g["pending"])
        return total

    def _undelivered(self, stream: str, last: str) -> int:
        """The entries of ``stream`` after ``last`` (a group's last delivered, on Redis < 7):
        none when it had the newest, every one when it had none of those the stream holds,
        else counted by reading them (at most LAG_COUNT_CAP: megabytes of entries for one
        number, so only then; counted by a script instead, Redis was held 2-5 times as
        long building them as Lua tables)."""
        info = self.r.xinfo_stream(stream)
        first = info.get("first-entry")
        if not info["length"] or entry_order(last) >= entry_order(text(info["last-generated-id"])):
            return 0
        if first is not None and entry_order(last) < entry_order(text(first[0])):
            return int(info["length"])
        return len(self.r.xrange(stream, "(" + last, "+", count=LAG_COUNT_CAP))

    def trim(self) -> None:
        """Drop what every consumer group has acknowledged from ``samples`` and ``feedback``.

        Each group (a learner per revision, the monitor) keeps what it has not
        acknowledged; a group that is behind holds the stream back, never loses
        an entry. Without this the two streams would grow for as long as labels
        come.
        """
        for stream in (self.samples, self.feedback):
            try:
                groups = self.r.xinfo_groups(stream)
            except redis.ResponseError:  # no such stream (deleted by hand): nothing to trim
                continue
            floor: tuple[int, int] | None = None
            for g in groups:
                point = g["last-delivered-id"]
                if g["pending"]:
                    # (acknowledged meanwhile, there is no oldest pending: last-delivered holds)
                    point = self.r.xpending(stream, g["name"]).get("min") or point
                key = entry_order(text(point))
                floor = key if floor is None else min(floor, key)
            if floor is not None and floor != (0, 0):
                # whole nodes only (~): cheap, and never past the floor. LIMIT 0: an
                # approximate trim stops after 10,000 entries by default, fewer than
                # 10 s of labels at 3,000/s (the stream grew without end in bench/labels.py)
                self.r.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=True, limit=0)

    def close(self) -> None:
        self._drop()  # a read in flight: its entries stay pending, read again at a restart


class Follower(Protocol):
    """What a reader that only watches (the monitor) follows the labels through: from
    now on, each read acknowledged once handled (nothing of it is learned)."""

    samples: str
    feedback: str
    new: bool  # the last read was of entries not read before (see LabelSource.new)

    def start(self) -> None: ...

    def read(self, count: int, block_ms: int) -> list[tuple[str, Entries]]:
        """Up to ``count`` entries per stream, waiting up to ``block_ms`` for the first (0: not
        at all)."""

    def ack(self, pipe: Any) -> None:
        """What was read is handled: in ``pipe`` (Redis), or with :meth:`acked` (Kafka)."""

    def acked(self) -> None: ...

    def close(self) -> None: ...


class RedisFollower:
    """A consumer group of its own on the model's streams, started at the streams' end.

    At start it first reads again the entries it had read and not acknowledged
    (``XREADGROUP ... 0``, as :class:`RedisStreams` does for a learner): a reader
    killed between a read and its acknowledgement would otherwise leave them pending
    for ever, and the oldest pending entry of every group is where
    :meth:`RedisStreams.trim` stops. A read that finds the group gone (``NOGROUP``: the
    store restarted empty, evicted or flushed it) makes it again, at the newest entry it
    read (else at the streams' end), and goes on.
    """

    def __init__(self, client: Any, keys: Keys, group: str) -> None:
        self.r = client
        self.group = group
        self.samples = keys.samples
        self.feedback = keys.feedback
        self.new = False
        self._read: dict[str, list[bytes]] = {}
        self._newest: dict[str, str] = {}
        # own pending entries first (after a restart), from these ids; then new ones
        self._history: dict[str, str] | None = None

    def start(self) -> None:
        for stream in (self.feedback, self.samples):
            _group(self.r, stream, self.group, "$")
        self._history = {self.feedback: "0", self.samples: "0"}

    def regroup(self) -> None:
        """The group again, at the newest entry read of each stream (else at its end)."""
        self._history = None
        for stream in (self.feedback, self.samples):
            _group(self.r, stream, self.group, self._newest.get(stream, "$"))

    def read(self, count: int, block_ms: int) -> list[tuple[str, Entries]]:
        self._read = {}
        self.new = False
        try:
            if self._history is not None:
                out = self._read_history(count, self._history)
                if out:
                    return out
                self._history = None  # what was pending is handled: new entries from now on
            self.new = True
            resp = self.r.xreadgroup(
                self.group, self.group, {self.feedback: ">", self.samples: ">"},
                count=count, block=block_ms or None,  # (BLOCK 0 would wait for ever)
            )  # fmt: skip
        except redis.ResponseError as e:
            if not group_gone(e):
                raise
            self.regroup()
            return []
        out = []
        for raw, entries in resp or []:
            stream = raw.decode()
            if entries:
                self._newest[stream] = entries[-1][0].decode()
                self._read[stream] = [eid for eid, _ in entries]
                out.append((stream, entries))
        return out

    def _read_history(self, count: int, history: dict[str, str]) -> list[tuple[str, Entries]]:
        """The next of this reader's own pending entries (none: all read again)."""
        resp = self.r.xreadgroup(self.group, self.group, dict(history), count=count)
        out: list[tuple[str, Entries]] = []
        for raw, entries in resp or []:
            stream = raw.decode()
            if not entries:
                continue
            history[stream] = self._newest[stream] = entries[-1][0].decode()
            self._read[stream] = [eid for eid, _ in entries]
            # an entry trimmed since it was read comes back without fields: acknowledged with
            # the rest, nothing to hand on
            out.append((stream, [(eid, f) for eid, f in entries if f]))
        return out

    def ack(self, pipe: Any) -> None:
        for stream, ids in self._read.items():  # its own group: the learner's is untouched
            if ids:
                pipe.xack(stream, self.group, *ids)

    def acked(self) -> None:
        self._read = {}

    def close(self) -> None:
        pass
