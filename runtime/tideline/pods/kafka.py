"""Kafka topics as a model's source of labelled samples and feedback (``spec.source.kafka``).

Clients are confluent-kafka's (librdkafka). The learner does not let Kafka
keep its place: :class:`KafkaTopics` assigns itself every partition of the
topics and keeps, per partition, how far it has read (``to``) and which
offsets below that are read but not done yet (``open``: rows waiting for a
mini-batch, labels waiting for their prediction's log entry). That state is
written in the checkpoint's transaction with the model that learned the rest;
on start the learner seeks to the oldest open offset and skips what it had
done, so a ``kill -9`` anywhere learns every message exactly once. The same
position is committed to the consumer group ``<groupId>.learner.<revision>``
after each checkpoint, so the usual consumer-lag tools see the learner.

A message's value is what a Redis stream entry's ``data`` field holds
(``{"features": {...}, "label": y}``, packed ``{"instances": [...],
"labels": [...]}``, or ``{"id": ..., "label": y}`` on the feedback topic); its
time is the message's timestamp.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tideline.pods.sources import MAX_DELIVERIES, Entries, Refusal
from tideline.spec import KAFKA_PASSWORD_ENV, KAFKA_TLS_ENV, KafkaSource, OnlineModel

log = logging.getLogger("tideline.kafka")

DISCOVER_SECONDS = 30.0  # how often new partitions (and topics created late) are looked for
COMMIT_SECONDS = 1.0  # how often the group is told the learner's positions, at most


def client_config(k: KafkaSource, **extra: Any) -> dict[str, Any]:
    """librdkafka's settings for ``spec.source.kafka`` (the SASL password from the environment)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": k.bootstrapServers,
        "security.protocol": k.securityProtocol,
        "logger": logging.getLogger("tideline.kafka.client"),
    }
    if k.sasl is not None:
        password = os.environ.get(KAFKA_PASSWORD_ENV)
        if not password:
            raise RuntimeError(
                f"spec.source.kafka.sasl: {KAFKA_PASSWORD_ENV} is not set (the operator sets it from "
                f"Secret {k.sasl.password.name}, key {k.sasl.password.key})"
            )
        conf.update({"sasl.mechanism": k.sasl.mechanism, "sasl.username": k.sasl.username,
                     "sasl.password": password})  # fmt: skip
    for what, ref in (k.tls.refs() if k.tls is not None else {}).items():
        pem = os.environ.get(KAFKA_TLS_ENV[what])
        if not pem:
            raise RuntimeError(
                f"spec.source.kafka.tls.{what}SecretRef: {KAFKA_TLS_ENV[what]} is not set (the "
                f"operator sets it from Secret {ref.name}, key {ref.key})"
            )
        conf[_TLS_CONF[what]] = pem
    return conf | extra


# librdkafka's settings that take a PEM text (not a file) for each of spec.source.kafka.tls
_TLS_CONF = {"ca": "ssl.ca.pem", "cert": "ssl.certificate.pem", "key": "ssl.key.pem"}


def consumer(k: KafkaSource, group: str, reset: str, **extra: Any) -> Any:
    """A consumer in ``group`` that commits only when told, from ``reset`` where it has no
    position, and never reports a partition's end as a message.

    A partition whose prefetched messages passed librdkafka's queue thresholds waits
    ``fetch.queue.backoff.ms`` before it is fetched again: 1,000 ms by default, long
    enough for a learner to empty the queue and wait for the next fetch (it waited 28 %
    of the time on packed messages). 100 ms keeps the queue ahead of it.
    """
    from confluent_kafka import Consumer

    return Consumer(client_config(k, **{
        "group.id": group, "enable.auto.commit": False, "auto.offset.reset": reset,
        "enable.partition.eof": False, "fetch.queue.backoff.ms": 100, **extra}))  # fmt: skip


def consume(c: Any, count: int, timeout: float) -> list[Any]:
    """Up to ``count`` messages: those fetched already, or, when there are none, those that
    come within ``timeout`` of the first - as ``XREAD BLOCK`` answers. (``consume(count,
    timeout)`` alone waits for all ``count`` or the whole timeout: every read of a topic
    that brings fewer would wait it out.)"""
    msgs: list[Any] = c.consume(count, 0)
    if msgs or timeout <= 0:
        return msgs
    msgs = c.consume(1, timeout)
    return msgs + c.consume(count - 1, 0) if msgs and count > 1 else msgs


