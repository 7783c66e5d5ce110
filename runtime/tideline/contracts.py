"""What crosses a process boundary, typed: Redis keys, the pointers hash, stream payloads.

The servers, the learner, the monitor and the operator run apart and meet
in Redis (or Kafka). Each shape they share is declared here once, with its
reading and writing next to it, and nothing here does I/O (an import-linter
contract keeps it so):

* :class:`Keys`: every Redis key of a model and of its revisions, as
  functions (no string assembly elsewhere);
* :class:`Pointers`: a revision's pointers hash (``latest``, ``served``,
  ``lastGood``, ``pinned``);
* :class:`Routing`: the model's routing hash (the stable and canary revisions, the
  canary's weight, shadow, the canary's URL), and the rule that splits by it;
* :class:`LearnerControl` and :class:`StartWord`: a revision's control hash, the
  operator's requests to its learner;
* :class:`Feedback`: a label on the feedback stream (or topic), alone in its
  entry (``{"id", "label"}``) or packed (``{"feedback": [{"id", "label"}, ...]}``,
  the body ``/feedback`` takes, up to ``MAX_PACKED_LABELS``);
* the prediction log's entries are :mod:`tideline.predlog`'s, the samples
  stream's payloads :mod:`tideline.samples`'s;
* :class:`DeadLetter`: an entry the learner could not learn from, and why (the
  ``deadletter`` stream);
* :class:`ModelFault`: a component (learner, server, monitor) that could not load its
  revision's model, a team's own class that does not import, lacks a method or refuses
  its params (field ``component`` of ``Keys.faults(revision)``; the operator's
  ``ModelLoaded`` condition);
* between the image and the pods that run it: the user it runs as
  (``IMAGE_UID``, ``IMAGE_GID``).

>>> p = Pointers.from_hash({b"latest": b"7", b"served": b"6", b"pinned": b"1"})
>>> p.latest, p.served, p.lastGood, p.pinned
(7, 6, None, True)
>>> decode_feedback(b'{"id": 42, "label": 1}')
Feedback(id='42', label=1.0, ts=None)
>>> decode_feedback(b'{"id": "p-1", "label": "cat"}')  # (a class name: the task's to check)
Feedback(id='p-1', label='cat', ts=None)
>>> decode_feedback(b'{"id": "p-1", "label": null}')
Traceback (most recent call last):
...
ValueError: 'label' must be a number or a class name (got NoneType)
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

MAX_ID_LENGTH = 256
MAX_PACKED_LABELS = 10_000  # labels in one feedback entry (the server's request limit)


@dataclass(frozen=True)
class Keys:
    """Every Redis key of one model; revision-scoped keys take the revision.

    Every key of a model carries one hash tag, ``{namespace/model}``, so a Redis
    Cluster keeps them in one slot: the transaction that acknowledges stream
    entries with the checkpoint, and the script that publishes a version, touch
    several keys at once (across slots a cluster refuses them with CROSSSLOT).
    """

    namespace: str
    model: str

    @property
    def prefix(self) -> str:
        return f"tideline:{{{self.namespace}/{self.model}}}"

    @property
    def legacy_prefix(self) -> str:
        """The prefix before hash tags (``tideline:{ns}:{model}``): see :func:`migrate_keys`."""
        return f"tideline:{self.namespace}:{self.model}"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def samples(self) -> str:
        return f"{self.prefix}:samples"

    @property
    def feedback(self) -> str:
        return f"{self.prefix}:feedback"

    def log(self, instance: str) -> str:
        """Stream: one server process's prediction log (see :mod:`tideline.predlog`)."""
        return f"{self.prefix}:log:{instance}"

    @property
    def logs(self) -> str:
        """Sorted set: the server processes that write a prediction log -> their last write."""
        return f"{self.prefix}:logs"

    def log_ids(self, bucket: int) -> str:
        """Hash: the clients' own prediction ids of one bucket of time -> where their rows are."""
        return f"{self.prefix}:log-ids:{bucket}"

    def log_claim(self, pred_id: str) -> str:
        """String: a client's own prediction id, held for the log's window by the request it
        was bound to (see :data:`tideline.predlog.BIND`)."""
        return f"{self.prefix}:log-claim:{pred_id}"

    def cursors(self, reader: str) -> str:
        """Hash: server process -> the next entry of its prediction log a reader that gives
        default labels (the monitor) reads (see :mod:`tideline.pods.defaults`)."""
        return f"{self.prefix}:cursors:{reader}"

    def taken(self, reader: str, part: str) -> str:
        """Set: the predictions (of one slice of time) a reader joined a label with."""
        return f"{self.prefix}:taken:{reader}:{part}"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}:deadletter"

    @property
    def history(self) -> str:
        """Stream: the joined samples of the last ``spec.learning.history``
        (:mod:`tideline.pods.history`)."""
        return f"{self.prefix}:history"

    @property
    def routing(self) -> str:
        """Hash written by the operator, read by the servers: :class:`Routing`."""
        return f"{self.prefix}:routing"

    @property
    def servers(self) -> str:
        """Hash: one field per server instance, its per-track counters and latencies."""
        return f"{self.prefix}:servers"

    @property
    def health(self) -> str:
        """The monitor's health summary (JSON), rewritten every analysis interval."""
        return f"{self.prefix}:health"

    @property
    def driftlog(self) -> str:
        """Stream of drift events (concept, features, predictions) for later analysis."""
        return f"{self.prefix}:driftlog"

    @property
    def forward_token(self) -> str:
        """A random token the model's servers share: a forwarded request carries it."""
        return f"{self.prefix}:forward-token"

    @property
    def epoch(self) -> str:
        """String: a token the operator writes once (``SET NX``) and keeps in the status; when
        it is gone the store lost keys (restarted empty, flushed, evicted): a store reset."""
        return f"{self.prefix}:epoch"

    @property
    def restores(self) -> str:
        """String: a count the restore script raises each time a process puts back what the
        store lost (a version, a pointer): the operator reads it, so a loss repaired before it
        looked (an evicted pointers hash that a server put back within a second) is still a
        store reset it reports."""
        return f"{self.prefix}:restores"

    @property
    def retired(self) -> str:
        """Sorted set: revisions the operator removed -> when; their keys go after a grace."""
        return f"{self.prefix}:retired"

    # -- a revision's keys ------------------------------------------------------------
    def _rev(self, revision: str, name: str) -> str:
        return f"{self.prefix}:rev:{revision}:{name}"

    def rev_prefix(self, revision: str) -> str:
        """What every key of a revision starts with (the operator forgets them all at once)."""
        return f"{self.prefix}:rev:{revision}:"

    def pointers(self, revision: str) -> str:
        """Hash: the revision's pointers (:class:`Pointers`)."""
        return self._rev(revision, "pointers")

    def versions(self, revision: str) -> str:
        """Sorted set: the versions stored, by number."""
        return self._rev(revision, "versions")

    def vmeta(self, revision: str) -> str:
        """Hash: version -> what the learner said of it when it published it (JSON)."""
        return self._rev(revision, "vmeta")

    def checkpoint(self, revision: str) -> str:
        """The learner's checkpoint: the model and what it had read (:mod:`tideline.codec`)."""
        return self._rev(revision, "checkpoint")

    def replay(self, revision: str) -> str:
        """The learner's replay buffer (:mod:`tideline.codec`), saved with a checkpoint at most
        once a checkpoint period (its samples need not be the checkpoint's to the row)."""
        return self._rev(revision, "replay")

    def learner(self, revision: str) -> str:
        """Hash: the learner's status (samples, batches, lag, ...), every checkpoint."""
        return self._rev(revision, "learner")

    def control(self, revision: str) -> str:
        """Hash: the operator's requests to the learner (:class:`LearnerControl`,
        :class:`StartWord`)."""
        return self._rev(revision, "control")

    def reference(self, revision: str) -> str:
        """The drift reference: the feature statistics the monitor compares traffic with."""
        return self._rev(revision, "reference")

    def faults(self, revision: str) -> str:
        """Hash: component (``learner``, ``server``, ``monitor``) -> the :class:`ModelFault`
        it reported when it could not load the revision's model; the field goes when that
        component loads it again (and the hash with the revision's keys)."""
        return self._rev(revision, "faults")

    def kafka_starts(self, revision: str) -> str:
        """Hash: per Kafka partition, where the learner resumed and how often in a row."""
        return self._rev(revision, "kafka-starts")

    def version(self, revision: str, version: int) -> str:
        return f"{self.version_prefix(revision)}{version}"

    def version_prefix(self, revision: str) -> str:
        return f"{self.rev_prefix(revision)}v:"

    def learner_group(self, revision: str) -> str:
        return f"learner-{revision}"


