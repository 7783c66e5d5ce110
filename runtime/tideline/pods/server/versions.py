"""The model versions a server answers with, and the routing between them.

The operator writes ``tideline:{<ns>/<model>}:routing`` (stable and canary
revisions, canary weight, shadow, canary URL: :class:`tideline.contracts.Routing`)
and moves the revisions' pointers; the learner publishes versions. :class:`ModelVersions` reads both
off the request path - when a pub/sub event says something moved, and every
``poll_interval`` in case an event was missed - loads a version that changed
in a thread, and swaps it in with one attribute assignment, so a request sees
the old model or the new one, never half of one.

A server never loses, and never lowers, what it serves (issue 30: a store
restarted empty had a learner publish an untrained v0, which was served):

* it keeps the version it holds when the pointers or the routing vanish;
* when the ``served`` pointer of a revision it serves, or that version's
  blob, is gone from the store, it puts the version back (blob, metadata,
  and the pointers missing: :func:`tideline.store.restore_args`, which
  never overwrites), so a learner that restarts resumes from it; likewise
  the ``lastGood`` version it holds;
* it does not swap a version that learned something for a cold one of the
  same revision (``n_seen`` 0, no ``warmStart``) unless the revision is
  ``pinned``, the operator's explicit choice (a rollback, a serve);
* it loads no version whose signature does not verify (:mod:`tideline.signing`: the
  key is ``TIDELINE_SIGNING_KEY``): the blob is refused before anything decodes it,
  logged and counted once (``tideline_forged_blobs_total{component="server"}``), and
  the server keeps answering with what it holds. What it holds is kept as stored,
  signature included, and put back byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis.exceptions

from tideline import codec
from tideline.algorithms import Learner
from tideline.algorithms.external import ModelLoadError
from tideline.contracts import Keys, Pointers, Routing
from tideline.features import FeatureSchema
from tideline.pods.faults import VersionFaults
from tideline.pods.metrics import ServerMetrics
from tideline.pods.server import usercode
from tideline.signing import ForgedBlob, Sealing
from tideline.spec import OnlineModel
from tideline.store import open_version, restore_args

log = logging.getLogger("tideline.server")


@dataclass(frozen=True)
class Loaded:
    """One version of one revision, ready to answer."""

    revision: str
    version: int
    learner: Learner
    predict: Callable[[np.ndarray], np.ndarray]
    created: float  # when the learner published it
    # The snapshot as stored, and its metadata: what this server puts back in a store that
    # lost it (a restart, a flush, an eviction), so the version outlives the store's copy.
    blob: bytes = b""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def schema(self) -> FeatureSchema:
        return self.learner.schema

    @property
    def learned(self) -> bool:
        """Whether this version learned anything: samples seen, or a warm-start baseline."""
        return int(self.meta.get("n_seen", 1)) > 0 or "warmStart" in self.meta


class ModelVersions:
    """The stable revision's served and lastGood versions, a canary's served one, and the
    routing (see module docs). ``sealing``: how versions are verified; by default with the
    key in the environment (:meth:`tideline.signing.Sealing.from_env`)."""

    def __init__(
        self, model: OnlineModel, keys: Keys, metrics: ServerMetrics, poll_interval: float,
        sealing: Sealing | None = None,
    ) -> None:  # fmt: skip
        self.model = model
        self.keys = keys
        self.metrics = metrics
        self.sealing = sealing or Sealing.from_env(
            keys.namespace, keys.model, component="server", refused=metrics.forged_blobs.inc
        )
        self.poll_interval = poll_interval
        self.faults = VersionFaults(keys)  # versions it cannot load (tideline.pods.faults)
        self.routing = Routing(stable=model.revision)
        self.stable: Loaded | None = None
        self.canary: Loaded | None = None
        self.last_good: Loaded | None = None
        self.warmed = False
        self.stopping = False  # the loops end on it (see DataPlane.stop)
        self._refused: set[tuple[str, int]] = set()  # cold versions not served (warned once)
        self._pinned: dict[str, bool] = {}  # per revision, as last read with a served pointer
        self._lock = asyncio.Lock()

    async def refresh(self, r: Any) -> None:
        """Read routing and pointers; load whatever version changed (off the request path);
        put back what this server holds and the store lost."""
        async with self._lock:
            routing = Routing.from_hash(await r.hgetall(self.keys.routing), self.model.revision)
            if routing.canary_url and routing.canary == self.model.revision:
                # This server runs the canary's own image: it answers with its
                # revision what the stable servers forward to it, and splits nothing.
                routing = Routing(stable=self.model.revision)
            pointers = await self._pointers(r, routing.stable)
            await self._restore(r, routing.stable, pointers, self.stable, self.last_good)
            stable = await self._load_pointer(r, routing.stable, pointers, "served", self.stable)
            last_good = await self._load_pointer(
                r, routing.stable, pointers, "lastGood", self.last_good
            )
            canary = None
            if routing.canary and not routing.canary_url:
                canary_pointers = await self._pointers(r, routing.canary)
                await self._restore(r, routing.canary, canary_pointers, self.canary, None)
                canary = await self._load_pointer(
                    r, routing.canary, canary_pointers, "served", self.canary
                )
                canary = await self._kept(r, self.canary, canary, canary_pointers)
            stable = await self._kept(r, self.stable, stable, pointers)
            self.routing = routing
            if stable is not None and stable is not self.stable:
                self._warm_up(stable)
                self.stable = stable
                self.metrics.served_version.labels(track="stable").set(stable.version)
                log.info("serving %s v%d", stable.revision, stable.version)
            self.last_good = last_good
            self.canary = canary
            if canary is not None:
                self.metrics.served_version.labels(track="canary").set(canary.version)

    async def _pointers(self, r: Any, revision: str) -> Pointers:
        return Pointers.from_hash(await r.hgetall(self.keys.pointers(revision)))

    async def _kept(
        self, r: Any, held: Loaded | None, new: Loaded | None, pointers: Pointers
    ) -> Loaded | None:
        """``new``, unless it is a cold version of the revision ``held`` is of and ``held``
        learned something: a learner that lost its state (a store reset) publishes a v0,
        and only the operator may make one served (a pinned revision: a rollback, a serve).
        The version kept is put back in the store if it lost it (without pointers: the
        operator may pin it again)."""
        if (
            held is None
            or new is None
            or new is held
            or new.revision != held.revision
            or new.learned
            or not held.learned
            or pointers.pinned
        ):
            return new
        if (new.revision, new.version) not in self._refused:
            self._refused.add((new.revision, new.version))
            log.warning(
                "%s v%d is a cold model (it learned nothing) and %s v%d learned: keeping v%d "
                "(a cold version is served only when the operator pins it)",
                new.revision, new.version, held.revision, held.version, held.version,
            )  # fmt: skip
        if held.blob and not await r.exists(self.keys.version(held.revision, held.version)):
            await r.eval(*restore_args(self.keys, held.revision, held.version, held.blob,
                                       held.meta, {}))  # fmt: skip
        return held

    async def _restore(
        self, r: Any, revision: str, pointers: Pointers, served: Loaded | None,
        last_good: Loaded | None,
    ) -> None:  # fmt: skip
        """Put back the versions this server holds of ``revision`` that the store lost: the
        served one when the ``served`` pointer or its blob is gone (with ``served`` and
        ``latest``, and ``pinned`` when it was), the ``lastGood`` one when its blob is gone
        (with ``lastGood``). Nothing present is overwritten (SET NX, HSETNX)."""
        for held, names in ((served, ("served", "latest")), (last_good, ("lastGood",))):
            if held is None or held.revision != revision or not held.blob:
                continue
            named = pointers.get(names[0])
            if named is not None and named != held.version:
                continue  # the store names another version: not this server's to undo
            if named is not None and await r.exists(self.keys.version(revision, held.version)):
                continue
            put: dict[str, int | bool] = dict.fromkeys(names, held.version)
            if names[0] == "served" and self._pinned.get(revision):
                put[Pointers.PINNED] = True  # a rollback in force stays in force
            blob_missing = await r.eval(
                *restore_args(self.keys, revision, held.version, held.blob, held.meta, put)
            )
            log.warning(
                "the store lost %s v%d (%s): put back what this server holds%s", revision,
                held.version, "pointer" if named is None else "blob",
                "" if blob_missing else " (its blob was back already)",
            )  # fmt: skip
        if pointers.served is not None:
            self._pinned[revision] = pointers.pinned

    async def _load_pointer(
        self, r: Any, revision: str, pointers: Pointers, pointer: str, current: Loaded | None
    ) -> Loaded | None:
        version = pointers.get(pointer)
        if version is None:
            return current if current is not None and current.revision == revision else None
        if current is not None and current.revision == revision and current.version == version:
            return current
        for held in (self.stable, self.canary, self.last_good):
            if held is not None and held.revision == revision and held.version == version:
                return held
        if self.faults.failed_before(revision, version):
            return current  # (it could not be loaded: reported once, not tried again)
        key = self.keys.version(revision, version)
        blob = await r.get(key)
        if blob is None:
            log.warning("%s v%d is named by %s but not stored", revision, version, pointer)
            return current
        try:  # (verified in the thread too: a large blob's HMAC is no work for the event loop)
            learner, meta = await asyncio.to_thread(open_version, self.sealing, blob, key)
        except ForgedBlob:  # logged and counted once by the sealing: keep what is held
            return current
        except ModelLoadError as e:  # a team's class that cannot be loaded: said, and kept
            await self.faults.failed(r, revision, version, e)
            return current
        # a team's model answers a probe (in a thread of its own) before it serves
        refused = await asyncio.to_thread(usercode.probe, learner)
        if refused is not None:
            await self.faults.failed(r, revision, version, ModelLoadError("BadScores", refused))
            return current
        await self.faults.loaded(r, revision)
        meta.pop("model", None)  # (the spec travels in the blob; the version's meta is the rest)
        meta.pop("reference", None)
        return Loaded(revision, version, learner, learner.predictor(),
                      float(meta.get("created", 0.0)), blob, meta)  # fmt: skip

    def _warm_up(self, loaded: Loaded) -> None:
        sch = loaded.schema
        if not usercode.is_team_model(loaded.learner):  # (probed already, in its own thread)
            loaded.predict(sch.encode([{}]))
        sch.missing[:] = 0  # the warm-up row is not traffic
        self.warmed = True

    async def subscribe(self, r: Any, refresh: Callable[[], Awaitable[None]]) -> None:
        """``refresh`` at every event of the model (a version published, a pointer moved)."""
        while not self.stopping:
            pubsub = r.pubsub()
            try:
                await pubsub.subscribe(self.keys.events)
                while not self.stopping:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        await refresh()
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.RedisError, OSError) as e:
                log.debug("pub/sub lost (%s)", e)
                await asyncio.sleep(self.poll_interval)
            finally:
                with contextlib.suppress(Exception):  # bounded: stopping must not wait on it
                    await asyncio.wait_for(asyncio.shield(pubsub.aclose()), timeout=2.0)

    async def poll(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Polling backs pub/sub up: a missed message costs at most one interval."""
        while not self.stopping:
            await asyncio.sleep(self.poll_interval)
            try:
                await refresh()
            except asyncio.CancelledError:
                raise
            except (
                redis.exceptions.RedisError,
                OSError,
                codec.CodecError,
                KeyError,
                ValueError,
            ) as e:
                log.debug("refresh failed (%s)", e)
