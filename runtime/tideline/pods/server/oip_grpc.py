"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService``, beside HTTP.

Every server process also listens for gRPC (``tideline server --grpc-port``,
8081 by default as in KServe's runtimes; every worker on the same port, through
``SO_REUSEPORT``), on the event loop that serves HTTP: one data plane answers
both. The service answers the protocol's health, metadata and infer RPCs
(``ServerLive``, ``ServerReady``, ``ModelReady``, ``ServerMetadata``,
``ModelMetadata``, ``ModelInfer``); the model repository extension's load and
unload are UNIMPLEMENTED, as for any method not served.

``ModelInfer`` takes the steps of the HTTP infer route
(:class:`~tideline.pods.server.predicting.Predictor`: routing, a canary in another
image called over HTTP, the fallback, the prediction log, the client's ids bound):
its inputs are read into the same :class:`~tideline.pods.server.oip.Request` a JSON
or binary body is, from ``raw_input_contents`` (the layout of the binary tensor data
extension: what tritonclient and the kserve SDK send) or from each input's typed
``contents``. Client ids come as an ``ids`` input (BYTES). The answer's outputs
(``predict``, ``ids``, ``tracks``; a multiclass model's ``probabilities``) are in
``raw_output_contents``, as Triton answers; its parameters say ``revision`` and
``fallback``. Request metadata carries what HTTP headers do (``x-tideline-key``,
``x-tideline-unknown-features``).

A refusal is the gRPC status KServe answers with, carrying the message the HTTP
route gives (``inputs[0] (input).data[2] (merchant): ...``): 400 and 422 are
INVALID_ARGUMENT, 404 NOT_FOUND, 409 ALREADY_EXISTS (a client id another prediction
holds), 413 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED, a bug
INTERNAL. A message over ``TIDELINE_MAX_BODY_BYTES`` or past
``TIDELINE_MAX_CONCURRENCY`` requests in flight is RESOURCE_EXHAUSTED from gRPC
itself. Bytes that are not the message a method takes are INVALID_ARGUMENT naming
its type (``the message is not an inference.ModelReadyRequest``), for every method.
Every refusal of ``ModelInfer`` counts in the request metrics as the HTTP
route's do (route ``grpc/infer``), a message that is no ``ModelInferRequest`` too,
but for those two: gRPC's core and its concurrency limiter answer them before any
code of the server runs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
import orjson
from google.protobuf.message import DecodeError

from tideline.features import FeatureSchema
from tideline.pods.server import oip
from tideline.pods.server import oip_messages as pb
from tideline.pods.server.dataplane import DataPlane, Result
from tideline.pods.server.errors import BadRequest, RequestError
from tideline.pods.server.predicting import Predictor
from tideline.pods.server.protocols import (
    V2,
    Answer,
    Decoded,
    client_ids,
    model_metadata,
    server_metadata,
)

log = logging.getLogger("tideline.server")

DEFAULT_PORT = 8081  # KServe's runtimes' gRPC port

# a refusal's HTTP status -> the gRPC status KServe (and the HTTP mapping of gRPC) gives it
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# the request metadata read, as the HTTP routes read these headers
_READ = frozenset({"x-tideline-key", "x-tideline-unknown-features", "x-tideline-track",
                   "x-tideline-forwarded"})  # fmt: skip

# each datatype's field of InferTensorContents (FP16 and BF16 have none: raw contents only)
CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip
_FIELDS = sorted(set(CONTENTS.values()))


def code_of(status: int) -> grpc.StatusCode:
    """The gRPC status of a refusal answered over HTTP with ``status``.

    >>> code_of(422), code_of(503), code_of(500)
    (<StatusCode.INVALID_ARGUMENT: (3, 'invalid argument')>, <StatusCode.UNAVAILABLE: (14, 'unavailable')>, <StatusCode.INTERNAL: (13, 'internal')>)
    """
    return CODES.get(status, grpc.StatusCode.INTERNAL)


def request_of(msg: Any, known: tuple[str, ...] = oip.OUTPUTS) -> oip.Request:
    """A ``ModelInferRequest``'s inputs, outputs and ids, as :func:`oip.parse_request` reads
    a body's; refusals name the input and element as it does."""
    raw = msg.raw_input_contents
    if raw and len(raw) != len(msg.inputs):
        raise BadRequest(
            f"raw_input_contents: {len(raw)} given for {len(msg.inputs)} inputs (one each, in "
            "the order of inputs)"
        )
    tensors: list[oip.Tensor] = []
    for i, t in enumerate(msg.inputs):
        at, name, datatype, shape = oip.header(i, t.name, t.datatype, list(t.shape))
        # (raw contents leave contents unset: its fields are looked at only when it is set)
        given = (
            [f for f in _FIELDS if len(getattr(t.contents, f))] if t.HasField("contents") else []
        )
        if raw:
            if given:
                raise BadRequest(f"{at}.contents: given with raw_input_contents (one or the other)")
            values = oip.binary_values(at, datatype, shape, raw[i])
        else:
            field = CONTENTS.get(datatype)
            if given and given != [field]:
                where = f"goes in contents.{field}" if field else "goes in raw_input_contents"
                raise BadRequest(f"{at}.contents: {datatype} data {where} (got {', '.join(given)})")
            if field is None:
                raise BadRequest(f"{at}: {datatype} data goes in raw_input_contents")
            flat = list(getattr(t.contents, field))
            size = math.prod(shape)
            if len(flat) != size:
                raise BadRequest(
                    f"{at}.contents.{field}: holds {len(flat)} values, shape {shape} needs {size}"
                )
            tensor = oip.Tensor(i, name, datatype, shape, [])
            values = (
                flat if datatype == "BYTES" else oip.json_values(tensor, flat, oip.DTYPES[datatype])
            )
        tensors.append(oip.Tensor(i, name, datatype, shape, values))
    outputs = None
    if msg.outputs:
        outputs = [{"name": o.name, "parameters": pb.parameters(o.parameters)} for o in msg.outputs]
    params = pb.parameters(msg.parameters)
    return oip.request(msg.id or None, tensors, outputs, params.get("ids"), known)


def response_of(req: oip.Request, result: Result, model: str) -> bytes:
    """The ``ModelInferResponse`` to ``req``, serialised: every output in
    ``raw_output_contents``, in the layout of the binary tensor data extension."""
    ids = [str(i) for i in result.ids]
    resp = pb.ModelInferResponse(
        model_name=model,
        model_version=str(result.version) if result.version is not None else "",
        id=oip.answer_id(req, ids),
        parameters={"revision": pb.parameter(result.revision or ""),
                    "fallback": pb.parameter(result.fallback)},
    )  # fmt: skip
    for name in oip.wanted(req, result):
        out, data = oip.output(name, True, req, result, ids)
        resp.outputs.add(name=out["name"], datatype=out["datatype"], shape=out["shape"])
        resp.raw_output_contents.append(data)
    return bytes(resp.SerializeToString())


def read(kind: str, message: bytes) -> Any:
    """The message ``kind`` of the service, from its bytes; a :class:`BadRequest` naming
    the type if they are none.

    >>> read("ModelReadyRequest", b"\\n\\x05fraud").name
    'fraud'
    >>> read("ModelReadyRequest", b"\\xff\\xff")
    Traceback (most recent call last):
    ...
    tideline.pods.server.errors.BadRequest: the message is not an inference.ModelReadyRequest
    """
    try:
        return pb.MESSAGES[kind].FromString(message)
    except DecodeError:
        raise BadRequest(f"the message is not an {pb.PACKAGE}.{kind}") from None


def _reading(method: Callable[[Any, Any], Awaitable[Any]], kind: str) -> Callable[..., Any]:
    """``method``, called with the message ``kind`` read from the bytes it is sent; bytes
    that are none are refused INVALID_ARGUMENT."""

    async def call(message: bytes, context: Any) -> Any:
        try:
            request = read(kind, message)
        except BadRequest as e:
            await context.abort(code_of(e.status), e.message)
        return await method(request, context)

    return call


class GrpcV2(V2):
    """``ModelInfer``: the Open Inference Protocol's infer request, as a gRPC message."""

    route = "grpc/infer"

    def decode(
        self, raw: Any, headers: Mapping[str, str], schema: FeatureSchema, stable: bool
    ) -> Decoded:
        infer = request_of(raw, self.outputs)
        return Decoded(oip.rows(infer, schema), client_ids(infer.ids), infer=infer)

    def answer(self, req: Decoded, result: Result, model: str) -> Answer:
        assert req.infer is not None
        return 200, response_of(req.infer, result, model), {}

    def forwarded(
        self, req: Decoded, raw: Any, url_path: str, passed: dict[str, str]
    ) -> tuple[str, bytes, dict[str, str]]:
        assert req.infer is not None
        infer = req.infer
        if req.ids is not None:
            infer = oip.Request(infer.id, infer.inputs, infer.outputs, True, req.ids,
                                infer.datatypes)  # fmt: skip
        body, length = oip.binary_request(infer)
        return url_path, body, {**passed, oip.HEADER: str(length)}

    def canary_answer(self, req: Decoded, content: bytes, headers: dict[str, str]) -> Answer:
        doc, blobs = oip.binary_answer(content, headers.get(oip.HEADER))
        params = doc.get("parameters") or {}
        resp = pb.ModelInferResponse(
            model_name=doc.get("model_name") or "",
            model_version=doc.get("model_version") or "",
            id=doc.get("id") or "",
            parameters={k: pb.parameter(v) for k, v in params.items()
                        if isinstance(v, bool | int | float | str)},
        )  # fmt: skip
        for out in doc.get("outputs", []):
            resp.outputs.add(name=out["name"], datatype=out["datatype"], shape=out["shape"])
        resp.raw_output_contents.extend(blobs)
        return 200, bytes(resp.SerializeToString()), {}


class Service:
    """The RPCs of ``inference.GRPCInferenceService`` on one data plane."""

    def __init__(self, dp: DataPlane, predictor: Predictor) -> None:
        self.dp = dp
        self.predictor = predictor
        self.protocol = GrpcV2(dp.task)

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 (the RPC's name)
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.dp.ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self._check(context, request.name, request.version)
        return pb.ModelReadyResponse(ready=self.dp.ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerMetadataResponse(**server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self._check(context, request.name, request.version)
        doc = model_metadata(self.dp)
        return pb.ModelMetadataResponse(
            name=doc["name"], versions=doc["versions"], platform=doc["platform"],
            inputs=doc["inputs"], outputs=doc["outputs"],
        )  # fmt: skip

    async def ModelInfer(self, message: bytes, context: Any) -> bytes:  # noqa: N802
        # (read here, not by gRPC: a message that is none is refused and counted as an HTTP
        # body that is no JSON is, where gRPC would answer UNKNOWN naming the parser's error)
        started = time.perf_counter()
        try:
            request = read("ModelInferRequest", message)
        except BadRequest as e:
            self.predictor.finish(self.protocol.route, None, started, e.status, "stable")
            await context.abort(code_of(e.status), e.message)
        headers = {k: v for k, v in context.invocation_metadata() or () if k in _READ}
        name = request.model_name
        version = request.model_version or None
        status, body, _ = await self.predictor.predict(
            self.protocol, name, request, headers, f"/v2/models/{name}/infer", version
        )
        if status != 200:
            await context.abort(code_of(status), orjson.loads(body)["error"])
        return body

    async def _check(self, context: Any, name: str, version: str) -> None:
        try:
            self.dp.check_model(name)
            if version:
                self.dp.check_version(version)
        except RequestError as e:
            await context.abort(code_of(e.status), e.message)

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's methods, for ``server.add_generic_rpc_handlers``."""
        methods = {}
        for name, (request, response) in pb.METHODS.items():
            # (each method gets the bytes, read by the server: a message that is none is
            # INVALID_ARGUMENT naming its type, where gRPC's own reading answers UNKNOWN with
            # the parser's error; ModelInfer reads its own, to count the refusal too)
            method = getattr(self, name)
            methods[name] = grpc.unary_unary_rpc_method_handler(
                method if name == "ModelInfer" else _reading(method, request),
                request_deserializer=None,
                # ModelInfer's answer is serialised already (a canary's answer is re-read)
                response_serializer=None
                if name == "ModelInfer"
                else pb.MESSAGES[response].SerializeToString,
            )
        return grpc.method_handlers_generic_handler(pb.SERVICE, methods)


async def serve(
    dp: DataPlane, predictor: Predictor, host: str, port: int, max_message: int,
    max_concurrency: int,
) -> grpc.aio.Server:  # fmt: skip
    """The gRPC server, started on the running event loop and listening on ``host:port``."""
    server = grpc.aio.server(
        options=[
            # every worker of `tideline server --workers N` listens on the same port
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", -1),
        ],
        maximum_concurrent_rpcs=max_concurrency,
    )
    server.add_generic_rpc_handlers((Service(dp, predictor).handler(),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as e:
        raise OSError(f"gRPC: cannot listen on {address} ({e})") from None
    await server.start()
    log.info("gRPC (inference.GRPCInferenceService) on %s", address)
    return server