@dataclass(frozen=True)
class Pointers:
    """A revision's pointers (see :mod:`tideline.store`): versions by role, and whether a
    rollback pinned ``served`` (publishing then moves ``latest`` only).

    Beside ``pinned`` the operator writes the pin's details (``pinFrom``, ``pinTo``, ``pinAt``,
    ``pinReason``, ``pinLatest``: its ``lastRollback``), before the pin itself: an operator
    that crashed after the rollback, before writing its status, reads them back and unpins as
    the first one would (issue 30). They mean something only while ``pinned`` is set.

    >>> Pointers.from_hash({b"served": b"4", b"pinned": b"1", **Pointers.pin_hash(
    ...     from_=9, to=4, at=120.5, reason="lastGood v4 beats served v9", latest=9)}).pinFrom
    9
    """

    latest: int | None = None
    served: int | None = None
    lastGood: int | None = None  # noqa: N815 - the hash field's name
    pinned: bool = False
    pinFrom: int | None = None  # noqa: N815 - the hash fields' names
    pinTo: int | None = None  # noqa: N815
    pinAt: float | None = None  # noqa: N815
    pinReason: str = ""  # noqa: N815
    pinLatest: int | None = None  # noqa: N815

    NAMES = ("latest", "served", "lastGood")
    PIN_VERSIONS = ("pinFrom", "pinTo", "pinLatest")
    PINNED = "pinned"  # its field, "1" or "0" (the store's Lua reads "1" too)

    @classmethod
    def pinned_hash(cls, pin: bool) -> dict[str, str]:
        """``pinned`` as the hash holds it.

        >>> Pointers.pinned_hash(True), Pointers.from_hash({b"pinned": b"0"}).pinned
        ({'pinned': '1'}, False)
        """
        return {cls.PINNED: "1" if pin else "0"}

    @classmethod
    def from_hash(cls, raw: Mapping[bytes, bytes]) -> Pointers:
        """From the hash as Redis returns it (a field that is not a number is ignored)."""
        out: dict[str, Any] = {}
        for k, v in raw.items():
            name = k.decode()
            if name == cls.PINNED:
                out["pinned"] = v == b"1"
            elif name in cls.NAMES + cls.PIN_VERSIONS and v.isdigit():
                out[name] = int(v)
            elif name == "pinReason":
                out[name] = v.decode(errors="replace")
            elif name == "pinAt":
                with contextlib.suppress(ValueError):
                    out[name] = float(v)
        return cls(**out)

    @staticmethod
    def pin_hash(
        *, from_: int | None, to: int, at: float, reason: str, latest: int | None
    ) -> dict[bytes, bytes]:
        """The pin's details as the hash holds them (an unknown version is left out)."""
        out = {b"pinTo": b"%d" % to, b"pinAt": repr(float(at)).encode(),
               b"pinReason": reason.encode()}  # fmt: skip
        if from_ is not None:
            out[b"pinFrom"] = b"%d" % from_
        if latest is not None:
            out[b"pinLatest"] = b"%d" % latest
        return out

    def get(self, name: str) -> int | None:
        """The version a pointer names (``KeyError`` for a name that is no pointer)."""
        if name not in self.NAMES:
            raise KeyError(name)
        value: int | None = getattr(self, name)
        return value


