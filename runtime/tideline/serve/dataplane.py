"""The data plane behind the HTTP routes: versions, routing, fallback, logging.

The routes in :mod:`tideline.serve.api` only parse and answer HTTP; this
module does the rest, and never waits on Redis on the request path:

* **Versions.** The served version of the stable revision (and of a canary
  revision running the same image) is loaded off the request path, in a
  thread, when a pub/sub event or the 1 s poll says its pointer moved; the
  new model replaces the old with one attribute assignment, so a request
  sees either the old model or the new one, never half of one.
* **Routing.** The operator writes ``tideline:{ns}:{model}:routing``
  (stable and canary revisions, canary weight, shadow, canary URL). A
  request goes to the canary when the hash of its routing key (header
  ``x-tideline-key``, or ``spec.serving.routingKey`` per row) falls under the
  weight, so one entity always sees one track; without a key, at random by
  weight. A shadow canary answers too, but only its log sees it.
* **Fallback.** Past ``spec.serving.timeout``, or without a model, the
  answer is the ``lastGood`` version's (or the fixed ``fallback.value``),
  flagged in the response and in metrics.
* **Logging.** Every answered request appends one entry per track to an
  in-memory queue; a background task writes the queue to the capped
  ``predictions`` stream in pipelined batches. Through a Redis outage the
  queue holds up to ``log_queue`` entries and about ``log_queue_bytes`` of
  them (the oldest are dropped and counted beyond that) while the server
  keeps answering from memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import itertools
import logging
import math
import os
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import numpy as np
import orjson
import redis.asyncio as aioredis
import redis.exceptions
from msgspec.structs import astuple

from tideline import codec
from tideline.features import FeatureError, FeatureSchema
from tideline.learn import Learner
from tideline.metrics import ServerMetrics
from tideline.spec import OnlineModel
from tideline.store import Keys, learner_from_blob

log = logging.getLogger("tideline.server")


# --------------------------------------------------------------------------- errors
class DataPlaneError(Exception):
    """A request the data plane refuses; ``status`` is the HTTP code the API answers."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(DataPlaneError):
    status = 400


class UnsupportedMediaType(DataPlaneError):
    status = 415


class Unauthorized(DataPlaneError):
    status = 401


class ModelNotFound(DataPlaneError):
    status = 404


class TooLarge(DataPlaneError):
    status = 413


class Unprocessable(DataPlaneError):
    status = 422


class Unavailable(DataPlaneError):
    status = 503


# --------------------------------------------------------------------------- state
@dataclass(frozen=True)
class Loaded:
    """One version of one revision, ready to answer."""

    revision: str
    version: int
    learner: Learner
    predict: Callable[[np.ndarray], np.ndarray]
    created: float  # when the learner published it

    @property
    def schema(self) -> FeatureSchema:
        return self.learner.schema


@dataclass(frozen=True)
class Routing:
    stable: str
    canary: str | None = None
    weight: int = 0  # percent of traffic to the canary
    shadow: bool = False
    canary_url: str | None = None  # set when the canary runs another image


_SUFFIXES = [str(i) for i in range(10_000)]