def retrying(call: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """``call()``, again while Kafka says the error is retriable (a group coordinator not
    elected yet on a fresh cluster, a leader moving) or it timed out, for up to ``timeout``."""
    from confluent_kafka import KafkaError as Error
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout
    wait = 0.1
    while True:
        try:
            return call()
        except KafkaException as e:
            err = e.args[0] if e.args else None
            passing = isinstance(err, Error) and (err.retriable() or err.code() in (
                Error._TIMED_OUT, Error._TRANSPORT, Error.NOT_COORDINATOR,
                Error.COORDINATOR_NOT_AVAILABLE, Error.COORDINATOR_LOAD_IN_PROGRESS,
                Error.LEADER_NOT_AVAILABLE))  # fmt: skip
            if not passing or time.monotonic() + wait > deadline:
                raise
            log.info("kafka: %s: %s; retrying", what, err)
            time.sleep(wait)
            wait = min(wait * 2, 2.0)


def ends(consumer: Any, tp: Any) -> tuple[int, int]:
    """A partition's first and next offsets, asked of its leader."""

    def ask() -> tuple[int, int]:
        lo, hi = consumer.get_watermark_offsets(tp, timeout=10)
        return int(lo), int(hi)

    result: tuple[int, int] = retrying(ask, "the partitions' ends")
    return result


def group_prefix(model: OnlineModel) -> str:
    k = model.spec.source.kafka
    return (k.groupId if k and k.groupId else None) or f"tideline.{model.namespace}.{model.name}"


@dataclass
class Position:
    """How far a partition is read (``to``: the next offset) and what below it is not done."""

    to: int
    open: set[int] = field(default_factory=set)

    @property
    def committed(self) -> int:
        """Where a restart reads from: everything before it is done."""
        return min(self.open) if self.open else self.to


def _entry(ts_ms: int, partition: int, offset: int) -> bytes:
    return b"%d-%d.%d" % (ts_ms, partition, offset)


def _where(entry: bytes) -> tuple[int, int]:
    partition, offset = entry.split(b"-", 1)[1].split(b".")
    return int(partition), int(offset)


class KafkaTopics:
    """A learner's samples and feedback topics, exactly once through the checkpoint."""

    def __init__(
        self,
        model: OnlineModel,
        revision: str,
        *,
        warm_state: Any = None,
        starts: tuple[Any, str] | None = None,
    ) -> None:
        k = model.spec.source.kafka
        assert k is not None, "spec.source.kafka"
        self.kafka = k
        self.samples = k.samples or ""
        self.feedback = k.feedback or ""
        # (a consume that comes back short has read what the fetcher had: defaults wait
        # the learner's CLOCK_SLACK more for what it had not fetched yet)
        self.new = True
        self.topics = [t for t in (k.samples, k.feedback) if t]
        self.group = f"{group_prefix(model)}.learner.{revision}"
        self.warm_state = warm_state
        self._consumer: Any = None
        # (a Redis client, a hash): per samples partition, the offset learners resumed at and
        # how many in a row read it there (a message that kills every learner that reads it)
        self._starts = starts
        self._lives: dict[str, str] = {}
        self._resume: dict[tuple[str, int], int] = {}  # where this one resumed, until read
        self.positions: dict[tuple[str, int], Position] = {}
        self._resumed = False
        self._assigned: set[tuple[str, int]] = set()
        self._last_discovery = 0.0
        self._confirmed: dict[tuple[str, int], int] = {}  # what the group holds, as it said
        self._told_at = -math.inf  # when the group was last told the positions
        self._where: dict[bytes, tuple[Position, int]] = {}  # an entry read and not done yet

    @property
    def consumer(self) -> Any:
        if self._consumer is None:
            # an offset past the retention (deleted meanwhile): the oldest kept
            self._consumer = consumer(self.kafka, self.group, "earliest",
                                      **{"enable.auto.offset.store": False,
                                         "on_commit": self._on_commit})  # fmt: skip
        return self._consumer

    # -- start-up ----------------------------------------------------------------------
    def start(self, state: Any = None) -> list[Refusal]:
        if state:
            self._resumed = True
            self.positions = _positions(state)
        elif self.warm_state:
            # where the revision this one was warm-started from is: its snapshot learned the rest
            self.positions = {tp: Position(p.committed) for tp, p in _positions(self.warm_state).items()}  # fmt: skip
            self._resumed = True
        self._discover()
        return self._poison_pills()

    def _poison_pills(self) -> list[Refusal]:
        """The samples messages that ``MAX_DELIVERIES`` learners in a row read at the place
        they resumed at and never got past (a crash, the OOM killer on that message):
        dead-lettered, so the learner does not crash-loop on one message. Labels are left
        alone (one may wait for its prediction's log entry across restarts)."""
        if self._starts is None or not self.samples:
            return []
        r, key = self._starts
        self._lives = {k.decode(): v.decode() for k, v in r.hgetall(key).items()}
        refused: list[Refusal] = []
        for (topic, partition), pos in self.positions.items():
            if topic != self.samples:
                continue
            at = pos.committed
            self._resume[(topic, partition)] = at
            if self._reads(topic, partition, at) >= MAX_DELIVERIES:
                fields = self._fetch(topic, partition, at)
                n = self._reads(topic, partition, at)
                refused.append((topic, _entry(int(time.time() * 1000), partition, at), fields,
                                f"poison: read by {n} learners in a row, none got past it"))  # fmt: skip
                pos.open.discard(at)  # done: with the dead letter, at the next checkpoint
                pos.to = max(pos.to, at + 1)
                del self._resume[(topic, partition)]
        return refused

    def _reads(self, topic: str, partition: int, offset: int) -> int:
        """How many learners in a row read this message where they resumed."""
        at, _, n = self._lives.get(f"{topic}/{partition}", "").partition(":")
        return int(n) if at == str(offset) and n.isdigit() else 0

    def _count_read(self, topic: str, partition: int, offset: int) -> None:
        """This learner read the message it resumed at: one more life that did (before it
        learns it: a crash on it must count)."""
        if self._starts is None or self._resume.get((topic, partition)) != offset:
            return
        del self._resume[(topic, partition)]
        r, key = self._starts
        n = self._reads(topic, partition, offset) + 1
        r.hset(key, f"{topic}/{partition}", f"{offset}:{n}")

    def _fetch(self, topic: str, partition: int, offset: int) -> dict[bytes, bytes]:
        """One message's fields (what the dead letter shows of it), by a consumer of its own."""
        from confluent_kafka import TopicPartition

        c = consumer(self.kafka, self.group, "earliest")
        try:
            c.assign([TopicPartition(topic, partition, offset)])
            for m in c.consume(num_messages=1, timeout=10):
                value = m.value()
                if m.error() is None and m.offset() == offset and value is not None:
                    return {b"data": value}
            return {}
        finally:
            c.close()

    def _discover(self, patience: float = 60.0) -> None:
        """Assign every partition of the topics; a partition seen for the first time starts
        where ``startFrom`` says (for a model's first learner) or at its beginning (a partition
        or topic created since the learner started: all of it is new)."""
        from confluent_kafka import TopicPartition

        self._last_discovery = time.monotonic()
        meta = retrying(
            lambda: self.consumer.list_topics(timeout=10), "listing the topics", patience
        )
        first = not self._assigned
        new = []
        for topic in self.topics:
            t = meta.topics.get(topic)
            if t is None or t.error is not None:
                log.warning(
                    "topic %s not found yet; looking again in %.0fs", topic, DISCOVER_SECONDS
                )
                continue
            for partition in sorted(t.partitions):
                tp = (topic, partition)
                if tp in self._assigned:
                    continue
                pos = self.positions.get(tp)
                if pos is None:
                    lo, hi = ends(self.consumer, TopicPartition(*tp))
                    latest = not self._resumed and self.kafka.startFrom == "latest"
                    pos = self.positions[tp] = Position(hi if latest else lo)
                # what was open at the checkpoint is read again; what was done, skipped
                new.append(TopicPartition(topic, partition, pos.committed))
                self._assigned.add(tp)
        self._resumed = True  # from now on, a partition seen first is new
        if new and first:
            self.consumer.assign(new)
        elif new:
            self.consumer.incremental_assign(new)

    # -- reading -----------------------------------------------------------------------
    def read(self, count: int, block_ms: int) -> list[tuple[str, Entries]]:
        """The messages of one ``consume`` as entries, by topic; one already done (before a
        restart) left out. A message at a time, with no work it does not need: a one-row
        message costs about as much here as learning it."""
        out: dict[str, Entries] = {}
        positions, where, resume = self.positions, self._where, self._resume
        for m in consume(self.consumer, count, block_ms / 1000):
            if m.error() is not None:
                _consume_error(m.error())
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            pos = positions.get((topic, partition))
            if pos is None:
                continue
            if offset < pos.to:
                if offset not in pos.open:
                    continue  # done before the restart
            else:
                pos.to = offset + 1
                pos.open.add(offset)
            if resume:
                self._count_read(topic, partition, offset)
            entry, fields = _as_entry(m)
            where[entry] = (pos, offset)
            entries = out.get(topic)
            if entries is None:
                entries = out[topic] = []
            entries.append((entry, fields))
        return list(out.items())

    def done(self, stream: str, entry: bytes) -> None:
        found = self._where.pop(entry, None)
        if found is None:  # (not read by this process: a dead letter found at start)
            partition, offset = _where(entry)
            pos = self.positions.get((stream, partition))
            found = (pos, offset) if pos is not None else None
        if found is not None:
            found[0].open.discard(found[1])

    # -- durability --------------------------------------------------------------------
    def state(self) -> Any:
        return {
            f"{topic}/{partition}": {"to": p.to, "open": sorted(p.open)}
            for (topic, partition), p in self.positions.items()
        }

    def commit(self, pipe: Any) -> None:
        pass  # the positions are in the checkpoint itself (state)

    def committed(self, now: bool = False) -> None:
        """Tell Kafka too (for consumer-lag tools; the learner reads its own from Redis):
        every partition whose position the group has not confirmed yet, again after later
        checkpoints until it does (commits are asynchronous; one may fail, or land after a
        newer one). At most once a ``COMMIT_SECONDS`` (``now``: at once): a learner
        checkpointing a hundred times a second sent as many commits, and writing them was more
        than half the broker's work (0.35 s of CPU a second of learning; 0.14 s without)."""
        from confluent_kafka import KafkaException, TopicPartition

        if not now and time.monotonic() - self._told_at < COMMIT_SECONDS:
            return
        self._told_at = time.monotonic()
        behind = [TopicPartition(t, part, p.committed) for (t, part), p in self.positions.items()
                  if self._confirmed.get((t, part)) != p.committed]  # fmt: skip
        if not behind:
            return
        try:
            self.consumer.commit(offsets=behind, asynchronous=True)
        except KafkaException as e:  # a broker away: the next checkpoint tells it again
            log.warning("kafka: committing offsets failed: %s", e)

    def _on_commit(self, err: Any, partitions: list[Any]) -> None:
        """An offset commit's result (served by consume): what the group now holds; what
        failed is sent again at the next checkpoint (a coordinator not elected yet)."""
        if err is not None:
            log.info("kafka: committing offsets failed (%s); again at the next checkpoint", err)
        for tp in partitions:
            if tp.error is None and err is None:
                self._confirmed[(tp.topic, tp.partition)] = tp.offset

    def maintain(self) -> None:
        from confluent_kafka import KafkaException

        if time.monotonic() - self._last_discovery >= DISCOVER_SECONDS:
            try:
                self._discover(patience=5.0)  # (the loop is not held up for long)
            except KafkaException as e:  # brokers away: what is assigned goes on; again later
                self._last_discovery = time.monotonic()
                log.warning("kafka: looking for new partitions failed: %s", e)

    def lag(self) -> int | None:
        """The end of each partition (as the last fetch saw it) less the learner's position."""
        from confluent_kafka import TopicPartition

        total = 0
        for (topic, partition), pos in self.positions.items():
            _, high = self.consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
            if high < 0:
                return None  # nothing fetched from it yet
            total += max(0, high - pos.committed)
        return total

    def close(self) -> None:
        if self._consumer is not None:
            self.committed(now=True)  # (the consumer's close waits for the commit's answer)
            self._consumer.close()
            self._consumer = None


def _positions(state: Any) -> dict[tuple[str, int], Position]:
    out = {}
    for key, p in state.items():
        topic, _, partition = key.rpartition("/")
        out[(topic, int(partition))] = Position(int(p["to"]), {int(o) for o in p["open"]})
    return out


def _consume_error(err: Any) -> None:
    """A message that is an error: a fatal one stops the process, the rest are logged."""
    if err.fatal():
        raise RuntimeError(f"kafka: {err.str()}")
    log.warning("kafka: %s", err.str())


def _as_entry(m: Any) -> tuple[bytes, dict[bytes, bytes]]:
    """A message as a stream entry: ``(b"<ms>-<partition>.<offset>", {b"data": value})``."""
    kind, ts = m.timestamp()
    ms = ts if kind and ts > 0 else int(time.time() * 1000)
    value = m.value()
    return _entry(ms, m.partition(), m.offset()), ({b"data": value} if value is not None else {})


def _as_entries(msgs: list[Any]) -> dict[str, Entries]:
    """Messages as stream entries by topic (:func:`_as_entry`)."""
    out: dict[str, Entries] = {}
    for m in msgs:
        err = m.error()
        if err is not None:
            _consume_error(err)
            continue
        out.setdefault(m.topic(), []).append(_as_entry(m))
    return out


class KafkaFollower:
    """The monitor's view of the topics: its own consumer group (``<groupId>.monitor``),
    from the end of the topics when the group is new, offsets committed once handled."""

    def __init__(self, model: OnlineModel) -> None:
        k = model.spec.source.kafka
        assert k is not None, "spec.source.kafka"
        self.kafka = k
        self.samples = k.samples or ""
        self.feedback = k.feedback or ""
        self.group = f"{group_prefix(model)}.monitor"
        self.new = True  # (as a learner's KafkaTopics: what the fetcher had)
        self._consumer: Any = None
        self._pending = False

    def start(self) -> None:
        """Every partition of the topics, from the group's committed offset, else the end
        (assigned here, not by a group rebalance: reading starts now, not a moment later)."""
        from confluent_kafka import TopicPartition

        if self._consumer is None:
            self._consumer = consumer(self.kafka, self.group, "latest")
        c = self._consumer
        meta = retrying(lambda: c.list_topics(timeout=10), "listing the topics")
        tps = [TopicPartition(topic, p)
               for topic in (self.samples, self.feedback) if topic and topic in meta.topics
               for p in sorted(meta.topics[topic].partitions)]  # fmt: skip
        assign = []
        committed = (
            retrying(lambda: c.committed(tps, timeout=10), "the group's offsets") if tps else []
        )
        for tp in committed:
            if tp.offset < 0:  # never committed: the end, now
                tp.offset = ends(c, tp)[1]
            assign.append(tp)
        c.assign(assign)

    def read(self, count: int, block_ms: int) -> list[tuple[str, Entries]]:
        assert self._consumer is not None, "start() first"
        msgs = consume(self._consumer, count, block_ms / 1000)
        self._pending = self._pending or bool(msgs)
        return list(_as_entries(msgs).items())

    def ack(self, pipe: Any) -> None:
        pass

    def acked(self) -> None:
        from confluent_kafka import KafkaException

        if self._pending and self._consumer is not None:
            try:
                self._consumer.commit(asynchronous=True)  # what consume() returned so far
                self._pending = False
            except KafkaException as e:
                log.warning("kafka: committing the monitor's offsets failed: %s", e)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class KafkaWriter:
    """The servers' feedback and ``:learn`` onto the topics: acks=all, idempotent, each
    request answered once every message of it is stored (or failed: then 503, retry)."""

    def __init__(self, model: OnlineModel, timeout: float = 5.0) -> None:
        from confluent_kafka import Producer

        k = model.spec.source.kafka
        assert k is not None, "spec.source.kafka"
        self.samples, self.feedback = k.samples, k.feedback
        self.producer = Producer(client_config(k, **{
            "acks": "all", "enable.idempotence": True, "linger.ms": 2,
            # a broker away this long: the request is answered 503 (retry), not held
            "message.timeout.ms": int(timeout * 1000)}))  # fmt: skip
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tideline-kafka", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        """Delivery reports are served here, off the event loop."""
        while not self._stopping.is_set():
            self.producer.poll(0.05)

    async def write(self, topic: str, values: list[bytes], keys: list[bytes] | None = None) -> None:
        """Every value a message (with its key, if given); returns once all are stored,
        raises ``KafkaError`` if any is not (a broker away past the timeout, a topic that
        does not exist)."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in values]

        def delivered(fut: asyncio.Future[None], err: Any) -> None:
            if fut.done():
                return
            if err is None:
                fut.set_result(None)
            else:
                fut.set_exception(KafkaError(str(err)))

        def report(fut: asyncio.Future[None]) -> Callable[[Any, Any], None]:
            def on_delivery(err: Any, _msg: Any) -> None:
                # called on the polling thread: the future is settled on the loop's
                loop.call_soon_threadsafe(delivered, fut, err)

            return on_delivery

        for i, (fut, value) in enumerate(zip(futures, values, strict=True)):
            try:
                key = keys[i] if keys is not None else None
                self.producer.produce(topic, value, key=key, on_delivery=report(fut))
            except BufferError:  # the local queue is full: the brokers are away or slow
                delivered(fut, "the producer's queue is full")
        await asyncio.gather(*futures)

    def close(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)
        left = self.producer.flush(timeout)
        if left:
            log.warning("kafka: %d messages not delivered at stop", left)


class KafkaError(Exception):
    """A message was not stored."""
