"""The Redis model store: versioned snapshots, pointers, retention, notifications.

Keys are ``tideline:{<namespace>/<model>}:...``, one hash tag per model (see :class:`Keys`).
Per revision the store keeps numbered versions (``v0, v1, ...``: blobs in
the :mod:`tideline.codec` array format, self-describing: the ``spec.model``
they were learned with travels in the header), a sorted set of the versions
it holds, and three pointers:

``latest``
    the newest version the learner published;
``served``
    the version prediction servers answer with (normally ``latest``);
``lastGood``
    a version *proven* on labels: the operator sets it once a served version
    was served on enough labelled samples and was not significantly worse
    than the previous ``lastGood`` on the same samples (see
    :mod:`tideline_operator.rollout`). It is the one a guardrail rolls back
    to. Publishing never moves it, with one exception: the first version of
    a revision warm-started from a ``spec.model.warmStart`` snapshot (a
    baseline proven offline) starts as ``lastGood``. A cold model has none
    until one is proven.

Publishing is one Lua script, so a version, its pointers, the retention of
``keepVersions`` (never deleting a version a pointer names) and the pub/sub
notification happen atomically, and can share a MULTI with the learner's
checkpoint and stream acks. When ``pinned`` is set on a revision (after a
rollback), publishing moves ``latest`` only.

A revision may also hold a drift ``reference`` (:class:`Reference`): the
feature statistics the monitor compares traffic with. It comes from the
warm-start baseline (a snapshot file written with one, or the revision it
warm-started from), or else the monitor records its first window there.

Every blob the store writes - a version, a drift reference - is sealed by the process's
:class:`tideline.signing.Sealing` (HMAC-SHA256 under the model's key, when it has one), and
every blob it reads is verified before anything decodes it: a version that fails is never
loaded (:class:`tideline.signing.ForgedBlob`, logged and counted once), a reference that
fails is as good as none. A blob put back after a store reset keeps its signed bytes as
they were (:func:`restore_args`).

A revision the operator removes (promoted over, replaced, reverted away
from) is ``retire``d; once its pods are surely gone the operator ``forget``s it:
every key under ``rev:{revision}:`` and its learner's consumer groups. A
revision that comes back later (a reverted spec) then starts afresh from
the stable one instead of resuming what it had learned when it left.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import redis

from tideline import codec, signing
from tideline.algorithms import Learner, make_learner
from tideline.contracts import Keys, Pointers
from tideline.signing import ForgedBlob, Sealing
from tideline.spec import parse_model


def is_cluster(url: str, **kw: Any) -> bool:
    """Whether the Redis at ``url`` is a Redis Cluster node (``INFO cluster``)."""
    probe = redis.Redis.from_url(url, **kw)
    try:
        return bool(probe.info("cluster").get("cluster_enabled"))
    finally:
        probe.close()


def connect(url: str, **kw: Any) -> Any:
    """A client for the Redis at ``url``: ``redis.Redis``, or ``RedisCluster`` when it is a
    cluster node (the one URL finds the rest of the cluster)."""
    if is_cluster(url, **kw):
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url, **kw)
    return redis.Redis.from_url(url, **kw)


def connect_async(url: str, **kw: Any) -> Any:
    """:func:`connect` for asyncio (asked once, at start, whether it is a cluster)."""
    import redis.asyncio as aioredis

    if is_cluster(url, **kw):
        return aioredis.RedisCluster.from_url(url, **kw)
    return aioredis.Redis.from_url(url, **kw)


def transaction(r: Any, key: str) -> Any:
    """A MULTI/EXEC pipeline for commands on one model's keys (one hash slot). On a cluster,
    on the node holding that slot: redis-py's cluster pipeline refuses scripts and PUBLISH
    in a transaction, the node itself takes them (a MOVED while slots move fails it whole)."""
    return node_pipeline(r, key, transaction=True)


def node_pipeline(r: Any, key: str, transaction: bool = False) -> Any:
    """A pipeline for commands on one model's keys, scripts among them: on a cluster, on the
    node holding ``key``'s slot (redis-py's cluster pipeline takes no script)."""
    if hasattr(r, "get_node_from_key"):
        return r.get_redis_connection(r.get_node_from_key(key)).pipeline(transaction=transaction)
    return r.pipeline(transaction=transaction)


def node_info(r: Any, key: str, section: str) -> dict[str, Any]:
    """``INFO section`` of the server holding ``key`` (on a cluster, of its node only)."""
    if hasattr(r, "get_node_from_key"):
        return dict(r.info(section, target_nodes=r.get_node_from_key(key)))
    return dict(r.info(section))


def migrate_keys(r: Any, keys: Keys) -> int:
    """Move a model's keys from the layout before hash tags to :class:`Keys`'s; the number moved.

    Run by every process of a model at its start: the first to run moves them
    (``RENAMENX``: a key another process moved meanwhile, or one that exists
    under the new name already, is left alone). A few well-known keys say
    whether there is anything to move, so a model without old keys costs no scan.
    """
    old = keys.legacy_prefix + ":"
    probe = [old + name for name in ("samples", "feedback", "routing", "health", "retired")]
    if not r.exists(*probe):  # (a learner makes both streams at its first start)
        return 0
    new = keys.prefix + ":"
    moved = 0
    for key in list(r.scan_iter(match=old + "*", count=1000)):
        name = key.decode() if isinstance(key, bytes) else key
        try:
            moved += bool(r.renamenx(name, new + name[len(old) :]))
        except redis.ResponseError:  # moved by another process meanwhile
            continue
    return moved


# KEYS: blob, versions zset, vmeta hash, pointers hash, and maybe a guard key; ARGV: version,
# blob, meta json, keep, version key prefix, channel, event json, baseline ("1": lastGood
# unless one is set). With a guard key that does not exist nothing is done and -1 returned: a
# learner's checkpoint names its own, so a version is never published into a store that lost
# its keys before the learner has put back what it holds (see tideline.pods.learner).
_PUBLISH = """
if #KEYS > 4 and redis.call('EXISTS', KEYS[5]) == 0 then return -1 end
local v = tonumber(ARGV[1])
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], v, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[4], 'latest', ARGV[1])
local pinned = redis.call('HGET', KEYS[4], 'pinned')
local served = redis.call('HGET', KEYS[4], 'served')
local moved = 0
if ARGV[8] == '1' then redis.call('HSETNX', KEYS[4], 'lastGood', ARGV[1]) end
if pinned ~= '1' then
  redis.call('HSET', KEYS[4], 'served', ARGV[1])
  moved = 1
