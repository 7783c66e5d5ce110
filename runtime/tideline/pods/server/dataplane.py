"""The data plane behind the HTTP routes and the gRPC service: versions, routing, fallback, logging.

The routes in :mod:`tideline.pods.server.api` (and the RPCs in :mod:`~.oip_grpc`) only parse
and answer their protocol; this
module does the rest, and waits on Redis on the request path only for a request that
brings its own prediction ids (one round trip binds them before the answer, so no other
request can take them; generated ids need none):

* **Versions.** The served version of the stable revision (and of a canary
  revision running the same image) is loaded off the request path
  (:class:`tideline.pods.server.versions.ModelVersions`), and replaces the old with
  one attribute assignment: a request sees the old model or the new one.
* **Routing.** The operator writes ``tideline:{<ns>/<model>}:routing``
  (stable and canary revisions, canary weight, shadow, canary URL). A
  request goes to the canary when the hash of its routing key (header
  ``x-tideline-key``, or ``spec.serving.routingKey`` per row) falls under the
  weight, so one entity always sees one track; without a key, at random by
  weight (:meth:`tideline.contracts.Routing.to_canary`). A shadow
  canary answers too, but only its log sees it.
* **Fallback.** Past ``spec.serving.timeout``, or without a model, the
  answer is the ``lastGood`` version's (or the fixed ``fallback.value``; a multiclass
  model's ``{class: NAME}``: that class, one-hot), flagged in the response and in metrics.
* **Scores.** A row's scores are one number (binary, regression), or the probabilities
  of a multiclass model's ``k`` classes: a :class:`Result` holds those as a float32
  ``(n, k)`` array, which the log and the answers write as JSON in float32's shortest
  form (``0.6666667``: 40 % fewer bytes than float64's, and at 64 rows of 10 classes
  written in half the time; the binary and regression path is as it was).
* **A team's model** (``algorithm: custom`` or ``river``) answers in a thread of its own,
  waited for at most the timeout (:mod:`tideline.pods.server.usercode`): one that raises,
  gives scores that cannot be served, runs past the timeout or is still stuck in a call
  that did, costs that answer and no other (:meth:`DataPlane.predict_guarded`). The
  built-in learners answer on the event loop, as they always did (:meth:`DataPlane.predict`).
* **Logging.** Every answered request is logged, off the request path
  (:class:`tideline.pods.server.logwriter.PredictionLog`: its ids name its slot in
  this process's log; through a Redis outage the queue holds up to
  ``log_queue`` requests and about ``log_queue_bytes`` of them, the oldest
  dropped and counted beyond that, while the server keeps answering). A row is
  logged within a size (:func:`tideline.predlog.row_bytes`): the log holds what
  was predicted, not whatever padding was sent.
* **Counting.** Every answer counts on its track in the ``servers`` hash the
  monitor reads: ``errors`` (5xx, and calls forwarded to a canary that failed),
  ``refused`` (4xx: the client's to fix), ``shed`` (503 past the concurrency limit).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hmac
import logging
import os
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson
import redis.exceptions

from tideline import predlog
from tideline.contracts import Keys, Routing
from tideline.features import FeatureError, FeatureSchema
from tideline.pods.metrics import ServerMetrics
from tideline.pods.server.errors import (
    BadRequest,
    ForwardFailed,
    ModelNotFound,
    TooLarge,
    Unavailable,
    Unprocessable,
)
from tideline.pods.server.logwriter import GeneratedIds, PredictionLog, Slot
from tideline.pods.server.usercode import (
    MODEL_ERROR,
    TIMEOUT,
    Call,
    Failure,
    FailureLog,
    Workers,
    error_line,
    settled,
)
from tideline.pods.server.versions import Loaded, ModelVersions
from tideline.spec import OnlineModel
from tideline.store import connect_async
from tideline.tasks import Task

log = logging.getLogger("tideline.server")


# --------------------------------------------------------------------------- state
# an answer's headers a forwarding server passes on (binary infer answers need them)
_PASSED_ON = frozenset({"content-type", "inference-header-content-length"})


@dataclass
class Result:
    # each row's scores: a number (binary, regression); a multiclass model's, a float32
    # (n, k) array of its classes' probabilities (column i is classes[i])
    predictions: list[float] | np.ndarray
    ids: Sequence[str]
    version: int | None
    revision: str | None
    tracks: list[str]
    fallback: bool = False
    fallback_reason: str | None = None
    models: dict[str, Loaded] = field(default_factory=dict)  # which model answered each track
    # the tracks whose model failed on this request, and why (counted by DataPlane.observe)
    failed: dict[str, str] | None = None
    secret: str = ""  # the request's secret, in its log entry
    slot: Slot | None = None  # where the request is logged (predlog)
    classes: tuple[str, ...] | None = None  # a multiclass model's class names
    _json: bytes | None = field(default=None, repr=False)

    def predictions_json(self) -> bytes:
        """The predictions as a JSON array, written once for both the log and the response.

        Formatting floats is most of what serialising a prediction costs: the
        log entry and the answer share these bytes. (Call it once the
        predictions are final: the bytes are kept.)
        """
        if self._json is None:
            p = self.predictions
            self._json = orjson.dumps(p) if self.classes is None else _rows_json(p)
        return self._json

    def classes_answered(self) -> list[str]:
        """Each row's answer (a multiclass model's): the name of its most probable class."""
        assert self.classes is not None, "a multiclass model's result"
        names = self.classes
        return [names[i] for i in np.asarray(self.predictions).argmax(axis=1).tolist()]


def _rows_json(p: Any) -> bytes:
    """Rows of probabilities as a JSON array of arrays, float32's shortest form.

    >>> _rows_json(np.array([[1 / 3, 2 / 3]], dtype=np.float32))
    b'[[0.33333334,0.6666667]]'
    """
    return orjson.dumps(p, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass
class TrackStats:
    """What a server reports per track every second, for the monitor and operator.

    Every answer on a predict route counts, once (issue 30: only 200s did, so
    ``maxErrorRate`` and a canary's error check never saw a server fail):

    ``requests``
        requests the track answered or failed: 2xx, and 5xx (503 with no version
        loaded, a model that raised, the store or a canary that failed);
    ``errors``
        the 5xx among them, the calls forwarded to a canary in another image
        that failed (:meth:`DataPlane.forward_failed`), the answers of a track's model
        that raised or gave scores that cannot be served (the fallback answered: the
        version is at fault all the same), and an in-process canary's calls that
        failed in any way (the stable answered its rows, as for a canary in another
        image); ``errors / requests`` is the error rate ``maxErrorRate`` and the
        canary analysis read;
    ``refused``
        4xx: a request the client has to fix (bad input, too large, unknown model
        or version). Neither a request nor an error: bad input from one client
        must not trip a guardrail that rolls a model back;
    ``shed``
        503s past the concurrency limit (:mod:`tideline.pods.server.limits`):
        an overload, which no model version causes or cures, so not an error.
    """

    requests: int = 0
    errors: int = 0
    refused: int = 0
    shed: int = 0
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
            "refused": self.refused,
            "shed": self.shed,
            "fallbacks": self.fallbacks,
            "predictions": self.predictions,
        }
        if len(lat):
            p50, p95, p99 = np.percentile(lat, [50, 95, 99])
            out.update({"p50": float(p50), "p95": float(p95), "p99": float(p99)})
        return out


class _Rows:
    """A request's rows: as given, or read from its body the first time something needs them."""

    __slots__ = ("given", "raw")

    def __init__(self, rows: Sequence[Any] | None, raw: bytes | None) -> None:
        self.given = rows
        self.raw = raw

    def rows(self) -> Sequence[Any]:
        if self.given is None:
            assert self.raw is not None, "rows, or the body they came in"
            self.given = orjson.loads(self.raw)["instances"]
        return self.given


def _put(result: Result, mask: np.ndarray, scores: np.ndarray, track: str) -> None:
    """The rows of ``mask`` answered by ``track`` with ``scores``."""
    at = np.flatnonzero(mask)
    preds = result.predictions
    if isinstance(preds, np.ndarray):  # (multiclass: rows of probabilities)
        preds[at] = scores
        for i in at.tolist():
            result.tracks[i] = track
        return
    for i, p in zip(at.tolist(), scores.tolist(), strict=True):
        preds[i] = p
        result.tracks[i] = track


def _ids_for(n: int, ids: Sequence[Any] | None) -> int:
    """``n``, when a client's ids (if any) name that many rows."""
    if ids is not None and len(ids) != n:
        raise Unprocessable(f"ids: {len(ids)} ids for {n} rows")
    return n


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
        log_flush_interval: float = 0.02,  # see PredictionLog
        log_queue: int = 100_000,
        log_queue_bytes: int = 256 << 20,
        max_rows: int = 10_000,
    ) -> None:
        self.model = model
        self.name = model.name
        self.spec = model.spec
        self.task = Task.of(self.spec.model)
        self.classes = self.task.classes  # (read on the hot path: None unless multiclass)
        fallback = self.spec.serving.fallback
        # the fixed fallback's answer to a row, as its scores (None: lastGood answers)
        self._fixed_row = None if fallback == "lastGood" else self.task.answer_of(fallback)
        self.keys = Keys(model.namespace, model.name)
        self.redis_url = redis_url
        self.metrics = metrics or ServerMetrics(None)
        # this process's field in the servers hash: the pod's name and the process's, since
        # `tideline server --workers N` runs N of them in a pod, each counting its own answers
        # (with the pod's name alone they overwrote one another's totals)
        self.instance = instance or f"{os.environ.get('HOSTNAME') or 'server'}-{os.getpid()}"
        self.max_rows = max_rows
        self.versions = ModelVersions(model, self.keys, self.metrics, poll_interval)
        self.log = PredictionLog(self.keys, self.spec.learning.labelWindow, self.metrics,
                                 flush_interval=log_flush_interval, max_requests=log_queue,
                                 max_bytes=log_queue_bytes,
                                 row_bytes=predlog.row_bytes(len(self.spec.model.features)))  # fmt: skip
        self._tasks: list[asyncio.Task[Any]] = []
        # The background loops also end on this, not only on cancellation: redis-py can
        # turn a cancellation that lands as a read times out into a TimeoutError
        # (redis/redis-py#2551), which they take for a lost connection and retry.
        self._stopping = False
        self._r: Any = None  # redis.asyncio.Redis; bytes replies (see tideline.pods.learner)
        self._http: httpx.AsyncClient | None = None
        # A track is chosen by this model's routing, never by a caller: only a request
        # forwarded by one of its own servers (it carries this token) may name one.
        self._forward_token: str | None = None
        self._rng = random.Random()
        self.stats: dict[str, TrackStats] = collections.defaultdict(TrackStats)
        self._kafka: Any = None  # the labels' producer, with spec.source.kafka (made when used)
        # the threads of the loaded versions of a team's model (tideline.pods.server.usercode);
        # ``guarded``: one is loaded, and requests are answered by predict_guarded
        self.workers = Workers(self.spec.serving.timeout)
        self.guarded = False
        self._failures = FailureLog(log)  # a model's failures, once a minute each

    # -- life cycle ----------------------------------------------------------------------
    @property
    def r(self) -> Any:
        assert self._r is not None, "DataPlane.start() first"
        return self._r

    async def start(self) -> None:
        self._r = connect_async(self.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._http = httpx.AsyncClient(timeout=max(self.spec.serving.timeout * 20, 1.0))
        try:
            await self.refresh()
        except (redis.exceptions.RedisError, OSError) as e:
            log.warning("redis unavailable at start (%s); will retry", e)
        loop = asyncio.get_running_loop()
        self._stopping = self.log.stopping = self.versions.stopping = False
        self._tasks = [
            loop.create_task(
                self.versions.subscribe(self.r, self.refresh), name="tideline-subscribe"
            ),
            loop.create_task(self.versions.poll(self.refresh), name="tideline-poll"),
            loop.create_task(self.log.run(self.r), name="tideline-log"),
            loop.create_task(self._report(), name="tideline-report"),
        ]

    async def stop(self) -> None:
        self._stopping = self.log.stopping = self.versions.stopping = True
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=2.0)
            for t in stuck:
                log.warning("task %s did not stop", t.get_name())
        self._tasks = []
        try:  # what is queued is written, if Redis is there
            await asyncio.wait_for(self.log.write(self.r), timeout=2.0)
        except (redis.exceptions.RedisError, OSError, TimeoutError):
            log.warning("redis unavailable at stop: %d logged requests lost", self.log.requests)
        with contextlib.suppress(redis.exceptions.RedisError, OSError, TimeoutError):
            # a process that stops takes its counters with it (the monitor keeps what it
            # counted of them): the hash holds the processes that answer, not every one that did
            await asyncio.wait_for(self.r.hdel(self.keys.servers, self.instance), timeout=1.0)
        self.workers.close()
        self.guarded = False
        if self._http is not None:
            await self._http.aclose()
        if self._kafka is not None:
            await asyncio.to_thread(self._kafka.close)
        if self._r is not None:
            await self._r.aclose()

    @property
    def ready(self) -> bool:
        return self.stable is not None and self.versions.warmed

    # -- versions (tideline.pods.server.versions): read on the request path, swapped off it -----
    @property
    def stable(self) -> Loaded | None:
        return self.versions.stable

    @property
    def canary(self) -> Loaded | None:
        return self.versions.canary

    @property
    def last_good(self) -> Loaded | None:
        return self.versions.last_good

    @property
    def routing(self) -> Routing:
        return self.versions.routing

    async def refresh(self) -> None:
        """The versions and routing read again, and the servers' shared forwarding token."""
        # One token per model, shared by its servers through Redis: the first sets it. A
        # server that holds one puts it back in a store that lost it (NX: the first back
        # wins, and every server takes the store's), so forwarding survives a store reset.
        await self.r.set(
            self.keys.forward_token, self._forward_token or secrets.token_hex(32), nx=True
        )
        token = await self.r.get(self.keys.forward_token)
        self._forward_token = token.decode() if token else self._forward_token
        try:
            await self.versions.refresh(self.r)
        finally:  # (what is held decides, whatever part of the refresh failed)
            self.guarded = self.workers.keep((self.stable, self.canary, self.last_good))

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
        feature = self.spec.serving.routingKey
        rows = all_rows() if feature is not None else None
        if feature is not None and rows and isinstance(rows[0], dict):
            return np.array(
                [rt.to_canary(str(r.get(feature)), self._rng) for r in rows], dtype=bool
            )
        return np.full(n, rt.to_canary(key, self._rng), dtype=bool)

    def check_model(self, name: str) -> None:
        if name != self.name:
            raise ModelNotFound(
                f"model {name!r} is not served here (this server serves {self.name!r})"
            )

    def _known_names(self, rows: Sequence[Any], path: str) -> None:
        """Every name in these feature objects is a feature of a served model (the stable
        one's, or a canary's: a canary may add a feature clients already send)."""
        if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
            return
        known = self.stable.schema.name_set if self.stable is not None else frozenset()
        if self.canary is not None:
            known = known | self.canary.schema.name_set
        try:
            extra = set().union(*rows) - known  # one C-level pass (the usual case: empty)
        except TypeError:  # a row that is not an object: the encoder names it
            return
        if not extra:
            return
        i, name = next((i, k) for i, r in enumerate(rows) if isinstance(r, dict) for k in r
                       if k in extra)  # fmt: skip
        names = self.stable.schema.names if self.stable is not None else []
        raise BadRequest(
            f"{path}[{i}].{name}: not a feature of this model ({', '.join(names)}); send the "
            "header X-Tideline-Unknown-Features: ignore to have unknown names ignored (counted)"
        )

    @functools.cached_property
    def spec_schema(self) -> FeatureSchema:
        """The features the spec names (rows read before any version is loaded)."""
        return FeatureSchema.from_spec(self.spec.model.features)

    def check_version(self, version: str) -> None:
        """A version named in a route: the one served now (the unversioned routes always are)."""
        served = self.stable.version if self.stable is not None else None
        if version != str(served):
            raise ModelNotFound(
                f"version {version!r} of {self.name!r} is not served here (serving "
                f"{served if served is not None else 'none yet'}; a model learning online moves "
                "to new versions: the unversioned route answers with the served one)"
            )

    def _count(self, rows: Any, path: str, ids: Sequence[Any] | None = None) -> int:
        """How many rows a request holds, refusing what no model would answer: not a list,
        none, over the limit, or another count of ids."""
        if not isinstance(rows, list):
            raise BadRequest(f"{path}: must be a list of rows")
        if not rows:
            raise BadRequest(f"{path}: must hold at least one row")
        if len(rows) > self.max_rows:
            raise TooLarge(f"{path}: {len(rows)} rows is over the limit of {self.max_rows}")
        return _ids_for(len(rows), ids)

    def encode(
        self, schema: FeatureSchema, rows: Sequence[Any], path: str = "instances"
    ) -> np.ndarray:
        """A request's rows as ``schema`` reads them: what no model would answer is a 400 or
        413 (:meth:`_count`), a value of the wrong type a 422 naming it."""
        self._count(rows, path)
        try:
            return schema.encode_strict(rows, path)
        except FeatureError as e:
            raise Unprocessable(str(e)) from None

    def _fallback(self, X: np.ndarray) -> tuple[np.ndarray, int | None, str | None]:
        fb = self.spec.serving.fallback
        if fb == "lastGood":
            lg = self.last_good or self.stable
            if lg is not None:
                return lg.predict(X), lg.version, lg.revision
            raise Unavailable("no model is loaded yet and the fallback is lastGood")
        return self._fixed(X.shape[0]), None, None

    def _fixed(self, n: int) -> np.ndarray:
        """The fixed fallback's scores for ``n`` rows (multiclass: its class, one-hot)."""
        assert self._fixed_row is not None, "a fixed fallback, not lastGood"
        return np.broadcast_to(self._fixed_row, self.task.rows(n))

    def _scores(self, p: np.ndarray) -> list[float] | np.ndarray:
        """Scores as a :class:`Result` holds them: a list, or float32 rows (multiclass)."""
        return p.tolist() if self.classes is None else p.astype(np.float32, order="C")

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
        unknown_ok: bool = False,
    ) -> Result:
        """Answer a request's rows (the hot path: nothing here waits on the network).

        A feature name no served model knows is refused (a typo would otherwise be
        a default, silently), unless ``unknown_ok``: then it is ignored and counted.

        ``raw``, when given, is the request body whose ``instances`` are ``rows``:
        the log then carries those bytes as they came instead of serialising the
        rows again. ``X``, when given, is those rows already encoded for the
        stable schema (:meth:`tideline.pods.server.protocols.V1.typed`); ``rows`` may
        then be None, and are read from ``raw`` only if something needs them (a
        per-row routing key, a canary with other features).
        """
        body = _Rows(rows, raw)
        stable = self.stable
        if stable is None:
            return self._without_model(body, ids, path, raw)
        if X is None:  # (the typed fast path admits no unknown name)
            if not unknown_ok:
                self._known_names(body.rows(), path)
            X = self.encode(stable.schema, body.rows(), path)
        n = _ids_for(X.shape[0], ids)
        out_ids, slot, secret = self.log.slot(n, ids)
        t0 = time.perf_counter()
        preds = stable.predict(X)
        elapsed = time.perf_counter() - t0
        track = forced_track or "stable"
        classes = self.classes  # (self._scores, inlined: the hot path)
        scores = preds.tolist() if classes is None else preds.astype(np.float32, order="C")
        result = Result(scores, out_ids, stable.version, stable.revision, [track] * n,
                        slot=slot, secret=secret, classes=classes)  # fmt: skip
        result.models[track] = stable
        shadow = None
        if forced_track is None:  # (a forwarded request was routed by the server it came to)
            self._canary_rows(result, X, key, body, path)
            shadow = self._shadow_scores(X, body, path)
        if elapsed > self.spec.serving.timeout:
            fb, result.version, result.revision = self._fallback(X)
            result.predictions = self._scores(fb)
            result.fallback, result.fallback_reason = True, TIMEOUT
            self.metrics.fallbacks.labels(reason=TIMEOUT).inc()
            self.metrics.model_errors.labels(track=track, reason=TIMEOUT).inc()
        self._queue_log(body.given, result, raw, shadow)
        return result

    async def predict_guarded(
        self,
        rows: Sequence[Any] | None,
        *,
        key: str | None = None,
        ids: Sequence[Any] | None = None,
        forced_track: str | None = None,
        path: str = "instances",
        raw: bytes | None = None,
        X: np.ndarray | None = None,
        unknown_ok: bool = False,
    ) -> Result:
        """:meth:`predict` while a team's model is loaded (:attr:`guarded`).

        Its calls run in its thread (:mod:`tideline.pods.server.usercode`; a built-in's
        on the event loop, as in :meth:`predict`), every model a request needs is asked
        at once, and the request waits for them until ``spec.serving.timeout`` has
        passed. A model that fails - it raised or gave scores that cannot be served
        (``model-error``), ran past the timeout (``timeout``), or is still in a call
        that did (``busy``) - costs that answer, counted
        (``tideline_server_model_errors_total{track, reason}``) and logged once a minute:

        * the stable's: the request's rows get the fallback, flagged with the reason,
          as a timeout's always did. With ``fallback: lastGood`` the lastGood version
          answers (given a timeout of its own); when it is the version that failed (or
          none is loaded) or it fails too, the answer is :class:`Unavailable` (503)
          naming why - the error's last line, never a traceback;
        * the canary's: its rows keep the stable's answer (the stable scores every
          row), and the call counts as an error of the canary track, as a call
          forwarded to a canary in another image that fails does: its analysis sees it;
        * the shadow's: the request is logged without shadow scores.

        The request's log slot is taken once the models have answered: nothing awaits
        after it, so the log's writer never sends a slot still waiting for its answer.
        """
        body = _Rows(rows, raw)
        stable, canary = self.stable, self.canary
        if stable is None:
            return self._without_model(body, ids, path, raw)
        if X is None:  # (the typed fast path admits no unknown name)
            if not unknown_ok:
                self._known_names(body.rows(), path)
            X = self.encode(stable.schema, body.rows(), path)
        n = _ids_for(X.shape[0], ids)
        track = forced_track or "stable"
        # what each model is asked (as _canary_rows and _shadow_scores choose), all encoded
        # before any is asked: a row refused is refused before any model runs
        todo: dict[str, tuple[Loaded, np.ndarray]] = {track: (stable, X)}
        mask = None
        if forced_track is None and canary is not None:
            mask = self._route(n, key, body.rows)
            if mask is not None and mask.any():
                todo["canary"] = (canary, self._for(canary, X, body, path)[mask])
            elif self.routing.shadow:
                todo["shadow"] = (canary, self._for(canary, X, body, path))
        timeout = self.spec.serving.timeout
        deadline = time.perf_counter() + timeout
        asked = {t: (loaded, self._ask(loaded, rows)) for t, (loaded, rows) in todo.items()}
        answers: dict[str, np.ndarray] = {}
        failed: dict[str, Failure] = {}
        for t, (loaded, call) in asked.items():
            got = await settled(call, deadline, timeout)
            if isinstance(got, Failure):
                failed[t] = got
                self._model_failed(t, loaded, got)
            else:
                answers[t] = got
        own = answers.get(track)
        if own is None:  # the stable failed: the fallback answers every row (or no one can)
            scores, version, revision = await self._fallback_after(stable, failed[track], X)
        else:
            scores, version, revision = own, stable.version, stable.revision
        out_ids, slot, secret = self.log.slot(n, ids)
        result = Result(self._scores(scores), out_ids, version, revision, [track] * n,
                        slot=slot, secret=secret, classes=self.classes)  # fmt: skip
        if own is not None and "canary" in answers:
            assert mask is not None
            _put(result, mask, answers["canary"], "canary")
        result.models[track] = stable
        if own is None:
            reason = failed[track].reason
            result.fallback, result.fallback_reason = True, reason
            self.metrics.fallbacks.labels(reason=reason).inc()
        elif canary is not None and "canary" in answers:
            result.models["canary"] = canary
        result.failed = {t: f.reason for t, f in failed.items()} or None
        shadow = None
        if "shadow" in answers and canary is not None:
            shadow = canary.revision, canary.version, answers["shadow"].tolist()
        self._queue_log(body.given, result, raw, shadow)
        return result

    def _ask(self, loaded: Loaded, X: np.ndarray) -> Call:
        """Ask ``loaded`` for the scores of ``X``: a team's model in its thread (await the call
        with :func:`~tideline.pods.server.usercode.settled`), a built-in here and now."""
        worker = self.workers.of(loaded)
        if worker is not None:
            return worker.submit(X)
        t0 = time.perf_counter()
        try:
            scores = loaded.predict(X)
        except Exception as e:  # (a bug of ours: answered like a team's model's, all the same)
            return Failure(MODEL_ERROR, error_line(e))
        timeout = self.spec.serving.timeout
        if time.perf_counter() - t0 > timeout:
            return Failure(TIMEOUT, f"answered past serving.timeout ({timeout * 1000:.4g} ms)")
        return scores

    def _model_failed(self, track: str, loaded: Loaded, failure: Failure) -> None:
        """A model that failed a request: counted, and logged once a minute per message."""
        self.metrics.model_errors.labels(track=track, reason=failure.reason).inc()
        self._failures.note(f"{track} model {loaded.revision} v{loaded.version} failed "
                            f"({failure.reason}): {failure.message}")  # fmt: skip

    async def _fallback_after(
        self, failed: Loaded, why: Failure, X: np.ndarray
    ) -> tuple[np.ndarray, int | None, str | None]:
        """The fallback's answer to rows the version ``failed`` could not answer (see
        :meth:`predict_guarded`); :class:`Unavailable` naming why when it has none."""
        if self._fixed_row is not None:
            return self._fixed(X.shape[0]), None, None
        cause = f"{why.reason}: {failed.revision} v{failed.version}: {why.message}"
        lg = self.last_good
        if lg is None:
            raise Unavailable(f"{cause}; the fallback is lastGood, and none is loaded")
        if lg is failed or (lg.revision, lg.version) == (failed.revision, failed.version):
            raise Unavailable(f"{cause}; the fallback is lastGood, which is that version")
        timeout = self.spec.serving.timeout
        scores = await settled(self._ask(lg, X), time.perf_counter() + timeout, timeout)
        if isinstance(scores, Failure):
            self._model_failed("stable", lg, scores)
            raise Unavailable(f"{cause}; the fallback, lastGood {lg.revision} v{lg.version}, "
                              f"failed too ({scores.reason}: {scores.message})")  # fmt: skip
        return scores, lg.version, lg.revision

    def _without_model(
        self, body: _Rows, ids: Sequence[Any] | None, path: str, raw: bytes | None
    ) -> Result:
        """No version is loaded yet: the fixed fallback value answers (``lastGood``: 503)."""
        if self.spec.serving.fallback == "lastGood":
            raise Unavailable("no model version is loaded yet")
        rows = body.rows()
        n = self._count(rows, path, ids)
        self.metrics.fallbacks.labels(reason="no-model").inc()
        out_ids, slot, secret = self.log.slot(n, ids)
        result = Result(self._scores(self._fixed(n)), out_ids, None, None, ["stable"] * n,
                        True, "no-model", secret=secret, slot=slot,
                        classes=self.classes)  # fmt: skip
        self._queue_log(rows, result, raw)
        return result

    def _for(self, loaded: Loaded, X: np.ndarray, body: _Rows, path: str) -> np.ndarray:
        """The rows for another served version: ``X`` when it reads the same features."""
        stable = self.stable
        if stable is not None and loaded.schema.names == stable.schema.names:
            return X
        return self.encode(loaded.schema, body.rows(), path)

    def _canary_rows(
        self, result: Result, X: np.ndarray, key: str | None, body: _Rows, path: str
    ) -> None:
        """The rows routing sends to an in-process canary, answered by it."""
        canary = self.canary
        mask = self._route(X.shape[0], key, body.rows)
        if mask is None or canary is None or not mask.any():
            return
        scores = canary.predict(self._for(canary, X, body, path)[mask])
        result.models["canary"] = canary
        _put(result, mask, scores, "canary")

    def _shadow_scores(
        self, X: np.ndarray, body: _Rows, path: str
    ) -> tuple[str, int, list[Any]] | None:
        """A shadow canary's scores: they go in the request's log entry (labels judge it too);
        a multiclass model's, a list of probabilities a row."""
        sh = self.canary
        if not self.routing.shadow or sh is None:
            return None
        return sh.revision, sh.version, sh.predict(self._for(sh, X, body, path)).tolist()

    # -- canary in another image: forwarded ---------------------------------------------
    async def forward(
        self, path: str, body: bytes, track: str, headers: dict[str, str] | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The canary's answer to a request (its body, and the headers to pass on);
        :class:`ForwardFailed` when there is none.

        ``headers``: the request's own that say how to read its body (a binary
        infer request's header length, its content encoding)."""
        rt = self.routing
        assert rt.canary_url is not None and self._http is not None
        try:
            resp = await self._http.post(
                f"{rt.canary_url}{path}",
                content=body,
                headers={
                    "content-type": "application/json",
                    **(headers or {}),
                    "x-tideline-track": track,
                    "x-tideline-forwarded": self._forward_token or "",
                },  # fmt: skip
            )
        except httpx.HTTPError as e:  # refused, reset, timed out: no answer at all
            raise ForwardFailed(f"canary unreachable ({type(e).__name__})", None) from None
        if resp.status_code != 200:
            raise ForwardFailed(f"canary answered {resp.status_code}", resp.status_code)
        passed = {k: v for k, v in resp.headers.items() if k.lower() in _PASSED_ON}
        return resp.content, passed

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
        return "canary" if rt.to_canary(key, self._rng) else None

    # -- logging ---------------------------------------------------------------------------
    def _queue_log(
        self,
        rows: Sequence[Any] | None,
        result: Result,
        raw: bytes | None,
        shadow: tuple[str, int, list[Any]] | None = None,
    ) -> None:
        """Fill the request's slot in the log (:class:`PredictionLog`): who answered, with
        what. The body is logged as it came when there is one (rows are its
        ``instances``), else the rows; rows given as arrays are named by the feature names
        of the schema that read them: the stable one's, or with none loaded the spec's (a
        fallback's rows were logged unnamed, and no label could join them)."""
        assert result.slot is not None
        tracks = result.tracks
        one_track = tracks[0] == tracks[-1] and (len(tracks) < 3 or len(set(tracks)) == 1)
        names = None
        if rows is not None and len(rows) > 0 and not isinstance(rows[0], dict):
            stable = self.stable
            names = list((stable.schema if stable is not None else self.spec_schema).names)
        meta = predlog.Meta(
            secret=result.secret,
            track=tracks[0],
            tracks=None if one_track else tracks,
            models={}
            if result.fallback
            else {t: (m.revision, m.version) for t, m in result.models.items()},  # fmt: skip
            fallback=result.fallback_reason,
            ids=None if isinstance(result.ids, GeneratedIds) else list(result.ids),
            names=names,
            shadow=shadow,
        )
        body = raw if raw is not None else (rows if rows is not None else [])
        size = len(raw) if raw is not None else 256 * len(tracks)
        scores = result.predictions_json()
        if result.classes is not None:  # k probabilities a row: they can outweigh the rows
            size += len(scores)
        self.log.fill(result.slot, meta, scores, body, size)

    # -- feedback and learning ----------------------------------------------------------
    async def write_labels(
        self, kind: str, entries: list[bytes], ids: list[str] | None = None
    ) -> None:
        """Labelled samples (``kind`` samples) or feedback for the learner and the monitor:
        onto the model's Redis stream, or its Kafka topic (``spec.source.kafka``), a label
        keyed by its prediction's ``ids`` (one partition for one prediction's labels: the
        first sent is the first read, and wins). On Redis a request's labels are one packed
        entry (:func:`tideline.contracts.decode_feedback_entry`)."""
        kafka = self.spec.source.kafka
        if kafka is not None:
            keys = [i.encode() for i in ids] if ids is not None else None
            await self._produce(kind, getattr(kafka, kind), entries, keys)
            return
        stream = self.keys.samples if kind == "samples" else self.keys.feedback
        if kind == "feedback" and len(entries) > 1:  # one entry of them all: one read, one ack
            entries = [b'{"feedback":[' + b",".join(entries) + b"]}"]
        pipe = self.r.pipeline(transaction=False)
        for e in entries:
            pipe.xadd(stream, {b"data": e})
        try:
            await pipe.execute()
        except (redis.exceptions.RedisError, OSError) as e:
            # the detail (an address, an errno) is for the log, not for any caller
            log.warning("storing %d entries on %s failed: %s", len(entries), stream, e)
            raise Unavailable("store unavailable: nothing was stored, retry") from None

    async def _produce(
        self, kind: str, topic: str | None, entries: list[bytes], keys: list[bytes] | None
    ) -> None:
        from tideline.pods.kafka import KafkaError, KafkaWriter

        if topic is None:
            raise ModelNotFound(
                f"this model learns from Kafka and has no {kind} topic "
                f"(spec.source.kafka.topics.{kind})"
            )
        if self._kafka is None:
            self._kafka = KafkaWriter(self.model)
        try:
            await self._kafka.write(topic, entries, keys)
        except KafkaError as e:
            log.warning("producing %d messages to %s failed: %s", len(entries), topic, e)
            # a label sent twice is learned once (the second is a duplicate): retrying is safe
            raise Unavailable("the Kafka brokers did not store it all in time: retry") from None

    # -- reporting -------------------------------------------------------------------------
    def observe(
        self, track: str, seconds: float, n: int, status: int, fallback: bool = False,
        failed: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        """One answer of a predict route, by its HTTP status (see :class:`TrackStats`);
        ``failed``: the tracks whose model failed on it (:attr:`Result.failed`)."""
        st = self.stats[track]
        if status < 400:
            st.requests += 1
            st.predictions += n
            st.fallbacks += fallback
            st.latencies.append(seconds)  # (the latency of answers: a fast 503 is no speed-up)
            if failed:
                for t, reason in failed.items():
                    if t == track and reason == MODEL_ERROR:  # a faulty version, whoever answered
                        st.errors += 1
                    elif t == "canary" and t != track:  # the stable answered the canary's rows
                        self.forward_failed(t)
        elif status < 500:
            st.refused += 1
        else:
            st.requests += 1
            st.errors += 1

    def forward_failed(self, track: str) -> None:
        """A call forwarded to a canary in another image that got no answer, or a refusal
        (the stable servers took the request): an error of that track, counted here since
        the canary's servers never counted it. (A 5xx they answer, they count themselves.)"""
        st = self.stats[track]
        st.requests += 1
        st.errors += 1

    async def _report(self) -> None:
        """Every second: this server's counters and latency percentiles per track, in Redis."""
        while not self._stopping:
            await asyncio.sleep(1.0)
            self.metrics.flush()  # other workers' scrapes read these (--workers N)
            stable, canary = self.stable, self.canary
            if stable is not None:
                self.metrics.count_missing(stable.schema)
                self.metrics.model_age.set(self.model_age())
            report = {
                "ts": time.time(),
                "stable": {"revision": stable.revision, "version": stable.version}
                if stable
                else None,
                "canary": {"revision": canary.revision, "version": canary.version}
                if canary
                else None,
                "tracks": {t: s.summary() for t, s in self.stats.items()},
                "logQueue": self.log.requests,
            }
            gone = time.time() - predlog.retention(self.spec.learning.labelWindow) - 60
            try:
                await self.r.hset(self.keys.servers, self.instance, orjson.dumps(report))
                await self.r.zremrangebyscore(self.keys.logs, "-inf", gone)
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.RedisError, OSError):
                pass

    def model_age(self) -> float:
        s = self.stable
        return time.time() - s.created if s is not None and s.created else 0.0
