"""The learner process: streams in, versions out, exactly once.

One learner runs per active revision. It consumes two streams - Redis
streams through its revision's consumer group, or Kafka topics
(``spec.source.kafka``; :mod:`tideline.pods.sources`):

* ``samples``: labelled rows, ``{"features": {...}, "label": y}``, or packed
  (:mod:`tideline.samples`);
* ``feedback``: ``{"id": prediction_id, "label": y}``, or packed
  (``{"feedback": [...]}``, :mod:`tideline.contracts`), joined with the
  prediction the id names in the servers' prediction log, within
  ``labelWindow`` (:mod:`tideline.pods.join`, :mod:`tideline.predlog`): the
  learner holds nothing per prediction.

and updates the model in mini-batches (``batchSize`` or ``maxBatchDelay``,
whichever comes first; a fresh model ramps its batch from 1 up, see
:func:`tideline.evaluate.ramp_size`), test-then-train, mixing in replayed
samples. What is learned when, what is refused and the gate are decided by
:class:`tideline.training.Training`, which reads and writes nothing; this
module is the I/O around it. Every entry it consumes is acknowledged (or, from Kafka, its offset
recorded) only inside the same MULTI/EXEC that writes the checkpoint holding
the update it fed: after a ``kill -9`` anywhere, the restarted learner resumes
from the checkpoint and re-reads exactly the entries not done, so no labelled
sample is lost or learned twice (a packed feedback entry is acknowledged with
its last label; the checkpoint says which of its labels were done, see
:class:`OpenEntries`). Every ``publishEvery`` updates a version is published, in
that same transaction, if it passes the holdout gate: its prequential loss on
the latest ``gate.holdout`` samples may exceed the served version's by at
most ``gate.maxLossIncrease`` (relative).

Bad entries (unparseable, a label that is not 0/1 for a binary task or not a
class of a multiclass model's, a label too late for the window) go to the
``deadletter`` stream with the reason, in the same transaction: nothing is
dropped silently. A label is read as the model's :class:`tideline.tasks.Task`
reads it (a multiclass model's class names as their indices), and a row's
scores are the task's: ``(n, k)`` probabilities for a multiclass model.

The store may lose keys under a running learner (Redis restarted empty, flushed,
or evicting): a reply that says its consumer group is gone (``NOGROUP``) makes the
groups again where this process had read to, and a checkpoint that finds the
previous one gone (an ``EXISTS`` in its transaction; a version due then is not
published into the empty store) means a store reset. The learner then puts back
what it holds - the served version, ``lastGood`` when it has a copy, the versions
it published last, with their numbers, and the pointers as it last read them
(:meth:`tideline.store.ModelStore.restore`: nothing another process put back
first is overwritten) - writes its checkpoint from memory and numbers on
(``storeResetAt`` and ``restored`` in its status). A learner that starts without a
checkpoint resumes from its revision's served version when the store holds one
(``resumedFrom``), never publishing a cold v0 over a model that had versions; with
nothing stored and ``TIDELINE_AWAIT_START=1`` it waits for the operator's
:class:`tideline.contracts.StartWord`. Redis refusing writes for want of memory
(``OOM``) is waited out like a lost connection. Every version, checkpoint and replay
buffer it writes is signed, and each one it reads verified before it is decoded
(:mod:`tideline.signing`): a checkpoint that does not verify is never resumed from - it is
logged, counted and taken as missing (the served version, the entries not acknowledged
read again); a served version that does not verify is not resumed from either, and the
learner starts as after a store reset that lost the versions (``after:N``: numbered after
the newest stored, a cold model ``latest`` only and pinned), without waiting for a word
the operator only gives a store with no pointers. A turn that fails is retried with
a backoff; :class:`tideline.pods.liveness.Liveness` ends :meth:`LearnerProcess.run`
after too many in a row, so the process exits non-zero instead of failing quietly.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
import redis

from tideline import codec, predlog, signing
from tideline.algorithms import Learner
from tideline.contracts import (
    AWAIT_START_ENV,
    Backtest,
    DeadLetter,
    LearnerControl,
    LearnerStatus,
    Pointers,
    StartWord,
    feedback_labels,
)
from tideline.memory import MemoryUse, Probe
from tideline.pods import history, storage
from tideline.pods.catchup import CatchUp
from tideline.pods.defaults import DEFAULTS, Defaulting, DefaultLabels, TypedRows
from tideline.pods.join import Joined, LogJoin
from tideline.pods.liveness import Liveness
from tideline.pods.metrics import LearnerMetrics
from tideline.pods.sources import LabelSource, RedisStreams, group_gone
from tideline.samples import SampleDecoder
from tideline.signing import ForgedBlob, Opened, Sealing
from tideline.spec import OnlineModel, SpecError
from tideline.starting import Found, FromServed, Held, Publish, Wait, check_warm_start, first_state
from tideline.store import (
    ModelStore,
    Reference,
    StoreError,
    learner_from_blob,
    migrate_keys,
    node_info,
    open_version,
    transaction,
)
from tideline.training import Run, Training

log = logging.getLogger("tideline.learner")

# a label held until its prediction is mature: its rows' features, labels and runs
_Held = tuple[list[dict[str, Any]], list[float], list[Run]]
MATURING_ROWS = 200_000  # labelled rows held so, at most (past it learned at once)

CHECKPOINT_SECONDS = 1.0
WARM_START_DIR = "/etc/tideline/warm-start"
ADAPT_KEEP = 0.05  # confidence kept when adapting to concept drift (see Learner.soften)
MAX_SNAPSHOT_BYTES = 1 << 30  # a warm-start file larger than any model the spec allows
MAINTAIN_SECONDS = 10.0  # how often the source is tidied (streams trimmed, partitions found)
READ_BYTES = 1 << 20  # a read of the source: about this many bytes of entries
MIN_READ_ENTRIES, MAX_READ_ENTRIES = 16, 2000
AWAIT_POLL_SECONDS = 0.5  # how often a learner waiting for the operator's StartWord asks
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0  # seconds between turns that fail, doubling


class OpenEntries:
    """Feedback entries of many labels, acknowledged once every label in them is done
    (learned, or dead-lettered); until then which are done is part of the checkpoint, so
    an entry read again after a restart has only the rest learned. A label of such an
    entry is named ``{entry}/{i}``.
    """

    def __init__(self, restored: Mapping[str, list[int]] | None = None) -> None:
        self._open: dict[bytes, tuple[int, set[int]]] = {}
        self._restored = {e.encode(): set(done) for e, done in (restored or {}).items()}

    def begin(self, entry: bytes, n: int) -> set[int]:
        """An entry of ``n`` labels read; the ones done before a restart (skip them)."""
        done = self._restored.pop(entry, set())
        self._open[entry] = (n, done)
        return set(done)

    def done(self, label: bytes) -> bytes | None:
        """A label done; its entry when that was the last one (to acknowledge)."""
        entry, _, i = label.rpartition(b"/")
        n, done = self._open[entry]
        done.add(int(i))
        if len(done) < n:
            return None
        del self._open[entry]
        return entry

    def state(self) -> dict[str, list[int]]:
        """The open entries' done labels (and those restored, not read again yet)."""
        out = {e.decode(): sorted(d) for e, d in self._restored.items()}
        out.update((e.decode(), sorted(d)) for e, (_, d) in self._open.items() if d)
        return out