class GeneratedIds(Sequence[str]):
    """The ids this server gave a request's rows: ``prefix + str(i)`` for each row i.

    Kept as the prefix and the count: the response writes them with one string
    join, and the prediction log carries ``[prefix, n]`` in place of n strings
    (:func:`tideline.learner.log_ids` expands it). Indexing builds the list,
    once, for whoever needs single ids (a canary split, a shadow log).

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

    def run(self) -> list[Any]:
        """The ids as the prediction log writes them."""
        return [self.prefix, self.n]


def ids_json(ids: Sequence[str]) -> Any:
    """Ids as orjson writes them into a response: generated ones through one join."""
    return orjson.Fragment(ids.json()) if isinstance(ids, GeneratedIds) else ids


@dataclass
class Result:
    predictions: list[float]
    ids: Sequence[str]
    version: int | None
    revision: str | None
    tracks: list[str]
    fallback: bool = False
    fallback_reason: str | None = None
    models: dict[str, Loaded] = field(default_factory=dict)  # which model answered each track
    _json: bytes | None = field(default=None, repr=False)

    def predictions_json(self) -> bytes:
        """The predictions as a JSON array, written once for both the log and the response.

        Formatting floats is most of what serialising a prediction costs: the
        log entry and the answer share these bytes. (Call it once the
        predictions are final: the bytes are kept.)
        """
        if self._json is None:
            self._json = orjson.dumps(self.predictions)
        return self._json


@dataclass
class TrackStats:
    """What a server reports per track every second, for the monitor and operator."""

    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    predictions: int = 0
    latencies: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=4096)
    )

    def summary(self) -> dict[str, Any]:
        lat = np.fromiter(self.latencies, dtype=np.float64)
        out: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "fallbacks": self.fallbacks,
            "predictions": self.predictions,
        }
        if len(lat):
            p50, p95, p99 = np.percentile(lat, [50, 95, 99])
            out.update({"p50": float(p50), "p95": float(p95), "p99": float(p99)})
        return out


def route_hash(key: str) -> int:
    """A stable hash of a routing key in [0, 10000): the same on every replica.

    >>> route_hash("user-42") == route_hash("user-42"), 0 <= route_hash("x") < 10000
    (True, True)
    """
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % 10_000


# --------------------------------------------------------------------------- data plane
class DataPlane:
    def __init__(
        self,
        model: OnlineModel,
        redis_url: str,
        *,
        metrics: ServerMetrics | None = None,
        instance: str | None = None,
        poll_interval: float = 1.0,
        # A write to Redis costs ~0.4M instructions (redis-py) and two system
        # calls however many requests it carries: one every 20 ms keeps that near
        # 1% of a core at any load, with the log 20 ms behind the answers.
        log_flush_interval: float = 0.02,
        log_queue: int = 100_000,
        # 100k requests of 64 rows would be 1.1 GB of bodies: a Redis outage must
        # not take the pod's memory with it
        log_queue_bytes: int = 256 << 20,
        # Predictions the stream keeps, about (the oldest go first), besides
        # labelWindow's trim by time: at 64 rows of six features a request,
        # about 180 MB of Redis.
        log_maxlen: int = 1_000_000,
        max_rows: int = 10_000,
    ) -> None:
        self.model = model
        self.name = model.name
        self.spec = model.spec
        self.keys = Keys(model.namespace, model.name)
        self.redis_url = redis_url
        self.metrics = metrics or ServerMetrics(None)
        self.instance = instance or os.environ.get("HOSTNAME") or f"server-{os.getpid()}"
        self.poll_interval = poll_interval
        self.log_flush_interval = log_flush_interval
        self.log_maxlen = log_maxlen
        self.max_rows = max_rows
        self.routing = Routing(stable=model.revision)
        self.stable: Loaded | None = None
        self.canary: Loaded | None = None
        self.last_good: Loaded | None = None
        self.warmed = False
        self.log_queue, self.log_queue_bytes = log_queue, log_queue_bytes
        self._log: collections.deque[tuple[Any, ...]] = collections.deque()
        self._log_bytes = 0  # what the queued entries hold, about (see _entry_size)
        self._log_event = asyncio.Event()
        # Rows and entries this server wrote to the stream, decayed every second:
        # an entry holds a flush of requests, so the count cap is in entries of
        # the current size (log_maxlen counts rows, not entries)
        self._logged_rows = 0.0
        self._logged_entries = 0.0
        self._tasks: list[asyncio.Task[Any]] = []
        # The background loops also end on this, not only on cancellation: redis-py can
        # turn a cancellation that lands as a read times out into a TimeoutError
        # (redis/redis-py#2551), which they take for a lost connection and retry.
        self._stopping = False
        self._r: Any = None  # redis.asyncio.Redis; bytes replies (see tideline.learner)
        self._http: httpx.AsyncClient | None = None
        # Prediction ids: a random prefix per process and a counter per request (unique
        # across replicas), 64 random bits per request (an id cannot be guessed: a label
        # needs the id its prediction was answered with), the row's index. Cheap: the
        # random bits come from one os.urandom call per 1024 requests, no uuid per row.
        self._id_prefix = os.urandom(4).hex()
        self._requests = itertools.count(1)
        self._random, self._random_at = "", 0
        # A track is chosen by this model's routing, never by a caller: only a request
        # forwarded by one of its own servers (it carries this token) may name one.
        self._forward_token: str | None = None
        self._rng = random.Random()
        self.stats: dict[str, TrackStats] = collections.defaultdict(TrackStats)
        self._v1_decoders: dict[tuple[tuple[str, str], ...], tuple[Any, ...]] = {}
        self._reload_lock = asyncio.Lock()

    # -- life cycle ----------------------------------------------------------------------
    @property
    def r(self) -> Any:
        assert self._r is not None, "DataPlane.start() first"
        return self._r

    async def start(self) -> None:
        self._r = aioredis.Redis.from_url(
            self.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._http = httpx.AsyncClient(timeout=max(self.spec.serving.timeout * 20, 1.0))
        try:
            await self.refresh()
        except (redis.exceptions.RedisError, OSError) as e:
            log.warning("redis unavailable at start (%s); will retry", e)
        loop = asyncio.get_running_loop()
        self._stopping = False
        self._tasks = [
            loop.create_task(self._subscribe(), name="tideline-subscribe"),
            loop.create_task(self._poll(), name="tideline-poll"),
            loop.create_task(self._flush_log(), name="tideline-log"),
            loop.create_task(self._report(), name="tideline-report"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=2.0)
            for t in stuck:
                log.warning("task %s did not stop", t.get_name())
        self._tasks = []
        try:  # what is queued is written, if Redis is there
            await asyncio.wait_for(self._write_log(), timeout=2.0)
        except (redis.exceptions.RedisError, OSError, TimeoutError):
            log.warning("redis unavailable at stop: %d prediction log entries lost", len(self._log))
        if self._http is not None:
            await self._http.aclose()
        if self._r is not None:
            await self._r.aclose()

    @property
    def ready(self) -> bool:
        return self.stable is not None and self.warmed

    # -- versions --------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Read routing and pointers; load whatever version changed (off the request path)."""
        async with self._reload_lock:
            if self._forward_token is None:
                # one token per model, shared by its servers through Redis: the first sets it
                await self.r.set(self.keys.forward_token, secrets.token_hex(32), nx=True)
                token = await self.r.get(self.keys.forward_token)
                self._forward_token = token.decode() if token else None
            raw = await self.r.hgetall(self.keys.routing)
            routing = self._parse_routing(raw)
            if routing.canary_url and routing.canary == self.model.revision:
                # This server runs the canary's own image: it answers with its
                # revision what the stable servers forward to it, and splits nothing.
                routing = Routing(stable=self.model.revision)
            stable = await self._load_pointer(routing.stable, "served", self.stable)
            last_good = await self._load_pointer(routing.stable, "lastGood", self.last_good)
            canary = None
            if routing.canary and not routing.canary_url:
                canary = await self._load_pointer(routing.canary, "served", self.canary)
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

    def _parse_routing(self, raw: dict[bytes, bytes]) -> Routing:
        if not raw:
            return Routing(stable=self.model.revision)
        get = {k.decode(): v.decode() for k, v in raw.items()}
        try:
            weight = min(max(int(get.get("weight", "0")), 0), 100)
        except ValueError:
            weight = 0
        return Routing(
            stable=get.get("stable") or self.model.revision,
            canary=get.get("canary") or None,
            weight=weight,
            shadow=get.get("shadow") == "1",
            canary_url=get.get("canaryURL") or None,
        )

    async def _load_pointer(
        self, revision: str, pointer: str, current: Loaded | None
    ) -> Loaded | None:
        v = await self.r.hget(self.keys.rev(revision, "pointers"), pointer)
        if v is None:
            return current if current is not None and current.revision == revision else None
        version = int(v)
        if current is not None and current.revision == revision and current.version == version:
            return current
        for held in (self.stable, self.canary, self.last_good):
            if held is not None and held.revision == revision and held.version == version:
                return held
        blob = await self.r.get(self.keys.version(revision, version))
        if blob is None:
            log.warning("%s v%d is named by %s but not stored", revision, version, pointer)
            return current
        learner, meta = await asyncio.to_thread(learner_from_blob, blob)
        return Loaded(
            revision, version, learner, learner.predictor(), float(meta.get("created", 0.0))
        )

    def _warm_up(self, loaded: Loaded) -> None:
        sch = loaded.schema
        loaded.predict(sch.encode([{}]))
        sch.missing[:] = 0  # the warm-up row is not traffic
        self.warmed = True

    async def _subscribe(self) -> None:
        while not self._stopping:
            pubsub = self.r.pubsub()
            try:
                await pubsub.subscribe(self.keys.events)
                while not self._stopping:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        await self.refresh()
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.RedisError, OSError) as e:
                log.debug("pub/sub lost (%s)", e)
                await asyncio.sleep(self.poll_interval)
            finally:
                with contextlib.suppress(Exception):  # bounded: stopping must not wait on it
                    await asyncio.wait_for(asyncio.shield(pubsub.aclose()), timeout=2.0)

    async def _poll(self) -> None:
        """Polling backs pub/sub up: a missed message costs at most one interval."""
        while not self._stopping:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.refresh()
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

    # -- predicting ------------------------------------------------------------------------
    def _route(
        self, n: int, key: str | None, all_rows: Callable[[], Sequence[Any]]
    ) -> np.ndarray | None:
        """A boolean mask of the rows that go to the canary (None: all stable)."""
        rt = self.routing
        if not rt.canary or rt.weight <= 0 or rt.shadow:
            return None
        if self.canary is None and not rt.canary_url:
            return None
        threshold = rt.weight * 100
        feature = self.spec.serving.routingKey
        rows = all_rows() if feature is not None else None
        if feature is not None and rows and isinstance(rows[0], dict):
            return np.array([route_hash(str(r.get(feature))) < threshold for r in rows], dtype=bool)
        hit = (
            route_hash(key) < threshold
            if key is not None
            else self._rng.random() * 10_000 < threshold
        )
        return np.full(n, hit, dtype=bool)

    def check_model(self, name: str) -> None:
        if name != self.name:
            raise ModelNotFound(
                f"model {name!r} is not served here (this server serves {self.name!r})"
            )

    def encode(self, loaded: Loaded, rows: Sequence[Any], path: str = "instances") -> np.ndarray:
        if not isinstance(rows, list):
            raise BadRequest(f"{path}: must be a list of rows")
        if not rows:
            raise BadRequest(f"{path}: must hold at least one row")
        if len(rows) > self.max_rows:
            raise TooLarge(f"{path}: {len(rows)} rows is over the limit of {self.max_rows}")
        try:
            return loaded.schema.encode_strict(rows, path)
        except FeatureError as e:
            raise Unprocessable(str(e)) from None

    def decode_v1(
        self, raw: bytes
    ) -> tuple[np.ndarray, list[Any] | None, list[list[Any]] | None] | None:
        """The usual V1 body, decoded straight into the stable schema's matrix (the fast path).

        ``{"instances": [{feature: value, ...}, ...], "ids": [...]}`` with every
        feature present and typed as the schema says, or the rows as arrays of
        every value in schema order: one msgspec decode into typed structs,
        then one pass into the matrix, with no dict per row. Returns (matrix,
        ids, rows): rows are None for feature dicts (the log keeps the body as
        it came) and lists for arrays (the log names their values). Returns
        None for anything else (missing or null values, unknown names, wrong
        types, short arrays, a bad body): the general path then reads it, and
        counts, defaults or names the offending field.
        """
        stable = self.stable
        if stable is None:
            return None
        schema = stable.schema
        decoders = self._v1_decoders.get(schema.signature)
        if decoders is None:  # feature dicts first (the usual body), then arrays
            decoders = self._v1_decoders[schema.signature] = tuple(
                msgspec.json.Decoder(
                    msgspec.defstruct(
                        "V1Request",
                        [
                            ("instances", list[schema.row_type(arrays)]),  # type: ignore[misc]
                            ("ids", list[str | int] | None, None),
                        ],
                    )
                )
                for arrays in (False, True)
            )
        for arrays, decoder in enumerate(decoders):
            try:
                doc = decoder.decode(raw)
            except (msgspec.MsgspecError, UnicodeDecodeError):
                # msgspec raises UnicodeDecodeError for invalid UTF-8 in a key: the general
                # path refuses the body with a 400 that says so
                continue
            rows = doc.instances
            if not rows or len(rows) > self.max_rows:
                return None
            if not arrays:
                return schema.encode_typed(rows), doc.ids, None
            listed = [list(astuple(r)) for r in rows]  # taken out once: the matrix and the log
            return schema.encode_typed(listed), doc.ids, listed
        return None

    def _fallback(self, X: np.ndarray) -> tuple[np.ndarray, int | None, str | None]:
        fb = self.spec.serving.fallback
        if fb == "lastGood":
            lg = self.last_good or self.stable
            if lg is not None:
                return lg.predict(X), lg.version, lg.revision
            raise Unavailable("no model is loaded yet and the fallback is lastGood")
        return np.full(X.shape[0], float(fb)), None, None

    def predict(
        self,
        rows: Sequence[Any] | None,
        *,
        key: str | None = None,
        ids: Sequence[Any] | None = None,
        forced_track: str | None = None,
        path: str = "instances",
        raw: bytes | None = None,
        X: np.ndarray | None = None,
    ) -> Result:
        """Answer a request's rows (the hot path: nothing here waits on the network).

        ``raw``, when given, is the request body whose ``instances`` are ``rows``:
        the log then carries those bytes as they came instead of serialising the
        rows again. ``X``, when given, is those rows already encoded for the
        stable schema (:meth:`decode_v1`); ``rows`` may then be None, and are
        read from ``raw`` only if something needs them (a per-row routing key,
        a canary with other features).
        """

        def all_rows() -> Sequence[Any]:
            nonlocal rows
            if rows is None:
                assert raw is not None, "rows, or the body they came in"
                rows = orjson.loads(raw)["instances"]
            return rows

        stable = self.stable
        if stable is None:
            rows = all_rows()
            if self.spec.serving.fallback != "lastGood":
                n = len(rows) if isinstance(rows, list) else 0
                if not n:
                    raise BadRequest(f"{path}: must be a non-empty list of rows")
                self.metrics.fallbacks.labels(reason="no-model").inc()
                value = float(self.spec.serving.fallback)
                return Result(
                    [value] * n, self._new_ids(n, ids), None, None, ["stable"] * n, True, "no-model"
                )
            raise Unavailable("no model version is loaded yet")
        if X is None:
            X = self.encode(stable, all_rows(), path)
        n = X.shape[0]
        if ids is not None and len(ids) != n:
            raise Unprocessable(f"ids: {len(ids)} ids for {n} rows")
        out_ids = self._new_ids(n, ids)
        t0 = time.perf_counter()
        preds = stable.predict(X)
        elapsed = time.perf_counter() - t0
        track = forced_track or "stable"
        tracks = [track] * n
        result = Result(preds.tolist(), out_ids, stable.version, stable.revision, tracks)
        result.models[track] = stable
        canary_mask = self._route(n, key, all_rows) if forced_track is None else None
        canary = self.canary
        if canary_mask is not None and canary is not None and canary_mask.any():
            Xc = (
                X
                if canary.schema.names == stable.schema.names
                else self.encode(canary, all_rows(), path)
            )
            cpred = canary.predict(Xc[canary_mask])
            result.models["canary"] = canary
            for i, p in zip(np.flatnonzero(canary_mask).tolist(), cpred.tolist(), strict=True):
                result.predictions[i] = p
                result.tracks[i] = "canary"
        if elapsed > self.spec.serving.timeout:
            fb, v, rev = self._fallback(X)
            result.predictions = fb.tolist()
            result.version, result.revision = v, rev
            result.fallback, result.fallback_reason = True, "timeout"
            self.metrics.fallbacks.labels(reason="timeout").inc()
        logged_raw = self._queue_log(rows, result, raw)
        if self.routing.shadow and self.canary is not None and forced_track is None:
            shadow = self.canary
            Xs = (
                X
                if shadow.schema.names == stable.schema.names
                else self.encode(shadow, all_rows(), path)
            )
            self._queue_log_track(
                rows, out_ids, shadow.predict(Xs).tolist(), shadow, "shadow", None, raw=logged_raw
            )
        return result

    def _new_ids(self, n: int, given: Sequence[Any] | None) -> Sequence[str]:
        if given is not None:
            return [str(i) for i in given]
        at = self._random_at
        if at >= len(self._random):
            self._random, at = os.urandom(8 * 1024).hex(), 0
        secret, self._random_at = self._random[at : at + 16], at + 16
        return GeneratedIds(f"{self._id_prefix}{next(self._requests):x}-{secret}-", n)

    # -- canary in another image: forwarded ---------------------------------------------
    async def forward(self, path: str, body: bytes, track: str) -> dict[str, Any]:
        rt = self.routing
        assert rt.canary_url is not None and self._http is not None
        resp = await self._http.post(
            f"{rt.canary_url}{path}",
            content=body,
            headers={
                "content-type": "application/json",
                "x-tideline-track": track,
                "x-tideline-forwarded": self._forward_token or "",
            },  # fmt: skip
        )
        if resp.status_code != 200:
            raise Unavailable(f"canary answered {resp.status_code}")
        return orjson.loads(resp.content)

    def trusted_track(self, track: str | None, token: str | None) -> str | None:
        """The track a request names, if one of this model's servers forwarded it; else None.

        Tracks are a closed set (metrics and health are labelled by them), and a
        caller who could set its own track could fail any canary's analysis.
        """
        if track not in ("canary", "shadow") or not token or self._forward_token is None:
            return None
        return track if hmac.compare_digest(token, self._forward_token) else None

    def wants_forward(self, key: str | None) -> str | None:
        """For a canary in another image: 'canary' or 'shadow' when this request goes there too."""
        rt = self.routing
        if not rt.canary or not rt.canary_url:
            return None
        if rt.shadow:
            return "shadow"
        if rt.weight <= 0:
            return None
        hit = (
            route_hash(key) < rt.weight * 100
            if key is not None
            else self._rng.random() * 100 < rt.weight
        )
        return "canary" if hit else None

    # -- logging ---------------------------------------------------------------------------
    def _queue_log(
        self, rows: Sequence[Any] | None, result: Result, raw: bytes | None = None
    ) -> bytes | None:
        """Queue a request's log entries; returns ``raw`` if they carry it (rows read from it)."""
        body, tracks = raw, result.tracks
        if tracks[0] == tracks[-1] and (len(tracks) < 3 or len(set(tracks)) == 1):
            groups: list[tuple[str, Sequence[int] | None]] = [(tracks[0], None)]
        else:
            by_track: dict[str, list[int]] = {}
            for i, t in enumerate(tracks):
                by_track.setdefault(t, []).append(i)
            groups = list(by_track.items())
            raw = None  # rows go to two tracks: each entry names its own
        if raw is not None and rows is not None and not isinstance(rows[0], dict):
            raw = None
        if raw is None and rows is None:  # decoded by the fast path, logged row by row
            assert body is not None
            rows = orjson.loads(body)["instances"]
        for track, idx in groups:
            loaded = None if result.fallback else result.models.get(track)
            self._queue_log_track(
                rows,
                result.ids,
                result.predictions if idx is not None else result.predictions_json(),
                loaded,
                track,
                idx,
                result.fallback_reason,
                raw,
            )
        return raw

    def _queue_log_track(
        self,
        rows: Sequence[Any] | None,
        ids: Sequence[str],
        scores: Sequence[float] | bytes,
        loaded: Loaded | None,
        track: str,
        idx: Sequence[int] | None,
        fallback: str | None = None,
        raw: bytes | None = None,
    ) -> None:
        """Queue one log entry; it is serialised later, by the writer, off the request's time.

        ``scores`` are a JSON array already written (all the request's rows) or
        the floats (the rows ``idx`` picks).
        """
        names = self.stable.schema.names if self.stable is not None else None
        entry = (time.time(), track, loaded, fallback, rows, ids, scores, idx, names, raw)
        queue = self._log
        queue.append(entry)
        self._log_bytes += self._entry_size(entry)
        while len(queue) > 1 and (
            len(queue) > self.log_queue or self._log_bytes > self.log_queue_bytes
        ):
            self._log_bytes -= self._entry_size(queue.popleft())
            self.metrics.log_dropped.inc()
        self._log_event.set()

    @staticmethod
    def _entry_rows(entry: tuple[Any, ...]) -> int:
        """Rows a queued entry logs: all its ids, or the ones its idx picks."""
        return len(entry[5] if entry[7] is None else entry[7])

    @staticmethod
    def _entry_size(entry: tuple[Any, ...]) -> int:
        """Bytes a queued entry holds, about: its request body, or 256 a row without one."""
        raw = entry[9]
        return len(raw) if raw is not None else 256 * DataPlane._entry_rows(entry)

    @staticmethod
    def _serialise(items: list[tuple[Any, ...]]) -> list[dict[bytes, bytes]]:
        """Log entries, columnar, one per (track, model, fallback) for a whole batch of requests.

        ``{"ts", "track", "revision", "version", "fallback", "ids", "scores", "rows"}``,
        ``ts`` being the first request's time: merging a flush's requests into one
        entry makes one XADD out of dozens. Requests whose body is at hand are not
        serialised again: the entry holds ``"requests": [body, ...]`` instead of
        ``"rows"``, the rows being each body's ``instances``, in order. Ids the
        server generated are written as a run, ``[prefix, n]``, among the others.
        """
        groups: dict[tuple[Any, ...], dict[str, Any]] = {}
        for ts, track, loaded, fallback, rows, ids, scores, idx, names, raw in items:
            if idx is not None:
                rows = [rows[i] for i in idx]
                ids = [ids[i] for i in idx]
                scores = [scores[i] for i in idx]
            if raw is None and rows and not isinstance(rows[0], dict) and names is not None:
                rows = [dict(zip(names, r, strict=False)) for r in rows]
            key = (track, id(loaded), fallback, raw is not None)
            entry = groups.get(key)
            if entry is None:
                entry = groups[key] = {
                    "ts": ts,
                    "track": track,
                    "revision": loaded.revision if loaded else None,
                    "version": loaded.version if loaded else None,
                    "fallback": fallback,
                    "ids": [],
                    "scores": [],
                    "rows" if raw is None else "requests": [],
                }
            if isinstance(ids, GeneratedIds):
                entry["ids"].append(ids.run())
            else:
                entry["ids"] += ids
            entry["scores"].append(scores if isinstance(scores, bytes) else orjson.dumps(scores))
            if raw is None:
                entry["rows"] += rows
            else:
                entry["requests"].append(raw)
        out = []
        for entry in groups.values():
            arrays = entry["scores"]  # one JSON array per request: spliced into one
            entry["scores"] = orjson.Fragment(
                b"[" + b",".join([a[1:-1] for a in arrays if len(a) > 2]) + b"]"
            )
            bodies = entry.pop("requests", None)
            data = orjson.dumps(entry)
            if bodies is not None:  # splice the request bodies in as they are (valid JSON)
                parts = [b""] * (2 * len(bodies) + 1)
                parts[0] = data[:-1] + b',"requests":['
                parts[1::2] = bodies
                parts[2:-1:2] = [b","] * (len(bodies) - 1)
                parts[-1] = b"]}"
                data = b"".join(parts)  # each body is copied once
            out.append({b"data": data})
        return out

    async def _write_log(self) -> None:
        # What is queued now, no more: requests answered while this writes wait
        # for the next flush. (Writing until the queue is empty degenerated into
        # an XADD per request whenever requests came faster than Redis answered.)
        left = len(self._log)
        if not left:
            return
        taken: list[tuple[Any, ...]] = []
        rows = entries = 0
        horizon = f"{int((time.time() - self.spec.learning.labelWindow) * 1000)}-0"
        pipe = self.r.pipeline(transaction=False)
        try:
            while left:
                # Serialised 100 requests at a time, with the loop let go in between:
                # at 64 rows a request 100 take ~1.5 ms (500 held the loop up to 8 ms,
                # stalling every request in flight). One round trip for them all: a
                # round trip per 100 fell behind 10k requests/s when Redis was slow,
                # and the queue, grown to 17k entries, made full collections of 15-25 ms.
                batch = [self._log.popleft() for _ in range(min(left, 100))]
                left -= len(batch)
                taken += batch
                for item in batch:
                    rows += self._entry_rows(item)
                    self._log_bytes -= self._entry_size(item)
                for entry in self._serialise(batch):
                    entries += 1
                    # The learner and the monitor need labelWindow of log, no more: trim
                    # by time. (The cap in predictions is applied every second, by
                    # _trim_log: XADD takes one trim, and MINID rules out MAXLEN.)
                    pipe.xadd(self.keys.predictions, entry, minid=horizon, approximate=False)
                if left:
                    await asyncio.sleep(0)
        except asyncio.CancelledError:  # stopped while serialising: nothing was sent
            self._put_back(taken)
            raise
        try:
            await pipe.execute()
        except (redis.exceptions.RedisError, OSError):
            self._put_back(taken)  # keep them for the next try
            raise
        self._logged_rows += rows
        self._logged_entries += entries

    def _put_back(self, taken: list[tuple[Any, ...]]) -> None:
        self._log.extendleft(reversed(taken))
        self._log_bytes += sum(map(self._entry_size, taken))

    async def _trim_log(self) -> None:
        # Exact: an approximate trim drops only whole nodes of 100 entries, and 100
        # entries of a flush each can hold far more than log_maxlen rows.
        await self.r.xtrim(self.keys.predictions, maxlen=self.log_trim_length(), approximate=False)
        self._logged_rows *= 0.98
        self._logged_entries *= 0.98

    def log_trim_length(self) -> int:
        """Entries the prediction stream keeps: about ``log_maxlen`` predictions.

        An entry holds a flush's requests, so its size follows the load: the
        rows per entry this server wrote lately (a half-life of about 35 s)
        turn the cap in rows into a count of entries. Replicas behind one
        Service see the same mix of requests and agree, near enough. Before
        this server wrote anything, an entry counts as one row.
        """
        if self._logged_rows < 1:
            return self.log_maxlen
        return max(1, math.ceil(self.log_maxlen * self._logged_entries / self._logged_rows))

    async def _flush_log(self) -> None:
        backoff = self.log_flush_interval
        while not self._stopping:
            await self._log_event.wait()
            self._log_event.clear()
            await asyncio.sleep(self.log_flush_interval)  # gather a batch
            try:
                await self._write_log()
                backoff = self.log_flush_interval
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.RedisError, OSError) as e:
                log.debug("prediction log not written (%s); %d queued", e, len(self._log))
                self._log_event.set()
                backoff = min(backoff * 2, 2.0)
                await asyncio.sleep(backoff)

    # -- feedback and learning ----------------------------------------------------------
    async def write_stream(self, stream: str, entries: list[bytes]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for e in entries:
            pipe.xadd(stream, {b"data": e})
        try:
            await pipe.execute()
        except (redis.exceptions.RedisError, OSError) as e:
            # the detail (an address, an errno) is for the log, not for any caller
            log.warning("storing %d entries on %s failed: %s", len(entries), stream, e)
            raise Unavailable("store unavailable: nothing was stored, retry") from None

    # -- reporting -------------------------------------------------------------------------
    def observe(self, track: str, seconds: float, n: int, error: bool, fallback: bool) -> None:
        st = self.stats[track]
        st.requests += 1
        st.predictions += n
        st.errors += int(error)
        st.fallbacks += int(fallback)
        st.latencies.append(seconds)

    async def _report(self) -> None:
        """Every second: this server's counters and latency percentiles per track, in Redis."""
        while not self._stopping:
            await asyncio.sleep(1.0)
            self.metrics.flush()  # other workers' scrapes read these (--workers N)
            stable, canary = self.stable, self.canary
            report = {
                "ts": time.time(),
                "stable": {"revision": stable.revision, "version": stable.version}
                if stable
                else None,
                "canary": {"revision": canary.revision, "version": canary.version}
                if canary
                else None,
                "tracks": {t: s.summary() for t, s in self.stats.items()},
                "logQueue": len(self._log),
            }
            try:
                await self.r.hset(self.keys.servers, self.instance, orjson.dumps(report))
                await self._trim_log()
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.RedisError, OSError):
                pass

    def model_age(self) -> float:
        s = self.stable
        return time.time() - s.created if s is not None and s.created else 0.0