end
local keep = tonumber(ARGV[4])
local names = redis.call('ZRANGE', KEYS[2], 0, -1)
local excess = #names - keep
local p = redis.call('HMGET', KEYS[4], 'latest', 'served', 'lastGood')
for _, name in ipairs(names) do
  if excess <= 0 then break end
  if name ~= p[1] and name ~= p[2] and name ~= p[3] then
    redis.call('DEL', ARGV[5] .. name)
    redis.call('ZREM', KEYS[2], name)
    redis.call('HDEL', KEYS[3], name)
    excess = excess - 1
  end
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return moved
"""


# KEYS: blob, versions zset, vmeta hash, pointers hash, restores counter; ARGV: version,
# blob, meta json, then pointer field/value pairs. Puts back what is missing and nothing else
# (SET NX, HSETNX): a process that held a version through a store reset returns it without
# overwriting what another process restored first. What it put back raises the restores
# count (the operator reports it). Returns 1 when the blob itself was missing.
_RESTORE = """
local put = redis.call('SET', KEYS[1], ARGV[2], 'NX')
local changed = put and 1 or 0
changed = changed + redis.call('ZADD', KEYS[2], 'NX', tonumber(ARGV[1]), ARGV[1])
for i = 4, #ARGV, 2 do changed = changed + redis.call('HSETNX', KEYS[4], ARGV[i], ARGV[i + 1]) end
redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[3])
if changed > 0 then redis.call('INCR', KEYS[5]) end
if put then return 1 end
return 0
"""


def restore_args(
    keys: Keys, revision: str, version: int, blob: bytes, meta: Mapping[str, Any],
    pointers: Mapping[str, int | float | str | bool],
) -> tuple[Any, ...]:  # fmt: skip
    """The arguments of an ``EVAL`` that puts a held version back in a store that lost it,
    with the pointers given (``{"served": 20, "pinned": True}``) where the hash has none:
    ``r.eval(*restore_args(...))``, with a client sync or async. ``blob`` is the version as
    it was stored, signature and all (what :meth:`ModelStore.publish` returned, or the
    bytes read): put back byte for byte, it verifies as before."""
    fields: list[Any] = []
    for name, value in pointers.items():
        if isinstance(value, float):
            value = repr(value)  # (a time: every digit)
        fields += [name, ("1" if value else "0") if isinstance(value, bool) else str(value)]
    return (
        _RESTORE, 5, keys.version(revision, version), keys.versions(revision),
        keys.vmeta(revision), keys.pointers(revision), keys.restores, version, blob,
        orjson.dumps(dict(meta)),
        *fields,
    )  # fmt: skip


# KEYS: a blob; ARGV: the bytes read there, the head of their sealed envelope (MAGIC and tag).
# The blob becomes its envelope only if it is still the bytes read: one written meanwhile is
# left as it is. Returns 1 when it was sealed.
_ADOPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2] .. ARGV[1])
return 1
"""