class LearnerProcess:
    """The learning loop of one revision (see module docs)."""

    def __init__(
        self,
        model: OnlineModel,
        client: redis.Redis,
        *,
        revision: str | None = None,
        warm_start_revision: str | None = None,
        metrics: LearnerMetrics | None = None,
        clock: Callable[[], float] = time.time,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
        liveness: Liveness | None = None,
        memory: Probe | None = None,
    ) -> None:
        self.model = model
        self.spec = model.spec
        # redis-py's stubs type replies as unions of bytes, str and more; this
        # client always decodes nothing (bytes in, bytes out).
        self.r: Any = client
        self.revision = revision or model.revision
        self.warm_start_revision = warm_start_revision
        self._warm_source = ""  # where v0 came from, when it was warm-started
        self.metrics = metrics or LearnerMetrics(None)
        # what it writes is signed, what it reads verified (see tideline.signing)
        sealing = Sealing.from_env(model.namespace, model.name, component="learner",
                                   refused=self.metrics.forged_blobs.inc)  # fmt: skip
        self.store = ModelStore(client, model.namespace, model.name, sealing)
        self.keys = self.store.keys
        self.group = self.keys.learner_group(self.revision)
        self.clock = clock
        self.checkpoint_seconds = checkpoint_seconds
        ls = self.spec.learning
        # every decision about what is learned (tideline.training): no I/O in it
        self.training = Training(self.spec.model, ls, clock)
        self.schema = self.training.schema
        self.task = self.training.task
        default = ls.labelDefault
        self.join = LogJoin(client, self.keys, ls.labelWindow, self.group,
                            default_after=default.after if default else None,
                            late=ls.lateLabel)  # fmt: skip
        # the predictions no label came for, learned with the default (tideline.pods.defaults)
        self.defaults = (
            DefaultLabels(
                client, self.keys, self.join, self.task.target(default.value), default.after
            )  # fmt: skip
            if default is not None
            else None
        )
        self._read_from = time.time()  # when the read that came back last was asked for (the
        # streams' own time, whatever clock the learner runs on)
        # labelDefault: a label waits for its prediction to be 'after' old, then is learned
        # with the defaults of its time (in prediction-time order: learned at once, the
        # clicks of the last 'after' would have the model predict a rate well above the true
        # one, bench/defaults.py)
        self.defaulting: Defaulting[_Held] = Defaulting(self.defaults, MATURING_ROWS)
        self._typed_rows = TypedRows(self.schema)
        # predictions joined and learned, marked at checkpoint: keys by slice of time
        self._marks: dict[int, list[str]] = {}
        self.open_entries = OpenEntries()
        self._read_count = 128  # entries, then as many as make READ_BYTES
        self.samples = SampleDecoder(self.schema, self.task)
        # the versions it would put back after a store reset, the pointers as last known
        self.held = Held()
        self._checkpointed = False  # a checkpoint of this learner's is in the store
        self._regroup = False  # a reply said a consumer group is gone
        self._reset = False  # the store lost this learner's checkpoint: put back what it holds
        self._due: str | None = None  # a version's reason, not published into a reset store
        self._notes: dict[str, str] = {}  # status fields: storeResetAt, restored, resumedFrom
        self._oom = False  # Redis refused a write for want of memory (logged once)
        self.liveness = liveness or Liveness()
        self.source = self._source()
        self._dead: list[DeadLetter] = []
        self._last_checkpoint = 0.0
        self._replay_saved = -math.inf  # when the replay buffer was last saved
        self._dirty = False
        self._last_maintain = clock()
        self._lag: int | None = None  # records behind the source, as last measured
        self.memory = memory or Probe()  # where its memory and its container's limit are read
        self._state_bytes: int | None = None  # the last checkpoint's size
        self._near_limit = False  # its memory was near its limit (logged once an episode)
        self.paused = False
        # spec.learning.history: a learner with no checkpoint learns the history up to when
        # its live reading of the labels begins, before its first version (tideline.pods.catchup)
        self._catch_until: float | None = None
        self._no_catch_up = False  # it started without one: resumed, or history elsewhere

    @property
    def learner(self) -> Learner:
        return self.training.learner

    @property
    def served_version(self) -> int:
        """The version the gate compares with (-1: none yet)."""
        return self.held.served

    @property
    def counters(self) -> dict[str, Any]:
        """What a checkpoint keeps and the status shows: rows learned, versions, refusals."""
        return self.training.counters

    # -- start-up ----------------------------------------------------------------------
    def _source(self) -> LabelSource:
        warm = self.warm_start_revision
        if self.spec.source.kafka is None:
            return RedisStreams(
                self.r, self.keys, self.group, self.keys.learner_group(warm) if warm else None
            )
        from tideline.pods.kafka import KafkaTopics

        # a revision warm-started from another starts where that one's learner is
        warm_meta = self._checkpoint_meta(warm) if warm else None
        return KafkaTopics(self.model, self.revision, warm_state=(warm_meta or {}).get("source"),
                           starts=(self.r, self.keys.kafka_starts(self.revision)))  # fmt: skip

    def start(self, stop: threading.Event | None = None) -> None:
        """Ready to learn: the checkpoint back in memory, or a first state (see
        :meth:`_first_state`; a learner told to wait for the operator's word returns when
        ``stop`` is set, with nothing published)."""
        moved = migrate_keys(self.r, self.keys)
        if moved:
            log.info("moved %d keys of %s to the hash-tagged layout", moved, self.keys.prefix)
        meta = self._restore_checkpoint()
        self._checkpointed = meta is not None
        kafka = self.spec.source.kafka
        # (a Kafka learner that starts at the topics' beginning reads its history there)
        if (
            meta is None
            and self.spec.learning.history
            and not (
                kafka is not None and kafka.startFrom == "earliest" and not self.warm_start_revision
            )
        ):
            self._catch_until = self._catch_up_until()
        for stream, entry, fields, reason in self.source.start(meta and meta.get("source")):
            self._dead_letter(stream, entry, fields, reason)
            self._dirty = True
        if self.defaults is not None:
            # (a revision warm-started from another starts where that one's learner is)
            warm = self.warm_start_revision
            since = meta or (self._checkpoint_meta(warm) if warm else None) or {}
            self.defaults.start(since.get("defaults"))
        if meta is None:
            self._first_state(stop or threading.Event())
        self._no_catch_up |= meta is not None
        if self.spec.learning.history and self._no_catch_up:
            # it resumed, or reads its history from Kafka: a backtest step waiting for this
            # revision's learns there is none to wait for (unless one ran before a restart)
            none = Backtest(done=True).encode()
            self.r.hsetnx(self.keys.learner(self.revision), LearnerStatus.BACKTEST, none)
        self._refresh_served()
        self.measure_lag()
        self.metrics.versions.set(self.counters["next_version"] - 1)

    def _catch_up_until(self) -> float:
        """Where a new revision's live reading of the labels begins (a label's arrival, in
        seconds): it learns the history up to there. On Redis streams a revision warm-started
        from another reads on where that one's learner is (what came after its version, the
        history holds); a cold one's group starts at the history's end rather than at the
        stream's beginning (those labels are in the history). On Kafka: now (a cold learner
        reads the topics from their end, a warm one from where that one's learner is: a
        label may come both ways there)."""
        source = self.source
        if not isinstance(source, RedisStreams):
            return self.clock()
        if source.warm_group:
            at = source.group_start(source.feedback)
            if at != "0":  # (read once: the group starts where the history ends)
                source.starts[source.feedback] = at
                return predlog.entry_seconds(at)
        _, _, last = history.span(self.r, self.keys)
        at = last or f"{int(self.clock() * 1000)}-0"
        source.starts[source.feedback] = at
        return predlog.entry_seconds(at)

    def _backtest_window(self) -> float:
        """The history a backtest compares on: the longest a backtest step names."""
        return max((s.backtest or 0.0 for s in self.spec.rollout.steps), default=0.0)

    def _version_before(self, revision: str, served: int, until: float) -> int:
        """The newest version up to ``served`` that learned nothing after ``until``, so the
        catch-up has the window to compare on - or, when none is kept that old, the oldest
        kept (as much of the window as there is) - among those after which all that was
        learned is in the history: labelled samples (``:learn``) are not, nor are labels
        older than its first entry, and the samples group starts where the revision's
        learner is. Else ``served``."""
        kept = sorted((v for v in self.store.versions(revision) if v <= served), reverse=True)
        _, first, _ = history.span(self.r, self.keys)
        if first is None:
            return served
        # (with labelDefault a version had not learned the clicks of the last ``after``
        # before it: they come from the history too, which must hold them)
        default = self.spec.learning.labelDefault
        floor = predlog.entry_seconds(first) + (default.after if default is not None else 0.0)
        best = served
        for v in kept:
            try:
                learned = float(self.store.version_meta(revision, v).get("learnedUntil", 0.0))
            except StoreError:
                continue
            if v != served and (learned < floor or self._samples_since(learned)):
                break  # (and so is every older one)
            best = v
            if learned <= until:
                break
        return best

    def _samples_since(self, t: float) -> bool:
        """Whether labelled samples came after ``t`` (always, for Kafka: not looked up)."""
        if not isinstance(self.source, RedisStreams):
            return True
        return bool(self.r.xrange(self.keys.samples, f"{int(t * 1000) + 1}-0", "+", count=1))

    def _opened(self, key: str, kind: str) -> Opened | None:
        """A blob of the model's, verified; None when missing or refused (the sealing logs
        and counts a refusal once)."""
        raw = self.r.get(key)
        if raw is None:
            return None
        try:
            return self.store.sealing.open(raw, kind, key)
        except ForgedBlob:
            return None

    def _checkpoint_meta(self, revision: str) -> dict[str, Any] | None:
        opened = self._opened(self.keys.checkpoint(revision), signing.CHECKPOINT)
        return codec.decode(opened.blob)[1] if opened is not None else None

    def _restore_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint's state back in the learner; its meta (None: there is none, or
        none that verifies: a refused checkpoint is never loaded, and is taken as missing)."""
        key = self.keys.checkpoint(self.revision)
        opened = self._opened(key, signing.CHECKPOINT)
        if opened is not None and not opened.trusted:
            try:  # (no key: unsigned state of the built-ins only)
                signing.require_trusted(self.spec.model.algorithm, opened.trusted)
            except ForgedBlob as e:
                self.store.sealing.refuse(key, opened.blob, e)
                opened = None
        if opened is None:
            if self.r.exists(key):
                log.warning("%s's checkpoint was refused (see above): not resumed from; the "
                            "learner starts as without one, and the entries it had not "
                            "acknowledged are read again", self.revision)  # fmt: skip
            return None
        arrays, meta = codec.decode(opened.blob)
        if "replay.y" not in arrays:  # (saved beside the checkpoint; inside it before)
            saved = self._opened(self.keys.replay(self.revision), signing.REPLAY)
            arrays.update(codec.decode(saved.blob)[0] if saved is not None else {})
        with signing.loading(opened.trusted):
            self.training.restore(arrays, meta["counters"])
        self.open_entries = OpenEntries(meta.get("packed"))
        log.info(
            "resumed %s from checkpoint at %d samples", self.revision, self.counters["samples"]
        )
        return dict(meta)

    def _warm_start_blob(self) -> tuple[bytes | None, str, bool]:
        """The snapshot to warm-start from, where it came from, and whether it is trusted:
        another revision's version (verified: one refused is none), or the spec's file or
        ConfigMap (written by the team: trusted like the manifest, read unsigned)."""
        if self.warm_start_revision:
            # the version stable serves: after a rollback its latest may be the bad one
            ptr = self.store.pointers(self.warm_start_revision)
            v = ptr.served if ptr.served is not None else ptr.latest
            if v is not None and self._catch_until is not None:  # (an older one: see there)
                until = self._catch_until - self._backtest_window()
                v = self._version_before(self.warm_start_revision, v, until)
            if v is not None:
                key = self.keys.version(self.warm_start_revision, v)
                source = f"revision {self.warm_start_revision} v{v}"
                opened = self._opened(key, signing.VERSION)
                if opened is not None:
                    return opened.blob, source, opened.trusted
                if not self.r.exists(key):
                    return None, source, False
            # (a version refused - logged - is no version: the spec's warm start, or none)
            log.warning("revision %s has no version to warm-start from", self.warm_start_revision)
        ws = self.spec.model.warmStart
        if ws is None:
            return None, "", False
        if ws.storageUri is not None:
            # bytes from the network: trusted (a team's code may load them) only when the
            # manifest pins them with their sha256; a built-in learner's arrays load either way
            blob = storage.fetch(ws, MAX_SNAPSHOT_BYTES)
            return blob, storage.shown(ws.storageUri), ws.sha256 is not None
        path = (
            Path(ws.file)
            if ws.file
            else Path(os.environ.get("TIDELINE_WARM_START_DIR", WARM_START_DIR)) / ws.key
        )
        try:
            if not path.is_file():  # /dev/zero would be read forever
                raise SpecError("spec.model.warmStart", f"{path} is not a regular file")
            with path.open("rb") as f:
                blob = f.read(MAX_SNAPSHOT_BYTES + 1)
        except OSError as e:
            raise SpecError("spec.model.warmStart", f"cannot read {path}: {e.strerror}") from None
        if len(blob) > MAX_SNAPSHOT_BYTES:
            raise SpecError(
                "spec.model.warmStart", f"{path} is over {MAX_SNAPSHOT_BYTES >> 20} MiB"
            )
        if ws.sha256 is not None:
            storage.check_sha256(blob, ws.sha256, str(path))
        return blob, str(path), True

    def _first_state(self, stop: threading.Event) -> None:
        """Where a learner without a checkpoint starts (:func:`tideline.starting.first_state`):
        its served version, a first version, or - with ``TIDELINE_AWAIT_START=1``, the
        operator's Deployments - the operator's :class:`StartWord`, asked every
        ``AWAIT_POLL_SECONDS`` until ``stop`` is set. A learner waiting is alive (its
        liveness beats), not failing."""
        awaits = os.environ.get(AWAIT_START_ENV) == "1"
        waited = False
        while not stop.is_set():
            found, served = self._found()
            match first_state(found, awaits):
                case FromServed(version=v, newest=newest):
                    assert served is not None  # (found.served: its blob verified)
                    self._resume_from(v, newest, *served)
                    self._no_catch_up = True
                    return
                case Publish(after=after):
                    if found.refused is not None:
                        log.warning("%s's served version v%d was refused (see above): not "
                                    "resumed from; the learner starts after v%d",
                                    self.revision, found.refused, after)  # fmt: skip
                    elif awaits:
                        log.info("%s starts on the operator's word: %s", self.revision,
                                 StartWord(after=after).encode())  # fmt: skip
                    if after is not None:
                        self.counters["next_version"] = after + 1
                        self._notes["startedAfter"] = str(after)
                    self._initial_version(after)
                    return
                case Wait():
                    if not waited:
                        log.info("%s has no checkpoint and no stored version: waiting for the "
                                 "operator's word (%s)", self.revision, AWAIT_START_ENV)  # fmt: skip
                        waited = True
                    self.liveness.beat()
                    stop.wait(AWAIT_POLL_SECONDS)

    def _found(self) -> tuple[Found, tuple[Learner, dict[str, Any]] | None]:
        """What the store holds of this revision besides a checkpoint, and the served
        version's learner and header when its blob is there and verifies (one refused is
        logged and counted by the sealing, and never loaded)."""
        ptr = self.store.pointers(self.revision)
        numbers = [*self.store.versions(self.revision)]
        numbers += [v for v in (ptr.latest, ptr.served, ptr.lastGood) if v is not None]
        raw = self.r.hget(self.keys.control(self.revision), StartWord.FIELD)
        found = Found(newest=max(numbers, default=-1), word=StartWord.decode(raw))
        if ptr.served is None:
            return found, None
        key = self.keys.version(self.revision, ptr.served)
        blob = self.r.get(key)
        if blob is None:
            return found, None
        try:
            served = open_version(self.store.sealing, blob, key)
        except ForgedBlob:
            return dataclasses.replace(found, refused=ptr.served), None
        self.held.read(ptr)
        return dataclasses.replace(found, served=ptr.served), served

    def _resume_from(
        self, version: int, newest: int, base: Learner, header: dict[str, Any]
    ) -> None:
        """The served version's state as the learner's (and the replay buffer's, if left);
        numbering on after the newest version stored."""
        self.learner.set_state(base.get_state())
        saved = self._opened(self.keys.replay(self.revision), signing.REPLAY)
        if saved is not None:
            self.training.replay.set_state(codec.decode(saved.blob)[0])
        self.counters["next_version"] = newest + 1
        self.counters["samples"] = int(header.get("samples", 0))
        self.counters["learned_until"] = float(header.get("learnedUntil", 0.0))
        self._notes["resumedFrom"] = f"v{version}"
        log.warning("%s has no checkpoint: resumed from its served version v%d (%d samples); "
                    "the next version is v%d", self.revision, version, base.n_seen,
                    newest + 1)  # fmt: skip
        self._checkpoint()  # (publishes nothing: no update since)

    def _initial_version(self, after: int | None = None) -> None:
        """The first version: v0 (or v(after + 1) after a store reset the operator saw),
        from the warm start if there is one. A cold model after a store reset is published
        as ``latest`` only, pinned: servers keep what they hold, and the operator or a user
        serves it when they choose."""
        blob, source, trusted = self._warm_start_blob()
        if blob is not None:
            try:
                base, header = learner_from_blob(blob, trusted=trusted)
            except ForgedBlob:  # (a storageUri's bytes, not pinned, for a team's learner)
                raise storage.WarmStartFailed(source, "a learner whose state is code loads a "
                                              "snapshot from storage only when "
                                              "spec.model.warmStart.sha256 pins it") from None  # fmt: skip
            except (codec.CodecError, KeyError, ValueError) as e:
                # (the manifest is right, the bytes are not: a fault of the model, which the
                # operator's ModelLoaded condition says, as for a storageUri's)
                raise storage.WarmStartFailed(source, f"is not a tideline snapshot: {e}") from None
            check_warm_start(base, self.learner, source)
            self.learner.set_state(base.get_state())
            # what stable's version had learned, this one has (a baseline file: none of it)
            self.counters["learned_until"] = float(header.get("learnedUntil", 0.0))
            self._warm_source = source
            log.info("warm start from %s (%d samples)", source, base.n_seen)
            # the baseline's drift reference becomes this revision's: drift is measured
            # from the first prediction, not after a window of traffic
            reference = (
                self.warm_start_revision and self.store.reference(self.warm_start_revision)
            ) or Reference.of_snapshot(blob, source)
            if reference is not None and self.store.save_reference(self.revision, reference):
                log.info("drift reference from %s (%d rows)", source, len(reference.features))
        if self._catch_until is not None and after is None:
            self._catch_up(self.counters["learned_until"])
        else:
            self._no_catch_up = True
        cold = after is not None and blob is None
        self._checkpoint(publish=True, reason="initial", pin=cold)
        if cold:
            log.warning("%s published a cold model as v%d, latest only and pinned (the store "
                        "lost versions up to v%d): nothing serves it until it is served by "
                        "hand or proven", self.revision, self.counters["next_version"] - 1,
                        after)  # fmt: skip

    def _catch_up(self, since: float) -> None:
        """The history learned before the first version (:mod:`tideline.pods.catchup`), its
        predictions marked taken with the first checkpoint, its progress and backtest in the
        status as it goes."""
        assert self._catch_until is not None
        key = self.keys.learner(self.revision)

        def report(b: Backtest) -> None:
            self._notes[LearnerStatus.BACKTEST] = b.encode().decode()
            self.r.hset(key, LearnerStatus.BACKTEST, self._notes[LearnerStatus.BACKTEST])

        default = self.spec.learning.labelDefault  # (a click is learned when it is mature)
        catch = CatchUp(self.r, self.keys, self.training, self.join, since=since,
                        until=self._catch_until, window=self._backtest_window(), report=report,
                        beat=self.liveness.beat,
                        mature_after=default.after if default is not None else 0.0)  # fmt: skip
        catch.run()

    # -- reading -----------------------------------------------------------------------
    def _read(self, block_ms: int) -> None:
        # Up to a few thousand entries a read (fewer round trips), and about READ_BYTES of
        # them: Redis makes the next reply while this one is learned, and a reply of 2,000
        # packed entries (13 MB) would keep the learner waiting for it instead.
        n = size = 0
        # (a reply may have been asked for at the previous read: Redis reads ahead)
        asked, self._read_from = self._read_from, time.time()
        count = self._read_count
        for stream, entries in self.source.read(count, block_ms):
            n += len(entries)
            # (sized from a few of them: an estimate is all the next read's count needs)
            some = entries[:: max(1, len(entries) // 16)]
            size += (
                len(entries) * sum(len(f.get(b"data") or b"") for _, f in some) // max(len(some), 1)
            )
            if stream == self.source.samples:
                self._on_samples(entries)
            else:
                self._on_feedback(entries)
        if n:
            fit = READ_BYTES * n / max(size, 1)
            self._read_count = int(min(MAX_READ_ENTRIES, max(MIN_READ_ENTRIES, fit)))
        self._on_joined(self.join.resolve(), self.source.feedback)
        self._issue_defaults(asked, n, count)
        for rej in self.join.take_rejected():
            self._dead_letter(
                self.source.feedback,
                rej.feedback_id.encode(),
                {b"id": rej.prediction_id.encode()},
                rej.reason,
            )

    def _issue_defaults(self, asked: float, entries: int, most: int) -> None:
        """The predictions no label came for (``spec.learning.labelDefault``), and the labels
        held for them, once due after a read (:meth:`Defaulting.due`)."""
        defaults, mature = self.defaulting.due(asked, entries, most, self.source.new)
        for (rows, labels, runs), _ in mature:
            self._learn_rows(rows, labels, runs)
        self._on_defaults(defaults)

    def _on_samples(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """A read of ``samples``: its rows to the next mini-batches, what is refused to the
        dead letters (an entry whose every row is refused is acknowledged with them)."""
        stream = self.source.samples
        d = self.samples.decode(entries)
        runs = {eid: Run(stream, eid, n) for eid, n in d.runs}
        for r in d.refused:
            run = runs.get(r.entry)
            # an entry with rows to learn is acknowledged with them
            self._dead_letter(stream, r.entry, r.fields, r.reason, ack=run is None)
        if len(d):
            self._pend(d.X, d.y, list(runs.values()))

    def _on_feedback(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """A read of ``feedback``: each label to the join, an invalid one to the dead letters
        (of a packed entry, that label alone)."""
        target, add, stream = self.task.target, self.join.add, self.source.feedback
        for entry_id, fields in entries:
            fid = entry_id.decode()
            try:
                packed, labels = feedback_labels(fid, fields.get(b"data"))
            except ValueError as e:
                self._dead_letter(stream, entry_id, fields, f"invalid: {e}")
                continue
            # The label's arrival time is its stream id: the same after a restart.
            received = predlog.entry_seconds(fid)
            done = self.open_entries.begin(entry_id, len(labels)) if packed else set()
            for i, (name, item) in enumerate(labels):
                if i in done:
                    continue
                try:
                    if isinstance(item, tuple):
                        raise ValueError(item[0])
                    # the label checked before it takes the prediction
                    add(name, item.id, target(item.label), received)
                except ValueError as e:
                    if not packed:  # the entry is the label
                        self._dead_letter(stream, entry_id, fields, f"invalid: {e}")
                        continue
                    raw = item[1] if isinstance(item, tuple) else msgspec.to_builtins(item)
                    self._dead_letter(stream, name.encode(), {b"data": orjson.dumps(raw)},
                                      f"invalid: {e}")  # fmt: skip

    def _on_joined(self, joined: list[Joined], stream: str) -> None:
        """Labels joined with their logged predictions (from ``stream``: the feedback, or
        :data:`DEFAULTS`): their rows, one block."""
        rows: list[dict[str, Any]] = []
        labels: list[float] = []
        runs: list[Run] = []
        for j in joined:
            j = self._corrections(j, stream)
            if not len(j):
                continue
            try:
                rows += j.features()
            except (ValueError, TypeError, IndexError) as e:
                self.join.release(j.marks)
                for fid, key in zip(j.feedback_ids, j.keys, strict=True):
                    self._dead_letter(stream, fid.encode(), {b"id": key.encode()},
                                      f"invalid: the logged prediction cannot be read: {e}")  # fmt: skip
                continue
            if stream == DEFAULTS:  # a request's defaults: learned and acknowledged as one
                runs.append(_default_run(j))
                labels += j.labels
                continue
            mine = [
                Run(stream, fid.encode(), 1, (j.slice, [key]), late)
                for fid, key, late in zip(j.feedback_ids, j.keys, j.late, strict=True)
            ]
            if self.defaulting.early(j.ts):
                held = (rows[len(rows) - len(j) :], list(j.labels), mine)
                if self.defaulting.hold(held, j.ts, len(j)):
                    del rows[len(rows) - len(j) :]
                    continue
            labels += j.labels
            runs += mine
        self._learn_rows(rows, labels, runs)

    def _on_defaults(self, joined: list[Joined]) -> None:
        """The defaults due (a :class:`Joined` a request): each request's rows learned and
        acknowledged as one run, in order; decoded straight into typed rows where every row
        is of the schema (:class:`TypedRows`), else as labels' are (:meth:`_on_joined`): one
        request of another shape leaves the others typed."""
        typed: list[Any] = []
        labels: list[float] = []
        runs: list[Run] = []

        def pend_typed() -> None:
            if typed:
                self._pend(
                    self.schema.encode_typed(typed), np.array(labels, dtype=np.float64), runs
                )

        for j in joined:
            rows = self._typed_rows.of(j)
            if rows is None:
                pend_typed()
                typed, labels, runs = [], [], []
                self._on_joined([j], DEFAULTS)
                continue
            typed += rows
            labels += j.labels
            runs.append(_default_run(j))
        pend_typed()

    def _corrections(self, j: Joined, stream: str) -> Joined:
        """Of a request's labels, the late ones that say what their default said are
        dead-lettered: it was learned right (``lateLabel: correct`` joins the others)."""
        if stream == DEFAULTS or self.defaults is None or not any(j.late):
            return j
        default = self.defaults.value
        same = [late and label == default for late, label in zip(j.late, j.labels, strict=True)]
        if not any(same):
            return j
        self.join.release([m for m, s in zip(j.marks, same, strict=True) if s])
        keep = []
        for i, s in enumerate(same):
            if not s:
                keep.append(i)
                continue
            self._dead_letter(stream, j.feedback_ids[i].encode(), {b"id": j.keys[i].encode()},
                              "after-default: the default learned was this label")  # fmt: skip
        return Joined(j.entry, j.ts, [j.rows[i] for i in keep], [j.labels[i] for i in keep],
                      [j.feedback_ids[i] for i in keep], [j.received[i] for i in keep],
                      j.slice, [j.keys[i] for i in keep])  # fmt: skip

    def _learn_rows(self, rows: list[dict[str, Any]], labels: list[float], runs: list[Run]) -> None:
        if rows:
            X = self.schema.encode_lenient(rows)
            self._pend(X, np.array(labels, dtype=np.float64), runs)

    def _pend(self, X: np.ndarray, y: np.ndarray, runs: list[Run]) -> None:
        """Rows with their checked labels, for the next mini-batches: acknowledged only once
        the batch holding them is learned and checkpointed."""
        self.training.add(X, y, runs)

    def _dead_letter(
        self, stream: str, entry_id: bytes, fields: dict[bytes, bytes], reason: str,
        ack: bool = True,
    ) -> None:  # fmt: skip
        dead = DeadLetter(
            stream,
            entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
            reason,
            {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()},
        )
        self.counters[dead.kind] = self.counters.get(dead.kind, 0) + 1
        self.metrics.rejected.labels(reason=dead.kind).inc()
        self._dead.append(dead)
        if ack:
            self._done(stream, entry_id if isinstance(entry_id, bytes) else entry_id.encode())

    def _done(self, stream: str, entry: bytes, rows: int = 1) -> None:
        """An entry is done with (learned or dead-lettered): acknowledged at the next
        checkpoint; a label of a packed entry, once the entry's last label is; a default
        label's log entry, once its last default is (:meth:`DefaultLabels.done`: ``rows``
        of them)."""
        if stream == DEFAULTS:
            assert self.defaults is not None
            self.defaults.done(entry, rows)
            return
        if b"/" in entry:  # (stream entry ids and Kafka offsets have none)
            whole = self.open_entries.done(entry)
            if whole is None:
                return
            entry = whole
        self.source.done(stream, entry)

    # -- learning ----------------------------------------------------------------------
    def _learn_pending(self, force: bool) -> None:
        """Learn the pending rows (:meth:`Training.blocks`); each block's entries done with,
        its refused rows dead-lettered, and a version due after it published at once.

        Checkpointed only between blocks: a packed entry is never half learned at a
        checkpoint."""
        for block in self.training.blocks(force):
            for bad in block.refused:
                self._dead_letter(bad.stream, bad.entry, bad.fields, bad.reason, ack=False)
            defaults = corrected = 0
            for run in block.runs:
                # learned or refused, its rows are done with: the entry is acknowledged, and a
                # joined label's prediction taken, with the next checkpoint
                if run.stream == DEFAULTS:
                    defaults += run.rows
                elif run.late:
                    corrected += run.rows
                self._done(run.stream, run.entry, run.rows)
                if run.marks is not None:
                    marks = self._marks.setdefault(run.marks[0], [])
                    marks += run.marks[1]
                    if run.stream == DEFAULTS and self.join.late == "correct":
                        marks += self.join.defaulted(run.marks[1])  # (a late label's to take)
            if defaults:
                self.counters["defaults"] = self.counters.get("defaults", 0) + defaults
                self.metrics.defaults.inc(defaults)
            if corrected:
                self.metrics.corrected.inc(corrected)
            self._dirty = True
            self.metrics.samples.inc(block.learned)
            self.metrics.batches.inc(block.batches)
            for _ in range(block.batches):
                self.metrics.update_seconds.observe(block.seconds / block.batches)
            if block.due:
                self._checkpoint()  # a version is due: publish (if gated) right at this block

    # -- durability --------------------------------------------------------------------
    def _checkpoint(
        self, publish: bool = False, reason: str = "", final: bool = False, pin: bool = False
    ) -> None:
        """Write state, version (if due and gated), dead letters and acks in one MULTI.

        The replay buffer (10,000 rows by default, most of a checkpoint's bytes) goes
        with it at most once a checkpoint period, and at the ``final`` one: a learner
        publishing many versions a second does not write it with each of them. Replay is
        a sample of what was learned; one a period old changes no count and loses no row.
        ``pin``: the version is published pinned (``latest`` only; see :meth:`_initial_version`).

        A transaction refused whole (Redis out of memory, a lost connection) raises with the
        counters as they were: the version due is due again, under the same number. One
        that finds a consumer group or its own previous checkpoint gone is recovered from
        (:meth:`_recover`) before anything else is published.
        """
        c = self.counters
        before = c["next_version"], c["since_publish"], c["gate_rejections"]
        version = None
        gate_info: dict[str, float] = {}
        if publish:
            version = c["next_version"]
        elif c["since_publish"] >= self.spec.learning.publishEvery:
            ok, gate_info = self.training.gate()
            c["since_publish"] = 0
            if ok:
                version = c["next_version"]
            else:
                c["gate_rejections"] += 1
                self.metrics.gate_rejections.inc()
                log.info("gate rejected a version: %s", gate_info)
        if version is not None:
            c["next_version"] += 1
        try:
            self._write_checkpoint(version, reason, gate_info, final, pin)
        except BaseException:
            c["next_version"], c["since_publish"], c["gate_rejections"] = before
            raise
        if self._regroup or self._reset:
            self._recover()

    def _write_checkpoint(
        self, version: int | None, reason: str, gate_info: dict[str, float], final: bool,
        pin: bool,
    ) -> None:  # fmt: skip
        c = self.counters
        arrays = self.training.arrays()
        # the source's position is part of the state: it moves with what was learned
        state = {"counters": c, "revision": self.revision, "source": self.source.state()}
        if self.defaults is not None:  # (with the marks of the defaults learned)
            state["defaults"] = self.defaults.state()
        packed = self.open_entries.state()  # packed entries' labels done (restored ones too)
        if packed:
            state["packed"] = packed
        blob = self.store.sealing.seal(codec.encode(arrays, state), signing.CHECKPOINT)
        self._state_bytes = len(blob)  # (the learned state's size, in the status)
        checkpoint = self.keys.checkpoint(self.revision)
        pipe = transaction(self.r, self.keys.prefix)  # (on a cluster: the model's node)
        pipe.exists(checkpoint)  # (reply 0: gone since the last one - a store reset)
        at, held, baseline = -1, None, False
        if version is not None:
            meta = {"reason": reason or "publishEvery", "samples": c["samples"],
                    "learnedUntil": c["learned_until"], **gate_info}  # fmt: skip
            if reason == "initial" and self._warm_source:
                meta["warmStart"] = self._warm_source
            meta.update({f"quality_{k}": v for k, v in self.training.quality.report().items()})
            if pin:
                pipe.hset(self.keys.pointers(self.revision), mapping=Pointers.pinned_hash(True))
            # a snapshot given in the spec was proven offline; a copy of another
            # revision's latest version was not, and has to prove itself here
            baseline = (
                reason == "initial" and bool(self._warm_source) and not self.warm_start_revision
            )
            at = len(pipe)
            held = self.store.publish(
                self.revision,
                version,
                self.learner,
                meta,
                keep=self.spec.learning.keepVersions,
                pipe=pipe,
                baseline=baseline,
                # never into a store that lost the previous checkpoint: what this learner
                # holds goes back first (the served pointer, a pin)
                guard=checkpoint if self._checkpointed else None,
            )
        pipe.set(checkpoint, blob)
        replay = final or self.clock() - self._replay_saved >= self.checkpoint_seconds
        if replay:
            buffer = self.training.replay.get_state()
            saved = self.store.sealing.seal(codec.encode(buffer), signing.REPLAY)
            pipe.set(self.keys.replay(self.revision), saved)
        pipe.hset(self.keys.learner(self.revision), mapping=self.status())
        for d in self._dead:
            pipe.xadd(self.keys.deadletter, d.encode(), maxlen=100_000, approximate=True)
        self.source.commit(pipe)
        self.join.commit_slices(pipe, self._marks)
        # (a command's error is a reply: the rest of the transaction ran)
        replies = pipe.execute(raise_on_error=False)
        errors = [e for e in replies if isinstance(e, Exception)]
        gone = [e for e in errors if isinstance(e, redis.ResponseError) and group_gone(e)]
        if len(gone) < len(errors):
            raise next(e for e in errors if e not in gone)
        if gone:  # acknowledged into no group: made again where this learner read to
            self._regroup = True
        if self._checkpointed and not replies[0]:
            self._reset = True
        self._checkpointed = True
        self.source.committed()
        self.join.committed_slices(self._marks)
        self._marks = {}
        self._dead.clear()
        self._dirty = False
        self._last_checkpoint = self.clock()
        if self._oom:
            self._oom = False
            log.info("redis takes writes again: %s checkpointed", self.revision)
        if replay:
            self._replay_saved = self._last_checkpoint
        if version is None or held is None:
            return
        if replies[at] == -1:  # the store lost its keys: published after what is held is back
            c["next_version"] = version
            self._due = reason or "publishEvery"
            return
        self.held.published(version, self.learner.copy(), held, pin=pin, baseline=baseline)
        self.metrics.versions_published.inc()
        self.metrics.versions.set(version)
        log.info("published %s v%d after %d samples", self.revision, version, c["samples"])

    def _recover(self) -> None:
        """A consumer group gone, or the store's keys: the groups made again (see
        :meth:`tideline.pods.sources.RedisStreams.regroup`), and after a store reset what
        this learner holds put back, its checkpoint written from memory, and a version
        that was due published under its number."""
        if self._regroup:
            if isinstance(self.source, RedisStreams):
                self.source.regroup()
            if self._checkpointed and not self.r.exists(self.keys.checkpoint(self.revision)):
                self._reset = True
            self._regroup = False
        if not self._reset:
            return
        restored = self._restore_held()
        now = self.clock()
        self._notes["storeResetAt"] = f"{now:.3f}"
        self._notes["restored"] = ",".join(f"v{v}" for v in restored)
        p = self.held.pointers
        log.warning("the store lost %s's keys (restarted empty, flushed or evicting): put back "
                    "%s, and the pointers as last read (latest %s, served %s, lastGood %s, "
                    "pinned %s); the next version is v%d", self.revision,
                    self._notes["restored"] or "nothing missing", p.latest, p.served,
                    p.lastGood, p.pinned, self.counters["next_version"])  # fmt: skip
        self._replay_saved = -math.inf  # (its key went too)
        self._reset = False
        self._checkpointed = False  # (this one is the first in the store as it is now)
        due, self._due = self._due, None
        self._checkpoint(publish=due is not None, reason=due or "")

    def _restore_held(self) -> list[int]:
        """The versions held put back with the pointers naming them (as last read); the
        ones whose blob was missing."""
        if isinstance(self.source, RedisStreams):
            self.source.regroup()  # (gone with the rest)
        return [
            v
            for v, blob, meta, pointers in self.held.put_back()
            if self.store.restore(self.revision, v, blob, meta, pointers)
        ]

    def status(self) -> dict[str, str]:
        """What the learner reports in ``rev:{revision}:learner`` at every checkpoint: its
        counters, rolling quality and how far behind its source it is (``lag``: records,
        ``lagSeconds``: since the newest sample learned arrived); after a store reset,
        ``storeResetAt`` and the versions it put back (``restored``: ``v18,v20,v21``); when
        it started from its served version for want of a checkpoint, ``resumedFrom``; with a
        default label, the labels held for their predictions to be mature (``heldLabels``). And its
        memory (:meth:`measure_memory`): ``rssBytes``, ``memoryLimitBytes``, ``stateBytes``."""
        lag = self._lag
        newest = self.training.newest
        behind = max(0.0, self.clock() - newest) if newest else 0.0
        out = {
            **{k: str(v) for k, v in self.counters.items()},
            "quality": orjson.dumps(self.training.quality.report()).decode(),
            "updated": f"{self.clock():.3f}",
            "lagSeconds": f"{behind:.3f}",
            **self._notes,
        }
        if lag is not None:
            out[LearnerStatus.LAG] = str(lag)
        if self.defaults is not None:  # labels waiting for their predictions to be mature
            out["heldLabels"] = str(self.defaulting.maturing.held)
        use = self.measure_memory()
        if use is not None:
            out.update(use.to_hash())
        return out

    def measure_memory(self) -> MemoryUse | None:
        """Its resident set, its container's memory limit and the size of its last checkpoint
        (:mod:`tideline.memory`: a few small files read, at every checkpoint). A team's own
        learner can grow until its container is killed for want of memory; the operator's
        ``LearnerMemory`` condition says so before, and this log once an episode."""
        use = self.memory(self.revision, self._state_bytes)
        if use is None:
            return None
        self.metrics.resident_bytes.set(use.rss)
        self.metrics.memory_limit_bytes.set(use.limit or 0)
        if use.state is not None:
            self.metrics.state_bytes.set(use.state)
        near = use.near(self._near_limit)
        if near and not self._near_limit:
            log.warning("%s: raise spec.pods.learner.resources.limits.memory or bound the model, "
                        "or the container is killed for want of memory", use.summary())  # fmt: skip
        self._near_limit = near
        return use

    def measure_lag(self) -> int | None:
        """How far behind its source the learner is, in records (asked every
        ``MAINTAIN_SECONDS``: on Redis < 7 it reads the undelivered entries' ids)."""
        self._lag = self.source.lag()
        if self._lag is not None:
            self.metrics.lag_records.set(self._lag)
        return self._lag

    def _refresh_served(self, pointers: Pointers | None = None) -> None:
        """The served version, for the gate: loaded when it moves (a copy of the learner's own
        when it moved to a version this learner published lately: the usual case)."""
        ptr = pointers if pointers is not None else self.store.pointers(self.revision)
        self.held.read(ptr)
        v = ptr.served
        if v is None or v == self.held.served:
            return
        mine = self.held.serve(v)
        if mine is not None:
            self.training.served = mine
            return
        key = self.keys.version(self.revision, v)
        blob = self.r.get(key)
        if blob is None:
            log.warning("served version %s of %s is gone", v, self.revision)
            return
        try:
            self.training.served, header = open_version(self.store.sealing, blob, key)
        except ForgedBlob:  # (logged and counted once): the gate keeps the one it had
            return
        self.held.loaded(v, (blob, {k: x for k, x in header.items() if k != "model"}))

    def _control(self, raw: dict[bytes, bytes] | None = None) -> None:
        """Operator commands (:class:`LearnerControl`): pause/resume learning, adapt to concept
        drift, reset to a version; a request it cannot read is dropped, with a warning."""
        key = self.keys.control(self.revision)
        ctl = LearnerControl.from_hash(self.r.hgetall(key) if raw is None else raw)
        self.paused = ctl.paused
        if ctl.unreadable:
            log.warning("%s: the operator's %s not readable, dropped", self.revision,
                        " and ".join(ctl.unreadable))  # fmt: skip
            self.r.hdel(key, *ctl.unreadable)
        if ctl.adapt is not None:
            self._adapt()
        if ctl.reset_to is None:
            return
        try:
            base, _ = self.store.load(self.revision, ctl.reset_to)
        except (StoreError, ValueError):  # (ForgedBlob is one: never loaded)
            log.warning("cannot reset %s to version %d", self.revision, ctl.reset_to)
        else:
            self._learn_pending(force=True)
            self.training.reset_to(base.get_state())
            log.info("reset %s to version %d", self.revision, ctl.reset_to)
        self.r.hdel(key, LearnerControl.RESET_TO)
        self._dirty = True

    def _adapt(self) -> None:
        """Concept drift: the replay buffer goes and past confidence is softened (``ADAPT_KEEP``),
        so the next updates move the model as much as a young one's would."""
        self._learn_pending(force=True)
        self.training.adapt(ADAPT_KEEP)
        self._replay_saved = -math.inf  # (saved at the next checkpoint: the old one is gone)
        log.info("adapting %s to concept drift: replay cleared, confidence kept at %.0f %%",
                 self.revision, ADAPT_KEEP * 100)  # fmt: skip
        self.r.hdel(self.keys.control(self.revision), LearnerControl.ADAPT)
        self._dirty = True

    # -- loop --------------------------------------------------------------------------
    def step(self, block_ms: int | None = None) -> None:
        """One turn: read, learn what is due, checkpoint (and maybe publish) when due.

        A reply that says a consumer group is gone (``NOGROUP``, anywhere in the turn)
        makes the groups again and, when the store lost more, puts back what the learner
        holds (:meth:`_recover`); a recovery cut short is taken up at the next turn.
        """
        if self._regroup or self._reset:
            self._recover()
        try:
            self._turn(block_ms)
        except redis.ResponseError as e:
            if not group_gone(e):
                raise
            log.warning("a consumer group of %s is gone (%s): made again", self.revision, e)
            self._regroup = True
            self._recover()

    def _turn(self, block_ms: int | None) -> None:
        ls = self.spec.learning
        if block_ms is None:
            block_ms = max(1, int(ls.maxBatchDelay * 1000))
        pipe = self.r.pipeline(transaction=False)  # (one round trip: both of the model's slot)
        pipe.hgetall(self.keys.control(self.revision))
        pipe.hgetall(self.keys.pointers(self.revision))
        ctl, pointers = pipe.execute()
        self._control(ctl)
        if self.paused:
            time.sleep(block_ms / 1000)
            return
        self._read(block_ms)
        due = bool(self.training.pending) and self.training.waited() >= ls.maxBatchDelay
        self._learn_pending(force=due)
        self._refresh_served(Pointers.from_hash(pointers))
        if (
            self._dirty or self._dead
        ) and self.clock() - self._last_checkpoint >= self.checkpoint_seconds:
            self._checkpoint()
        if self.clock() - self._last_maintain >= MAINTAIN_SECONDS:
            self._last_maintain = self.clock()
            self.source.maintain()
            self.measure_lag()
        self.metrics.pending.set(len(self.training.pending) + self.join.waiting)
        if self.training.newest:
            self.metrics.lag_seconds.set(max(0.0, self.clock() - self.training.newest))
        self.metrics.join_waiting.set(self.join.waiting)

    def flush(self) -> None:
        """Learn whatever is buffered and checkpoint now (used on a clean stop)."""
        self._learn_pending(force=True)
        if self._dirty or self._dead:
            self._checkpoint(final=True)

    def run(self, stop: threading.Event | None = None) -> bool:
        """Turns until ``stop`` is set, then a last checkpoint; True then.

        A turn that fails is retried after a backoff (0.1 s doubling up to 5 s): a lost
        connection, Redis refusing writes for want of memory (logged once an episode, with
        its ``maxmemory``; learning goes on in memory, and nothing is acknowledged until a
        checkpoint lands, so waiting loses nothing), or anything else (logged with its
        traceback). The :class:`Liveness` hears of every turn; after ``max_failures`` failed
        in a row this returns False: the process is to exit non-zero, not fail quietly.
        """
        stop = stop or threading.Event()
        backoff = BACKOFF_MIN
        alive = True
        while not stop.is_set():
            try:
                self.step()
            except Exception as e:
                self._failed_turn(e, backoff)
                if self.liveness.failed(e):
                    log.error("%d turns of %s failed in a row (the last: %s): the learner exits",
                              self.liveness.failures, self.revision, e)  # fmt: skip
                    alive = False
                    break
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            else:
                self.liveness.beat()
                backoff = BACKOFF_MIN
        try:
            self.flush()
        except redis.RedisError as e:
            log.warning("no checkpoint at stop (%s): unacknowledged entries are read again "
                        "at the next start", e)  # fmt: skip
        finally:
            self.source.close()
        return alive

    def _failed_turn(self, e: Exception, backoff: float) -> None:
        if isinstance(e, (redis.ConnectionError, redis.TimeoutError)):
            log.warning("redis unavailable (%s); retrying in %.1fs", e, backoff)
        elif isinstance(e, redis.ResponseError) and out_of_memory(e):
            if not self._oom:  # once an episode: until a checkpoint lands
                self._oom = True
                log.warning("redis refuses writes: out of memory (%s); %s learns on in memory "
                            "and checkpoints when it can, nothing acknowledged until then",
                            self._memory(), self.revision)  # fmt: skip
        else:
            log.exception("a turn of %s failed; retrying in %.1fs", self.revision, backoff)

    def _memory(self) -> str:
        """Redis's memory limit and use, as ``INFO memory`` tells them (a read: not refused)."""
        try:
            info = node_info(self.r, self.keys.prefix, "memory")
        except redis.RedisError:
            return "maxmemory unknown"
        return (f"maxmemory {info.get('maxmemory_human', '?')}, policy "
                f"{info.get('maxmemory_policy', '?')}, used {info.get('used_memory_human', '?')}")  # fmt: skip


def _default_run(j: Joined) -> Run:
    """A request's defaults as one run: learned together, acknowledged together."""
    return Run(DEFAULTS, j.feedback_ids[0].encode(), len(j), marks=(j.slice, j.keys))


def out_of_memory(e: redis.ResponseError) -> bool:
    """Whether Redis refused a command for want of memory (``OOM``: ``maxmemory`` reached
    under ``noeviction``; inside MULTI the transaction is refused whole, EXECABORT, and
    nothing of it applied; inside a script, the script's error names it)."""
    return isinstance(e, redis.exceptions.OutOfMemoryError) or "OOM command not allowed" in str(e)