class LearnerStatus:
    """The fields of the learner's status hash (:meth:`Keys.learner`) another process reads
    (the rest are for people: ``kubectl``, the dashboard)."""

    LAG = "lag"  # records behind its source, as last measured
    BACKTEST = "backtest"  # a new revision's catch-up on history and its backtest (Backtest)

    @staticmethod
    def lag_of(raw: bytes | None) -> int | None:
        """The lag as the operator reads it (None: not measured, or not a count).

        >>> LearnerStatus.lag_of(b"12"), LearnerStatus.lag_of(b"-1"), LearnerStatus.lag_of(None)
        (12, None, None)
        """
        return int(raw) if raw is not None and raw.isdigit() else None


@dataclass(frozen=True)
class DeadLetter:
    """An entry the learner could not learn from, and why: one entry of :attr:`Keys.deadletter`
    (written by the learner with its checkpoint, read by ``kubectl tideline deadletters``).

    ``stream``: where the entry came from (a Redis stream, a Kafka topic, the default
    labels); ``entry``: its id there; ``reason``: ``"<kind>: <detail>"`` or ``"invalid"``
    and a detail (``kind`` is the learner's ``rejected`` counter's label); ``fields``: the
    entry's fields as text; ``at``: when it was dead-lettered (the stream entry id's
    milliseconds; 0 for one not read from the stream).

    >>> d = DeadLetter("tideline:{ns/m}:feedback", "5-0", "unmatched: no prediction p-1",
    ...                {"id": "p-1"})
    >>> DeadLetter.decode(b"1700000000123-0", d.encode()) == DeadLetter(
    ...     d.stream, d.entry, d.reason, d.fields, at=1700000000.123)
    True
    >>> d.kind, DeadLetter("s", "1-0", "invalid label 'x'", {}).kind
    ('unmatched', 'invalid')
    """

    stream: str
    entry: str
    reason: str
    fields: dict[str, str]
    at: float = 0.0

    @property
    def kind(self) -> str:
        return "invalid" if self.reason.startswith("invalid") else self.reason.split(":", 1)[0]

    def encode(self) -> dict[str, bytes | str]:
        """The fields of its stream entry (``fields``: one JSON object)."""
        return {"stream": self.stream, "entry": self.entry, "reason": self.reason,
                "fields": orjson.dumps(self.fields)}  # fmt: skip

    @classmethod
    def decode(cls, entry_id: bytes | str, raw: Mapping[Any, Any]) -> DeadLetter:
        """A stream entry as :meth:`encode` wrote it (bytes as Redis returns them, or text);
        a field missing or not JSON reads as empty (an entry of an older writer is still
        shown)."""
        got = {text(k): text(v) for k, v in raw.items()}
        try:
            fields = orjson.loads(got.get("fields") or "{}")
        except orjson.JSONDecodeError:
            fields = {"fields": got["fields"]}
        if not isinstance(fields, dict):
            fields = {"fields": str(fields)}
        eid = text(entry_id)
        ms = eid.split("-", 1)[0]
        return cls(
            got.get("stream", ""), got.get("entry", ""), got.get("reason", ""),
            {str(k): v if isinstance(v, str) else orjson.dumps(v).decode()
             for k, v in fields.items()},
            at=int(ms) / 1000 if ms.isdigit() else 0.0,
        )  # fmt: skip