def adopt_unsigned(
    r: Any, keys: Keys, signer: signing.Signer, revisions: Iterable[str],
    algorithm_of: Callable[[str], str | None],
) -> signing.Adopted:  # fmt: skip
    """Seal with ``signer`` - a model's new key - the unsigned blobs of built-in learners that
    its store holds from before it had a key (the module docs of :mod:`tideline.signing`:
    adoption); what was sealed, and what was not.

    The revisions looked at are ``revisions`` (the caller's: the spec's, the status's) and
    those the store names - the routing hash's stable and canary, the retired ones not yet
    forgotten: a revision's keys go only with :meth:`ModelStore.forget` of a retired one, so
    no SCAN of the keyspace is needed. Of each: the versions its sorted set lists, its
    checkpoint, replay buffer and drift reference. Only their first four bytes are read,
    then the unsigned ones (``TDL1``) whole; a sealed one (``TDS1``, under this key or an old
    one) is not touched. One that :func:`tideline.signing.adoptable` accepts - a version by
    its header, the rest by ``algorithm_of(revision)``, the algorithm its manifest names
    (None: not known) - is replaced by its envelope of its kind, by a script that writes only
    while the key still holds the bytes read: one written meanwhile (by a process without
    the key, until its pod is replaced) is left as it is, and counted.
    """
    k = keys
    p = r.pipeline(transaction=False)
    p.hmget(k.routing, "stable", "canary")
    p.zrange(k.retired, 0, -1)
    named, retired = p.execute()
    found = {*revisions, *(v.decode() for v in [*named, *retired] if v)}
    out = signing.Adopted(revisions=sorted(found))
    for rev in out.revisions:
        blobs = [(signing.VERSION, k.version(rev, int(v)))
                 for v in r.zrange(k.versions(rev), 0, -1) if v.isdigit()]  # fmt: skip
        blobs += [(signing.CHECKPOINT, k.checkpoint(rev)), (signing.REPLAY, k.replay(rev)),
                  (signing.REFERENCE, k.reference(rev))]  # fmt: skip
        p = r.pipeline(transaction=False)
        for _, key in blobs:
            p.getrange(key, 0, len(codec.MAGIC) - 1)
        heads = p.execute(raise_on_error=False)  # (a key of another type: an error, passed)
        algorithm: list[str | None] = []  # (asked once, when needed)
        for (kind, key), head in zip(blobs, heads, strict=True):
            raw = r.get(key) if head == codec.MAGIC else None
            if raw is None or not raw.startswith(codec.MAGIC):
                continue
            if kind != signing.VERSION and not algorithm:
                algorithm.append(algorithm_of(rev))
            if not signing.adoptable(raw, kind, algorithm[0] if algorithm else None):
                out.unsigned[kind] += 1
            elif r.eval(_ADOPT, 1, key, raw, signer.seal(raw, kind)[: signing.HEADER_BYTES]):
                out.sealed[kind] += 1
            else:
                out.changed += 1
    return out


