"""HTTP only: KServe V1, Open Inference Protocol V2, feedback and learning routes.

A predict route reads the body with its protocol (:mod:`tideline.pods.server.protocols`:
msgspec into typed rows for the usual V1 body, orjson for the rest; no
pydantic model on the hot path, which costs a typical FastAPI predict app
half its throughput), calls the data plane, and answers in the protocol's
shape. A refusal (:class:`tideline.pods.server.errors.RequestError`) becomes its
HTTP status in the route's protocol (``Protocol.status``) or, on the other
routes, in the exception handler; nothing a client sends can produce a 500.
The predict steps every protocol shares are :class:`tideline.pods.server.predicting.Predictor`'s;
the Open Inference Protocol over gRPC (:mod:`tideline.pods.server.oip_grpc`) starts and
stops with the app, on its event loop, when ``grpc_port`` is set.
"""

from __future__ import annotations

import contextlib
import gc
import hmac
import logging
import math
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from tideline import samples
from tideline.contracts import Feedback, prediction_id
from tideline.pods.server import oip_grpc
from tideline.pods.server.dataplane import DataPlane
from tideline.pods.server.errors import (
    BadRequest,
    ModelNotFound,
    RequestError,
    TooLarge,
    Unauthorized,
    Unprocessable,
)
from tideline.pods.server.predicting import Predictor, media_type
from tideline.pods.server.protocols import (
    V1,
    V2,
    Answer,
    model_metadata,
    no_duplicate_keys,
    parse_object,
    server_metadata,
)
from tideline.spec import OnlineModel, SpecError
from tideline.tasks import Task

log = logging.getLogger("tideline.server")

JSON = "application/json"


# The environment variable that holds spec.serving.feedbackAuth's token (the operator fills it
# from the Secret the spec names; ``tideline run`` makes one up).
FEEDBACK_TOKEN_ENV = "TIDELINE_FEEDBACK_TOKEN"


@dataclass(frozen=True)
class ServerConfig:
    """Server settings; each can be set as ``TIDELINE_<NAME>`` in the environment.

    The limits at the door (``max_header_bytes``, ``header_timeout``,
    ``idle_timeout``, ``max_concurrency``, and ``max_body_bytes`` while a body
    streams) are described in :mod:`tideline.pods.server.limits`.
    """

    max_body_bytes: int = 8 * 1024 * 1024
    max_rows: int = 10_000
    # when set, feedback and :learn answer only with "Authorization: Bearer <token>"
    feedback_token: str | None = None
    # when set, feedback and :learn answer only on this port (the server listens on both)
    write_port: int | None = None
    # nginx's large_client_header_buffers is 4 x 8 KiB; a gateway's headers and a bearer
    # token fit many times over
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0  # seconds for a request's line and headers (slowloris)
    idle_timeout: float = 5.0  # seconds a connection waits for a request (uvicorn's keep-alive)
    max_concurrency: int = 1024  # requests in flight per worker: 503 past it
    # when set, the Open Inference Protocol over gRPC on this port too (tideline.pods.server.oip_grpc)
    grpc_port: int | None = None
    grpc_host: str = "0.0.0.0"

    LIMITS = ("max_body_bytes", "max_rows", "max_header_bytes", "header_timeout",
              "idle_timeout", "max_concurrency")  # fmt: skip

    @classmethod
    def from_env(cls, env: dict[str, str]) -> ServerConfig:
        port = env.get("TIDELINE_WRITE_PORT")
        grpc_port = env.get("TIDELINE_GRPC_PORT")
        kw: dict[str, Any] = {"feedback_token": (env.get(FEEDBACK_TOKEN_ENV) or "").strip() or None,
                              "write_port": int(port) if port and port.isdigit() else None,
                              "grpc_port": int(grpc_port) if grpc_port and grpc_port.isdigit()
                              and int(grpc_port) > 0 else None,
                              "grpc_host": env.get("TIDELINE_GRPC_HOST") or "0.0.0.0"}  # fmt: skip
        for name in cls.LIMITS:
            raw = env.get(f"TIDELINE_{name.upper()}")
            if raw is None:
                continue
            kind = type(getattr(cls, name))
            try:
                value = kind(raw)
            except ValueError:
                value = 0
            if not value > 0:  # (also NaN)
                what = "an integer" if kind is int else "a number of seconds"
                raise ValueError(f"TIDELINE_{name.upper()}: must be {what} > 0 (got {raw!r})")
            kw[name] = value
        return cls(**kw)