def text(value: bytes | str) -> str:
    """A value Redis gave as bytes or as a string (a client's ``decode_responses``), a string."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Backtest(msgspec.Struct, omit_defaults=True):
    """A new revision's learner catching up on labelled history (``spec.learning.history``)
    and, on its last ``window`` seconds, its prequential predictions against those the
    stable revision served for the same samples: the paired differences of
    :mod:`tideline.evidence` (the candidate's quality minus stable's), which the operator
    judges as it judges a live canary.

    >>> b = Backtest(done=True, read=10, total=10, rows=100, samples=60, difference=-0.05,
    ...              lower=-0.09, upper=-0.01)
    >>> Backtest.decode(b.encode()) == b, Backtest.decode(b"no"), Backtest.decode(None)
    (True, None, None)
    """

    done: bool = False  # the whole history is learned and compared
    read: int = 0  # history entries read so far
    total: int = 0  # of the entries the history held when the catch-up began
    rows: int = 0  # rows learned from them
    rate: float = 0.0  # rows learned a second
    window: float = 0.0  # seconds of history compared
    samples: int = 0  # paired samples compared (the window's, with a stable score each)
    difference: float = 0.0
    lower: float = -1.0
    upper: float = 1.0

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    @staticmethod
    def decode(raw: bytes | str | None) -> Backtest | None:
        """The learner status field as the operator reads it (None: none, or not readable)."""
        if raw is None:
            return None
        try:
            return msgspec.json.decode(raw, type=Backtest)
        except msgspec.DecodeError:
            return None


def route_hash(key: str) -> int:
    """A stable hash of a routing key in [0, 10000): the same on every replica, and in
    every release (servers of two releases meet during an upgrade, and a key keeps its track).

    >>> route_hash("user-42") == route_hash("user-42"), 0 <= route_hash("x") < 10000
    (True, True)
    """
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % 10_000


@dataclass(frozen=True)
class Routing:
    """How a model's servers split its traffic: the hash :attr:`Keys.routing`, written by the
    operator (:meth:`to_hash`, rewritten when it differs from what it wants) and read by every
    server (:meth:`from_hash`); the monitor and the operator read ``stable`` from it.

    ``weight`` is the canary's percent of traffic, split by :meth:`to_canary`; with ``shadow``
    the canary also answers, unseen, what the stable answers; ``canary_url`` is set when the
    canary runs another image (the stable servers forward its share there). On the wire: the
    weight in decimal, shadow ``"1"`` or ``"0"``, no canary and no URL as empty strings. A
    field missing, empty or not readable (not a number, not UTF-8) reads as its default (a
    weight past 0-100 as the nearest bound); no hash at all is everything to
    ``default_stable``.

    >>> Routing.from_hash(Routing("a", "b", 30, canary_url="http://b").to_hash(), "x")
    Routing(stable='a', canary='b', weight=30, shadow=False, canary_url='http://b')
    >>> Routing.from_hash({b"weight": b"lots", b"shadow": b"yes"}, "x")
    Routing(stable='x', canary=None, weight=0, shadow=False, canary_url=None)
    """

    stable: str
    canary: str | None = None
    weight: int = 0  # percent of traffic to the canary
    shadow: bool = False
    canary_url: str | None = None  # set when the canary runs another image

    FIELDS = ("stable", "canary", "weight", "shadow", "canaryURL")  # on the wire, as written

    def to_canary(self, key: str | None, rng: random.Random) -> bool:
        """Whether a request (or a row) with this routing key goes to the canary: by the
        key's hash, the same on every replica; without a key, at random, by the weight.
        One rule for the canaries answered here and those forwarded to another image."""
        threshold = self.weight * 100  # of 10,000
        if key is not None:
            return route_hash(key) < threshold
        return rng.random() * 10_000 < threshold

    @classmethod
    def from_hash(cls, raw: Mapping[bytes, bytes], default_stable: str) -> Routing:
        """From the hash as Redis returns it (none yet: all to ``default_stable``)."""
        if not raw:
            return cls(stable=default_stable)
        get: dict[str, str] = {}
        for k, v in raw.items():
            with contextlib.suppress(UnicodeDecodeError):  # (not text: as if missing)
                get[k.decode()] = v.decode()
        try:
            weight = min(max(int(get.get("weight", "0")), 0), 100)
        except ValueError:
            weight = 0
        return cls(
            stable=get.get("stable") or default_stable,
            canary=get.get("canary") or None,
            weight=weight,
            shadow=get.get("shadow") == "1",
            canary_url=get.get("canaryURL") or None,
        )

    def to_hash(self) -> dict[bytes, bytes]:
        """Every field, as the hash holds it (the operator writes them all at once)."""
        return {
            b"stable": self.stable.encode(),
            b"canary": (self.canary or "").encode(),
            b"weight": b"%d" % self.weight,
            b"shadow": b"1" if self.shadow else b"0",
            b"canaryURL": (self.canary_url or "").encode(),
        }


# The environment variable that makes a learner with no checkpoint and no stored version wait
# for the operator's StartWord before it publishes a v0 (the operator's learner Deployments set
# it; a learner run by hand starts at once, as before).
AWAIT_START_ENV = "TIDELINE_AWAIT_START"

# A warm start from object storage (spec.model.warmStart.storageUri, tideline.pods.storage):
# the keys of its secretRef Secret, each the learner's env of that name (KServe's names), and
# the env naming the caBundle file the operator mounts - for the warm start's server alone,
# not SSL_CERT_FILE, which the learner's Redis and Kafka clients read too.
WARM_START_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
WARM_START_CA_ENV = "TIDELINE_WARM_START_CA"

# The user and group the runtime image runs as (the Dockerfile's `USER 65532:65532`). The
# operator's model pods and the chart's operator pod (values podSecurityContext) run as
# them, so a pod's processes are the image's user: they read what the image holds and own
# what they write (/tmp, an emptyDir, the only writable path under a read-only root).
IMAGE_UID = 65532
IMAGE_GID = 65532


@dataclass(frozen=True)
class StartWord:
    """The operator's word to a learner that finds neither a checkpoint nor a stored version
    (field ``start`` of ``rev:{revision}:control``).

    ``after`` is None for a revision the operator never saw a version of (a first deploy:
    publish v0 as ever). After a store reset it is the newest version the operator's status
    recorded: the learner numbers on from there (``after + 1``), never back to v0, and does
    not make a cold model the served one.

    >>> StartWord.decode(StartWord(after=20).encode()), StartWord.decode(b"fresh")
    (StartWord(after=20), StartWord(after=None))
    >>> StartWord.decode(None) is None, StartWord.decode(b"after:x") is None
    (True, True)
    """

    after: int | None = None

    FIELD = "start"

    def encode(self) -> str:
        return "fresh" if self.after is None else f"after:{self.after}"

    @classmethod
    def decode(cls, raw: bytes | str | None) -> StartWord | None:
        """The word as the control hash holds it; None when there is none, or not one."""
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else raw
        if text == "fresh":
            return cls()
        kind, _, n = text.partition(":")
        if kind == "after" and n.isascii() and n.isdigit():
            return cls(after=int(n))
        return None


@dataclass(frozen=True)
class LearnerControl:
    """The operator's requests to a revision's learner, in its control hash
    (:meth:`Keys.control`, beside the :class:`StartWord`): go back to a version (``resetTo``,
    the version's number), adapt to concept drift (``adapt``, the time of the drift it
    adapts for: a float's ``repr``), stop or resume learning (``paused``, ``"1"`` or ``"0"``).

    The operator writes the field of one request at a time (:meth:`reset_hash`,
    :meth:`adapt_hash`, :meth:`paused_hash`), never the whole hash, so the other fields stay;
    the learner deletes ``resetTo`` (:data:`RESET_TO`) and ``adapt`` (:data:`ADAPT`) once it
    acted on them, and ``paused`` holds until the operator writes it again. A ``paused``
    other than ``"1"`` is not paused; a ``resetTo`` that is not a version, or an ``adapt``
    that is not a time, is no request: named in ``unreadable``, for the learner to drop.

    >>> LearnerControl.from_hash({**LearnerControl.reset_hash(4), b"paused": b"1"})
    LearnerControl(reset_to=4, adapt=None, paused=True, unreadable=())
    >>> LearnerControl.from_hash({b"resetTo": b"v4", b"adapt": b"soon", b"paused": b"yes"})
    LearnerControl(reset_to=None, adapt=None, paused=False, unreadable=('resetTo', 'adapt'))
    """

    reset_to: int | None = None
    adapt: float | None = None
    paused: bool = False
    unreadable: tuple[str, ...] = ()  # the requests present but not readable

    RESET_TO = "resetTo"
    ADAPT = "adapt"
    PAUSED = "paused"

    @classmethod
    def from_hash(cls, raw: Mapping[bytes, bytes]) -> LearnerControl:
        """From the hash as Redis returns it (other fields, the StartWord's, are not ours)."""
        reset = raw.get(cls.RESET_TO.encode())
        adapt = raw.get(cls.ADAPT.encode())
        reset_to = int(reset) if reset is not None and reset.isdigit() else None
        at = None
        if adapt is not None:
            with contextlib.suppress(ValueError):
                at = float(adapt)
        unreadable = []
        if reset is not None and reset_to is None:
            unreadable.append(cls.RESET_TO)
        if adapt is not None and at is None:
            unreadable.append(cls.ADAPT)
        paused = raw.get(cls.PAUSED.encode()) == b"1"
        return cls(reset_to=reset_to, adapt=at, paused=paused, unreadable=tuple(unreadable))

    @classmethod
    def reset_hash(cls, to: int) -> dict[bytes, bytes]:
        """The request to go back to version ``to`` (a rollback)."""
        return {cls.RESET_TO.encode(): b"%d" % to}

    @classmethod
    def adapt_hash(cls, at: float) -> dict[bytes, bytes]:
        """The request to adapt to the concept drift detected at ``at``."""
        return {cls.ADAPT.encode(): repr(float(at)).encode()}

    @classmethod
    def paused_hash(cls, paused: bool) -> dict[bytes, bytes]:
        """Learning stopped (True) or resumed."""
        return {cls.PAUSED.encode(): b"1" if paused else b"0"}


COMPONENTS = ("learner", "server", "monitor")  # the processes of a model's pods, in this order
MAX_FAULT_MESSAGE = 1000  # characters of an error's last line kept (a condition, an Event)


class ModelFault(msgspec.Struct, frozen=True):
    """A component that could not load its revision's model: the field ``component`` of
    :meth:`Keys.faults` (JSON), written by the component as it stops (or, for a version a
    running server cannot load, as it keeps serving what it holds), deleted when it loads
    the model again. ``reason``: ``ImportFailed``, ``MissingMethod`` or ``BadParams``
    (:class:`tideline.algorithms.external.ModelLoadError`), or ``WarmStartFailed`` (a
    learner's warm start, :mod:`tideline.pods.storage`); ``message``: the error's last
    line; ``at``: when it was first reported (a crash loop reporting the same fault again
    keeps it).

    >>> f = ModelFault("ImportFailed", "ModuleNotFoundError: No module named 'teams'",
    ...                "learner", "5f3a", 120.0)
    >>> ModelFault.decode(f.encode()) == f, f.summary()
    (True, "learner of revision 5f3a: ModuleNotFoundError: No module named 'teams'")
    >>> ModelFault.decode(b"{}") is None
    True
    """

    reason: str
    message: str
    component: str
    revision: str
    at: float = 0.0

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def decode(cls, raw: bytes | str | None) -> ModelFault | None:
        """A fault as the hash holds it; None when it is not one (the reader skips it)."""
        if raw is None:
            return None
        try:
            return _fault.decode(raw)
        except msgspec.DecodeError:
            return None

    @classmethod
    def of_hash(cls, raw: Mapping[bytes, bytes]) -> list[ModelFault]:
        """The faults of a :meth:`Keys.faults` hash, components in :data:`COMPONENTS` order."""
        faults = [f for f in map(cls.decode, raw.values()) if f is not None]
        return sorted(faults, key=lambda f: (_order(f.component), f.component))

    def same(self, other: ModelFault) -> bool:
        """The same fault, whenever it was reported."""
        return (self.revision, self.component, self.reason, self.message) == (
            other.revision, other.component, other.reason, other.message
        )  # fmt: skip

    def summary(self) -> str:
        return f"{self.component} of revision {self.revision}: {self.message}"


def _order(component: str) -> int:
    return COMPONENTS.index(component) if component in COMPONENTS else len(COMPONENTS)


_fault = msgspec.json.Decoder(ModelFault)


class Feedback(msgspec.Struct, frozen=True):
    """A label on the feedback stream: ``{"id": <prediction id>, "label": <number>}`` (a
    multiclass model's: a class name, see :class:`tideline.tasks.Task`), and ``ts``, when the
    server took it (seconds; producers may leave it out)."""

    id: str
    label: float | str
    ts: float | None = None

    def encode(self) -> bytes:
        return orjson.dumps({"id": self.id, "label": self.label, "ts": self.ts})


class _Wire(msgspec.Struct):
    id: str | int
    label: float | str
    ts: float | None = None


class _Packed(msgspec.Struct):
    feedback: list[_Wire]


_feedback = msgspec.json.Decoder(_Wire)
_packed = msgspec.json.Decoder(_Packed)


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


def decode_feedback(data: bytes | None) -> Feedback:
    """A feedback payload of one label; ``ValueError`` naming what is wrong (the label's
    range is the task's to check)."""
    if data is None:
        raise ValueError("entry has no 'data' field")
    try:  # typed, in one pass (the usual case)
        w = _feedback.decode(data)
        return Feedback(prediction_id(w.id), w.label, w.ts)
    except msgspec.DecodeError:
        pass
    return _checked(json_object(data))


# a label of a packed entry, or why it cannot be one (and the item as it came)
Item = Feedback | tuple[str, Any]


def decode_feedback_entry(data: bytes | None) -> list[Item] | None:
    """The labels of a packed feedback entry (``{"feedback": [...]}``), each a
    :class:`Feedback` or ``(why not, the item)``; None for an entry of one label (read it
    with :func:`decode_feedback`). ``ValueError`` when the entry as a whole is wrong.

    >>> decode_feedback_entry(b'{"feedback": [{"id": "a", "label": 1}, {"id": "b"}]}')
    [Feedback(id='a', label=1.0, ts=None), ("'data' has no 'label'", {'id': 'b'})]
    >>> decode_feedback_entry(b'{"id": "a", "label": 1}') is None
    True
    """
    if data is None or b'"feedback"' not in data:
        return None
    try:
        ws = _packed.decode(data).feedback
        if 0 < len(ws) <= MAX_PACKED_LABELS:
            return [Feedback(prediction_id(w.id), w.label, w.ts) for w in ws]
    except (msgspec.DecodeError, ValueError):
        pass
    d = json_object(data)
    if "feedback" not in d:
        return None
    items = d["feedback"]
    if not isinstance(items, list) or not items:
        raise ValueError("'feedback' must be a non-empty list of {id, label}")
    if len(items) > MAX_PACKED_LABELS:
        raise ValueError(f"'feedback' holds {len(items)} labels, over {MAX_PACKED_LABELS}")
    out: list[Item] = []
    for item in items:
        try:
            if not isinstance(item, dict):
                raise ValueError("a label must be an object {id, label}")
            out.append(_checked(item))
        except ValueError as e:
            out.append((str(e), item))
    return out


def feedback_labels(entry: str, data: bytes | None) -> tuple[bool, list[tuple[str, Item]]]:
    """A feedback entry's labels, each named - the entry's id, or ``{entry}/{i}`` in a packed
    entry - and whether it is packed. ``ValueError`` when the entry as a whole is wrong (an
    entry of one label that is wrong is); a packed entry's wrong label is ``(why, item)``.

    >>> feedback_labels("7-0", b'{"feedback": [{"id": "a", "label": 1}, {"id": "b"}]}')[1]
    [('7-0/0', Feedback(id='a', label=1.0, ts=None)), ('7-0/1', ("'data' has no 'label'", {'id': 'b'}))]
    """
    packed = decode_feedback_entry(data)
    if packed is None:
        return False, [(entry, decode_feedback(data))]
    return True, [(f"{entry}/{i}", item) for i, item in enumerate(packed)]


def json_object(data: bytes, what: str = "'data'") -> dict[str, Any]:
    """A JSON object from bytes, or ``ValueError`` naming ``what`` it was read from (a stream
    entry's ``'data'``, a request's body)."""
    try:
        d = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be a JSON object")
    return d


def _checked(d: dict[str, Any]) -> Feedback:
    """A label from its JSON object, or ``ValueError`` naming what is wrong."""
    for name in ("id", "label"):
        if name not in d:
            raise ValueError(f"'data' has no {name!r}")
    label = d["label"]
    if isinstance(label, bool) or not isinstance(label, int | float | str):
        raise ValueError(f"'label' must be a number or a class name (got {type(label).__name__})")
    ts = d.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int | float)):
        raise ValueError(f"'ts' must be a number (got {type(ts).__name__})")
    return Feedback(prediction_id(d["id"]), label if isinstance(label, str) else float(label), ts)