class StoreError(RuntimeError):
    """A version or pointer that the store does not hold."""


class ModelStore:
    """Versions and pointers of one model in Redis (see module docs).

    ``sealing``: how blobs are signed and verified; by default the process's own, from
    ``TIDELINE_SIGNING_KEY`` (:meth:`tideline.signing.Sealing.from_env`).
    """

    def __init__(
        self, client: redis.Redis, namespace: str, model: str, sealing: Sealing | None = None
    ) -> None:
        self.r: Any = client  # bytes replies (see tideline.pods.learner)
        self.keys = Keys(namespace, model)
        self.sealing = sealing if sealing is not None else Sealing.from_env(namespace, model)

    # -- writing ----------------------------------------------------------------------
    def publish(
        self,
        revision: str,
        version: int,
        learner: Learner,
        meta: Mapping[str, Any] | None = None,
        *,
        keep: int = 20,
        pipe: redis.client.Pipeline | None = None,
        baseline: bool = False,
        guard: str | None = None,
    ) -> tuple[bytes, dict[str, Any]]:
        """Store ``learner`` as ``version`` of ``revision`` and move the pointers.

        With ``pipe`` the write joins that pipeline (and its MULTI) instead of
        running at once. ``baseline``: a warm-start snapshot proven offline,
        ``lastGood`` unless the revision has one. ``guard``: a key (of the model's) that
        must exist, else nothing is published (the script's reply is -1).

        Returns
        -------
        tuple of (bytes, dict)
            The version's blob (sealed) and its metadata as stored, for a process that
            keeps a copy to :meth:`restore` after a store reset.
        """
        info = {
            "version": version,
            "revision": revision,
            "created": time.time(),
            "n_seen": learner.n_seen,
            **(meta or {}),
        }
        blob = self.sealing.seal(
            codec.encode(learner.get_state(), {"model": learner.spec(), **info}), signing.VERSION
        )
        event = orjson.dumps({"event": "version", **info})
        k = self.keys
        # EVAL, not a registered script's EVALSHA: in a pipeline redis-py asks SCRIPT EXISTS
        # first, a round trip more at every publish (Redis caches the script either way)
        keys = [k.version(revision, version), k.versions(revision), k.vmeta(revision),
                k.pointers(revision), *([guard] if guard else [])]  # fmt: skip
        (pipe if pipe is not None else self.r).eval(
            _PUBLISH,
            len(keys),
            *keys,
            version,
            blob,
            orjson.dumps(info),
            keep,
            k.version_prefix(revision),
            k.events,
            event,
            "1" if baseline else "0",
        )
        return blob, info

    def set_pointer(
        self, revision: str, name: str, version: int, *, pin: bool | None = None
    ) -> None:
        """Point ``served`` (or another pointer) at a stored version; notify servers."""
        if name not in ("served", "lastGood", "latest"):
            raise StoreError(f"unknown pointer {name!r}")
        if not self.r.exists(self.keys.version(revision, version)):
            raise StoreError(f"revision {revision} has no version {version}")
        p = transaction(self.r, self.keys.prefix)
        p.hset(self.keys.pointers(revision), name, version)
        if pin is not None:
            p.hset(self.keys.pointers(revision), mapping=Pointers.pinned_hash(pin))
        p.publish(
            self.keys.events,
            orjson.dumps(
                {"event": "pointer", "revision": revision, "pointer": name, "version": version}
            ),
        )
        p.execute()

    def restore(
        self, revision: str, version: int, blob: bytes, meta: Mapping[str, Any],
        pointers: Mapping[str, int | float | str | bool],
    ) -> bool:  # fmt: skip
        """Put back a version this process holds, and the pointers missing (see
        :func:`restore_args`); True when the version itself was missing."""
        return bool(self.r.eval(*restore_args(self.keys, revision, version, blob, meta, pointers)))

    def save_reference(self, revision: str, reference: Reference) -> bool:
        """Store a revision's drift reference unless it has one; True when this one was stored."""
        blob = self.sealing.seal(reference.to_blob(), signing.REFERENCE)
        return bool(self.r.set(self.keys.reference(revision), blob, nx=True))

    def retire(self, revision: str, at: float) -> None:
        """Note that ``revision`` left at ``at`` (kept if already noted: the first time counts)."""
        self.r.zadd(self.keys.retired, {revision: at}, nx=True)

    def forget(self, revision: str) -> int:
        """Delete a revision's keys and its learner's consumer groups; the number of keys deleted."""
        k = self.keys
        removed = 0
        batch: list[bytes] = []
        for key in self.r.scan_iter(match=f"{k.rev_prefix(revision)}*", count=1000):
            batch.append(key)
            if len(batch) == 500:
                removed += self.r.unlink(*batch)
                batch = []
        if batch:
            removed += self.r.unlink(*batch)
        for stream in (k.samples, k.feedback):
            with contextlib.suppress(redis.ResponseError):  # no such stream
                self.r.xgroup_destroy(stream, k.learner_group(revision))
        self.r.zrem(k.retired, revision)
        return removed

    # -- reading ----------------------------------------------------------------------
    def reference(self, revision: str) -> Reference | None:
        """A revision's drift reference; None when it has none, or none that verifies."""
        key = self.keys.reference(revision)
        blob = self.r.get(key)
        if blob is None:
            return None
        try:
            return Reference.from_blob(self.sealing.open(blob, signing.REFERENCE, key).blob)
        except (codec.CodecError, KeyError, ValueError, TypeError):  # (ForgedBlob included)
            return None

    def pointers(self, revision: str) -> Pointers:
        return Pointers.from_hash(self.r.hgetall(self.keys.pointers(revision)))

    def versions(self, revision: str) -> list[int]:
        return [int(v) for v in self.r.zrange(self.keys.versions(revision), 0, -1)]

    def version_meta(self, revision: str, version: int) -> dict[str, Any]:
        raw = self.r.hget(self.keys.vmeta(revision), str(version))
        if raw is None:
            raise StoreError(f"revision {revision} has no version {version}")
        return orjson.loads(raw)

    def load(self, revision: str, version: int | str = "served") -> tuple[Learner, dict[str, Any]]:
        """A learner rebuilt from a stored version (a number or a pointer name).

        Raises :class:`StoreError` when it is not stored, :class:`tideline.signing.ForgedBlob`
        when its blob does not verify (nothing of it decoded).
        """
        if isinstance(version, str):
            v = self.pointers(revision).get(version)
            if v is None:
                raise StoreError(f"revision {revision} has no {version} pointer")
            version = v
        key = self.keys.version(revision, version)
        blob = self.r.get(key)
        if blob is None:
            raise StoreError(f"revision {revision} has no version {version}")
        return open_version(self.sealing, blob, key)