def check_feedback_auth(model: OnlineModel, settings: ServerConfig) -> None:
    """Refuse to serve a model whose spec asks for ``feedbackAuth`` without its token: with
    none, the write routes would take labels from anyone (fail closed, issue 30)."""
    auth = model.spec.serving.feedbackAuth
    if auth is not None and not settings.feedback_token:
        raise SpecError(
            "spec.serving.feedbackAuth",
            f"is set, but {FEEDBACK_TOKEN_ENV} is empty or missing in the environment: the "
            "server does not start rather than take labels without a token (in a pod the "
            f"operator sets it from key {auth.key!r} of Secret {auth.name!r})",
        )


def _authorised(request: Request, settings: ServerConfig) -> None:
    """Who may teach the model: with ``spec.serving.feedbackAuth``, only a bearer of its token;
    with a write port, only through it."""
    if settings.write_port is not None:
        server = request.scope.get("server") or (None, None)
        if server[1] != settings.write_port:
            raise ModelNotFound(f"labels are taken on port {settings.write_port}, not this one")
    token = settings.feedback_token
    if token is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.strip().encode(), token.encode()
    ):
        raise Unauthorized(
            "this route needs Authorization: Bearer <token> (spec.serving.feedbackAuth)"
        )


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON)


def _error(exc: RequestError) -> Response:
    resp = _json({"error": exc.message}, exc.status)
    if isinstance(exc, TooLarge):  # the rest of the body is not read: the connection ends
        resp.headers["connection"] = "close"
    return resp


async def _read(request: Request, settings: ServerConfig) -> bytes:
    """A request's body, counted as it streams: :class:`TooLarge` the moment it passes the
    limit (a chunked body says no length up front), not once it is all held."""
    limit = settings.max_body_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise TooLarge(f"body of {length} bytes is over the limit of {limit}")
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"body over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # (gone, or closed by the limits: no one reads this answer)
        raise BadRequest("the client left before its body was read") from None
    return b"".join(chunks)


async def _body(request: Request, settings: ServerConfig) -> Any:
    """The JSON document of a write route (predict and infer check theirs in ``predict``)."""
    media_type(request.headers.get("content-type"))
    raw = await _read(request, settings)
    no_duplicate_keys(raw)
    return parse_object(raw)


# A scope key: a refusal the connection's protocol made (status, message) for the app to
# answer and count (tideline.pods.server.limits)
REFUSED = "tideline.refused"

_READ_HEADERS = frozenset(
    {b"content-length", b"content-type", b"content-encoding", b"x-tideline-key",
     b"x-tideline-track", b"x-tideline-forwarded", b"inference-header-content-length",
     b"x-tideline-unknown-features"}
)  # fmt: skip
_PREDICT = re.compile(
    r"^/v1/models/([^/]+):predict$|^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$"
)


class ServerApp(FastAPI):
    """FastAPI, with POST predict and infer answered before its middleware stack.

    The hottest routes skip FastAPI's routing and its four middleware layers
    (error, telemetry, body limit, exceptions), each a coroutine call and a
    wrapped ``send`` per request. The FastAPI routes for them stay, for the
    OpenAPI document and for clients that reach them another way, and answer
    the same.
    """

    fast_predict: FastPredict | None = None
    # counts a refusal made at the door (status, path): see tideline.pods.server.limits
    on_refused: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refused = scope.get(REFUSED)
            if refused is not None:
                return await self._refuse(scope, send, *refused)
            if scope["method"] == "POST" and self.fast_predict:
                m = _PREDICT.match(scope["path"])
                if m is not None:
                    return await self.fast_predict(m, scope, receive, send)
        await super().__call__(scope, receive, send)

    async def _refuse(self, scope: Any, send: Any, status: int, message: str) -> None:
        if self.on_refused is not None:
            self.on_refused(status, scope["path"])
        await _send(send, status, orjson.dumps({"error": message}), {"connection": "close"})