def open_version(sealing: Sealing, blob: bytes, where: str) -> tuple[Learner, dict[str, Any]]:
    """A version's learner and header from its blob as stored at ``where`` (its Redis key):
    verified first (:meth:`tideline.signing.Sealing.open`), then rebuilt. A blob refused -
    forged, unsigned where a key is set, or unsigned state of a learner that is not a
    built-in - raises :class:`tideline.signing.ForgedBlob`, logged and counted once."""
    opened = sealing.open(blob, signing.VERSION, where)
    try:
        return learner_from_blob(opened.blob, trusted=opened.trusted)
    except ForgedBlob as e:
        sealing.refuse(where, blob, e)
        raise


def learner_from_blob(blob: bytes, *, trusted: bool = False) -> tuple[Learner, dict[str, Any]]:
    """A learner and its header from a snapshot blob (no envelope: :func:`open_version` takes
    a stored one).

    ``trusted``: the bytes verified with the model's key, or come from the team (a
    warm-start file, trusted like the manifest). Untrusted bytes are loaded for the
    built-in learners only, whose state is arrays (:func:`tideline.signing.require_trusted`:
    :class:`tideline.signing.ForgedBlob` before ``make_learner`` runs); the learner's
    state is set inside :func:`tideline.signing.loading`, so a learner whose state is code
    can ask :func:`tideline.signing.loading_untrusted` too.
    """
    arrays, meta = codec.decode(blob)
    if not trusted:  # (read as make_learner reads it: an algorithm left out is the default)
        signing.require_trusted(parse_model(meta["model"]).algorithm, trusted)
    with signing.loading(trusted):
        learner = make_learner(meta["model"])
        learner.set_state({k: v for k, v in arrays.items() if not k.startswith("reference.")})
    return learner, meta