async def _send(send: Any, status: int, body: bytes, extra: dict[str, str]) -> None:
    head = [
        (b"content-type", extra.get("content-type", JSON).encode()),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in extra.items() if k != "content-type"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class FastPredict:
    """Plain ASGI for POST predict and infer: read the body, call the handler, answer."""

    def __init__(self, handler: Any, settings: ServerConfig, on_refused: Any = None) -> None:
        self.handler = handler
        self.settings = settings
        self.on_refused = on_refused  # (status, path): a body refused as too large, counted

    async def __call__(self, m: re.Match[str], scope: Any, receive: Any, send: Any) -> None:
        # ASGI gives header names lowercased; only these are read
        headers = {
            k.decode(): v.decode("latin-1") for k, v in scope["headers"] if k in _READ_HEADERS
        }
        limit = self.settings.max_body_bytes
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await self._too_large(
                scope, send, f"body of {length} bytes is over the limit of {limit}"
            )
        chunks = []
        size = 0
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:  # refused now, as it streams: the rest is never read
                return await self._too_large(scope, send, f"body over the limit of {limit} bytes")
            chunks.append(chunk)
            more = msg.get("more_body", False)
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        v2 = m.group(2) is not None
        status, body, extra = await self.handler(
            m.group(2) if v2 else m.group(1), raw, headers, scope["path"], v2, m.group(3)
        )
        await _send(send, status, body, extra)

    async def _too_large(self, scope: Any, send: Any, message: str) -> None:
        """413, and the connection closed: the rest of the body is not read (nor waited for)."""
        if self.on_refused is not None:
            self.on_refused(413, scope["path"])
        await _send(send, 413, orjson.dumps({"error": message}), {"connection": "close"})


def _label(task: Task, value: Any, path: str) -> float | str:
    """A label as the streams carry it: a number, or a multiclass model's class name (an
    index given is written as its name); 422 naming ``path`` when it is not one."""
    if task.multiclass:
        try:
            return task.label(task.target(value))
        except ValueError as e:
            raise Unprocessable(f"{path}: {e}") from None
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise Unprocessable(f"{path}: must be a finite number (got {value!r})")
    if task.name == "binary" and value not in (0, 1):
        raise Unprocessable(f"{path}: a binary label must be 0 or 1 (got {value!r})")
    return float(value)


def create_app(dataplane: DataPlane, settings: ServerConfig | None = None) -> FastAPI:
    """The server's ASGI app; the data plane is started and stopped with it."""
    settings = settings or ServerConfig()
    dp = dataplane
    check_feedback_auth(dp.model, settings)
    dp.max_rows = settings.max_rows
    metrics = dp.metrics

    predictor = Predictor(dp)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await dp.start()
        grpc_server = None
        if settings.grpc_port is not None:  # the same data plane, over gRPC, on this loop
            try:
                grpc_server = await oip_grpc.serve(
                    dp, predictor, settings.grpc_host, settings.grpc_port,
                    settings.max_body_bytes, settings.max_concurrency,
                )  # fmt: skip
            except OSError:  # (its port taken: the server does not start, and says why)
                await dp.stop()
                raise
        # Everything loaded so far (FastAPI, numpy, the model) lives as long as the
        # process: move it out of the collector's sight, so a full collection scans
        # only what requests allocate. Full collections over the whole heap were
        # the p99 at 64 connections (50 ms pauses).
        gc.collect()
        gc.freeze()
        yield
        if grpc_server is not None:  # (calls in flight get their answers)
            await grpc_server.stop(2.0)
        await dp.stop()

    app = ServerApp(
        title="tideline",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        # unrouted paths and methods: the protocols' error shape, not FastAPI's {"detail"}
        message = {404: "no such route", 405: "method not allowed on this route"}.get(
            exc.status_code, str(exc.detail)
        )
        return Response(orjson.dumps({"error": message}), status_code=exc.status_code,
                        headers=exc.headers, media_type=JSON)  # fmt: skip

    @app.exception_handler(RequestError)
    async def domain_error(_: Request, exc: RequestError) -> Response:
        return _error(exc)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:  # pragma: no cover - a bug
        log.exception("unexpected error")
        return _json({"error": f"internal error: {type(exc).__name__}"}, 500)

    protocols = {False: V1(settings.max_rows, dp.task), True: V2(dp.task)}

    async def predict(
        name: str, raw: bytes, headers: Any, url_path: str, v2: bool, version: str | None = None
    ) -> Answer:
        """The predict and infer routes: (status, body, headers). Used by the routes and the
        fast path."""
        return await predictor.predict(protocols[v2], name, raw, headers, url_path, version)

    async def predict_route(
        request: Request, name: str, v2: bool, version: str | None = None
    ) -> Response:
        try:
            raw = await _read(request, settings)
        except RequestError as e:
            refused_at_door(e.status, request.url.path)
            return _error(e)
        status, body, extra = await predict(
            name, raw, request.headers, request.url.path, v2, version
        )
        return Response(body, status_code=status, headers=extra or None,
                        media_type=None if "content-type" in extra else JSON)  # fmt: skip

    def refused_at_door(status: int, path: str) -> None:
        """A predict request refused before it was read (too large, its headers too large,
        over the concurrency limit): counted on the stable track, refused or shed."""
        if _PREDICT.match(path) is not None:
            metrics.request("v2/infer" if path.startswith("/v2/") else "v1/predict", "none",
                            status, 0.0)  # fmt: skip
            if status == 503:
                dp.stats["stable"].shed += 1
            else:
                dp.observe("stable", 0.0, 0, status)

    app.fast_predict = FastPredict(predict, settings, refused_at_door)
    app.on_refused = refused_at_door

    @app.post("/v1/models/{name}:predict")
    async def v1_predict(name: str, request: Request) -> Response:
        return await predict_route(request, name, v2=False)

    @app.post("/v2/models/{name}/infer")
    async def v2_infer(name: str, request: Request) -> Response:
        return await predict_route(request, name, v2=True)

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def v2_infer_version(name: str, version: str, request: Request) -> Response:
        return await predict_route(request, name, v2=True, version=version)

    @app.post("/v1/models/{name}/feedback", status_code=202)
    async def feedback(name: str, request: Request) -> Response:
        """``{"id": ..., "label": ...}`` or ``{"feedback": [{"id", "label"}, ...]}``."""
        dp.check_model(name)
        _authorised(request, settings)
        doc = await _body(request, settings)
        items = doc.get("feedback", [doc]) if "feedback" in doc else [doc]
        if not isinstance(items, list) or not items:
            raise BadRequest("feedback: must be a non-empty list of {id, label}")
        if len(items) > settings.max_rows:
            raise TooLarge(f"feedback: {len(items)} items is over the limit of {settings.max_rows}")
        entries, ids = [], []
        for i, item in enumerate(items):
            where = f"feedback[{i}]" if "feedback" in doc else "body"
            if not isinstance(item, dict) or "id" not in item or "label" not in item:
                raise Unprocessable(f"{where}: needs id and label")
            if not isinstance(item["id"], str | int) or isinstance(item["id"], bool):
                raise Unprocessable(f"{where}.id: must be the prediction id (a string)")
            label = _label(dp.task, item["label"], f"{where}.label")
            try:
                pid = prediction_id(item["id"])
            except ValueError as e:
                raise Unprocessable(f"{where}.id: {e}") from None
            entries.append(Feedback(pid, label, time.time()).encode())
            ids.append(pid)
        await dp.write_labels("feedback", entries, ids)
        metrics.request("v1/feedback", "none", 202, 0.0)
        return _json({"accepted": len(entries)}, 202)

    @app.post("/v1/models/{name}:learn", status_code=202)
    async def learn(name: str, request: Request) -> Response:
        """``{"instances": [...], "labels": [...]}``: labelled rows for the learner."""
        dp.check_model(name)
        _authorised(request, settings)
        doc = await _body(request, settings)
        rows, labels = doc.get("instances"), doc.get("labels")
        if not isinstance(rows, list) or not isinstance(labels, list):
            raise BadRequest("instances and labels: both required, as lists")
        if len(rows) != len(labels):
            raise Unprocessable(f"labels: {len(labels)} labels for {len(rows)} instances")
        # type errors are the client's to fix: 422 now, not a dead letter later (with no
        # version loaded yet, the spec's features read the rows)
        schema = dp.stable.schema if dp.stable is not None else dp.spec_schema
        dp.encode(schema, rows)
        checked: list[Any] = [_label(dp.task, y, f"labels[{i}]") for i, y in enumerate(labels)]
        features = [row if isinstance(row, dict) else dict(zip(schema.names, row, strict=False))
                    for row in rows]  # fmt: skip
        # one packed entry per request: learned whole, acknowledged whole
        await dp.write_labels("samples", [samples.pack(features, checked)])
        metrics.request("v1/learn", "none", 202, 0.0)
        return _json({"accepted": len(rows)}, 202)

    @app.get("/v1/models/{name}")
    async def v1_status(name: str) -> Response:
        dp.check_model(name)
        doc: dict[str, Any] = {"name": dp.name, "ready": dp.ready}
        if dp.classes is not None:  # what a multiclass model's predictions name
            doc["classes"] = list(dp.classes)
        return _json(doc, 200 if dp.ready else 503)

    @app.get("/v1/models")
    async def v1_models() -> Response:
        return _json({"models": [dp.name]})

    @app.get("/")
    async def v1_live() -> Response:  # KServe V1 liveness (the kserve SDK's is_server_live)
        return _json({"status": "alive"})

    @app.post("/v1/models/{name}:explain")
    async def v1_explain(name: str) -> Response:
        dp.check_model(name)
        return _json({"error": "explanations are not served for this model (tideline serves "
                               ":predict and V2 infer)"}, 501)  # fmt: skip

    @app.get("/v2/health/live")
    async def live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return _json({"ready": dp.ready}, 200 if dp.ready else 503)

    @app.get("/v2")
    async def v2_server_metadata() -> Response:
        return _json(server_metadata())

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Response:
        dp.check_model(name)
        return _json({"name": dp.name, "ready": dp.ready}, 200 if dp.ready else 503)

    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def version_ready(name: str, version: str) -> Response:
        dp.check_model(name)
        dp.check_version(version)
        return _json({"name": dp.name, "ready": dp.ready}, 200 if dp.ready else 503)

    @app.get("/v2/models/{name}")
    async def metadata(name: str) -> Response:
        dp.check_model(name)
        return _json(model_metadata(dp))

    @app.get("/v2/models/{name}/versions/{version}")
    async def version_metadata(name: str, version: str) -> Response:
        dp.check_model(name)
        dp.check_version(version)
        return _json(model_metadata(dp))

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.flush()
        metrics.model_age.set(dp.model_age())
        if dp.stable is not None:
            metrics.count_missing(dp.stable.schema)
        registry = metrics.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # --workers N: add every worker up
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def app_from_env() -> FastAPI:
    """The app for ``uvicorn --factory`` (one per worker): config and Redis from the environment."""
    from tideline.pods.metrics import ServerMetrics
    from tideline.spec import parse

    env = dict(os.environ)
    model = parse(env["TIDELINE_CONFIG"])
    settings = ServerConfig.from_env(env)
    dp = DataPlane(
        model,
        env["TIDELINE_REDIS_URL"],
        metrics=ServerMetrics(None, batch=not env.get("PROMETHEUS_MULTIPROC_DIR")),
        max_rows=settings.max_rows,
    )
    return create_app(dp, settings)