def learner_to_blob(
    learner: Learner, meta: Mapping[str, Any] | None = None, reference: Reference | None = None
) -> bytes:
    """The snapshot format, e.g. for a batch-trained warm-start baseline file (unsigned: a
    team's warm-start file is trusted like its manifest; the store seals what it writes).

    With a ``reference`` (a sample of the rows it was trained on, and its
    scores), a revision warm-started from this snapshot measures drift
    against it from its first prediction on.
    """
    arrays = dict(learner.get_state())
    header = {"model": learner.spec(), **(meta or {})}
    if reference is not None:
        arrays["reference.features"] = reference.features
        if reference.scores is not None:
            arrays["reference.scores"] = reference.scores
        header["reference"] = {"names": reference.names, "source": reference.source}
    return codec.encode(arrays, header)


@dataclass(frozen=True)
class Reference:
    """What drift is measured against: numeric feature rows (named columns), maybe scores.

    >>> ref = Reference(["amount"], np.array([[1.0], [2.0]]), np.array([0.1, 0.9]), "baseline")
    >>> Reference.from_blob(ref.to_blob()).names, Reference.from_blob(ref.to_blob()).scores.tolist()
    (['amount'], [0.1, 0.9])
    """

    names: list[str]
    features: np.ndarray  # (rows, len(names))
    scores: np.ndarray | None
    source: str

    MAX_ROWS = 10_000  # a reference window is at most this long (drift.*.window)

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.features.shape[1] != len(self.names):
            raise ValueError(f"reference features must have shape (rows, {len(self.names)})")
        if self.scores is not None and len(self.scores) != len(self.features):
            raise ValueError("reference scores must have one score per row")

    def to_blob(self) -> bytes:
        arrays = {"features": self.features[-self.MAX_ROWS :]}
        if self.scores is not None:
            arrays["scores"] = self.scores[-self.MAX_ROWS :]
        return codec.encode(arrays, {"names": self.names, "source": self.source})

    @classmethod
    def from_blob(cls, blob: bytes) -> Reference:
        arrays, meta = codec.decode(blob)
        return cls(list(meta["names"]), arrays["features"], arrays.get("scores"), meta["source"])

    @classmethod
    def of_snapshot(cls, blob: bytes, source: str) -> Reference | None:
        """The reference a snapshot carries (see :func:`learner_to_blob`), if any."""
        arrays, meta = codec.decode(blob)
        ref = meta.get("reference")
        if not isinstance(ref, dict) or "reference.features" not in arrays:
            return None
        return cls(
            list(ref["names"]), arrays["reference.features"], arrays.get("reference.scores"), source
        )
