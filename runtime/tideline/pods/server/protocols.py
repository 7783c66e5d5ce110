"""The two predict protocols side by side: KServe V1 and the Open Inference Protocol (V2).

Each reads a request body into a :class:`Decoded` request the data plane
answers (rows, or the stable schema's matrix already; the client's ids;
the body the prediction log may keep as it came), writes the data plane's
:class:`~tideline.pods.server.dataplane.Result` in its own shape, and gives the
HTTP status of a refusal. Neither needs a model version loaded: without one,
rows are read by the spec's features and the data plane gives both the same
answer (the fixed fallback, or 503 with ``lastGood``).

V1 bodies::

    {"instances": [{feature: value, ...}, ...], "ids": [...]}   rows as objects
    {"instances": [[value, ...], ...]}                           rows as arrays, in feature order
    {"inputs": [...]} or {"inputs": {feature: [values]}}         rows, or columns

A V1 answer's ``predictions`` are a number a row; a multiclass model's are a class name
a row (its most probable), and with ``"probabilities": true`` in the request the answer
also holds ``probabilities``: for each row, its classes' probabilities in the order of
``spec.model.classes`` (float32's shortest text, as the prediction log keeps them).

V2 bodies are infer requests, JSON or with binary tensor data (:mod:`tideline.pods.server.oip`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
import numpy as np
import orjson
from msgspec.structs import astuple

from tideline import __version__
from tideline.contracts import json_object, prediction_id
from tideline.features import FeatureSchema
from tideline.pods.server import oip
from tideline.pods.server.dataplane import DataPlane, Result
from tideline.pods.server.errors import BadRequest, RequestError, Unprocessable
from tideline.pods.server.logwriter import ids_json
from tideline.tasks import Task

Answer = tuple[int, bytes, dict[str, str]]  # status, body, headers beyond the content type


@dataclass(slots=True)
class Decoded:
    """A predict request as the data plane takes it."""

    rows: Sequence[Any] | None  # None when ``X`` holds them (read from ``logged`` if needed)
    ids: list[Any] | None  # the client's prediction ids
    X: np.ndarray | None = None  # the rows, encoded for the stable schema (the typed V1 path)
    logged: bytes | None = None  # the body, when the log may keep it as it came
    infer: oip.Request | None = None  # a V2 request (what its answer holds)
    probabilities: bool = False  # V1: a multiclass answer's probabilities asked for


# ----------------------------------------------------------------------------- JSON helpers
def parse_object(raw: bytes) -> dict[str, Any]:
    """A JSON object from a body (its size checked by the caller)."""
    try:
        return json_object(raw, "body")
    except ValueError as e:
        raise BadRequest(str(e)) from None


WRITE_KEYS = (b'"instances"', b'"inputs"', b'"labels"', b'"ids"', b'"feedback"')
_V1_KEYS = (b'"instances"',)  # "ids" is looked for only when a body has ids
_V2_KEYS = (b'"inputs"', b'"parameters"', b'"outputs"')


def no_duplicate_keys(raw: bytes, keys: tuple[bytes, ...] = WRITE_KEYS) -> None:
    """Refuse a body that names a key twice in one object (JSON parsers keep the last one
    silently). Cheap: a scan for a second occurrence of each of the route's keys (about 2 us
    for a 64-row body), and the careful parse only when one appears twice."""
    for k in keys:
        first = raw.find(k)
        if first >= 0 and raw.find(k, first + len(k)) >= 0:
            break
    else:
        return

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for k, _ in items:
            if k in seen:
                raise BadRequest(f"{k}: given twice in one object")
            seen.add(k)
        return dict(items)

    with contextlib.suppress(ValueError):  # not JSON at all: the parser says so later
        json.loads(raw, object_pairs_hook=pairs)


def client_ids(ids: Any) -> list[Any] | None:
    """A client's own prediction ids, checked as the label join keys them."""
    if ids is None:
        return None
    if not isinstance(ids, list):
        raise Unprocessable("ids: must be a list")
    for i, given in enumerate(ids):
        try:
            prediction_id(given)
        except ValueError as e:
            raise Unprocessable(f"ids[{i}]: {e}") from None
    return ids


# ----------------------------------------------------------------------------- protocols
class Protocol:
    """What a predict protocol does: read a body, write an answer, name a refusal's status."""

    route: ClassVar[str]  # the route's metrics label
    path: ClassVar[str]  # where rows are in a body (named in errors)

    def decode(
        self, raw: bytes, headers: Mapping[str, str], schema: FeatureSchema, stable: bool
    ) -> Decoded:
        """The request in ``raw``; ``schema`` reads its rows (the stable version's, when
        ``stable``, else the spec's features)."""
        raise NotImplementedError

    def answer(self, req: Decoded, result: Result, model: str) -> Answer:
        raise NotImplementedError

    def status(self, e: RequestError) -> int:
        return e.status

    def forwarded(
        self, req: Decoded, raw: Any, url_path: str, passed: dict[str, str]
    ) -> tuple[str, bytes, dict[str, str]]:
        """What a canary in another image is sent for this request (it is called over HTTP):
        the route, the body and the headers that say how to read it."""
        return url_path, raw, passed

    def canary_answer(self, req: Decoded, content: bytes, headers: dict[str, str]) -> Answer:
        """The answer to the request, from the canary's answer to :meth:`forwarded`."""
        return 200, content, headers


class V1(Protocol):
    """KServe V1 ``:predict``."""

    route = "v1/predict"
    path = "instances"

    def __init__(self, max_rows: int, task: Task | None = None) -> None:
        self.max_rows = max_rows
        self.task = task or Task("binary")
        self._decoders: dict[tuple[tuple[str, str], ...], tuple[Any, ...]] = {}

    def decode(
        self, raw: bytes, headers: Mapping[str, str], schema: FeatureSchema, stable: bool
    ) -> Decoded:
        no_duplicate_keys(raw, _V1_KEYS)
        fast = self.typed(raw, schema) if stable else None
        if fast is not None:
            X, ids, rows, probabilities = fast
            req = Decoded(rows, ids, X, raw, probabilities=probabilities)
        else:
            doc = parse_object(raw)
            rows = doc.get("instances")
            logged: bytes | None = raw
            if rows is None and "inputs" in doc:  # V1's other form: rows, or columns
                rows = _inputs(doc["inputs"])
                logged = None  # the log reads "instances": it keeps the rows instead
            if rows is None:
                raise BadRequest('instances: required (KServe V1: {"instances": [...]})')
            req = Decoded(rows, doc.get("ids"), logged=logged)
            if self.task.multiclass:  # (other tasks' answers are probabilities already)
                req.probabilities = doc.get("probabilities", False)
                if not isinstance(req.probabilities, bool):
                    raise BadRequest("probabilities: must be true or false")
        if req.ids is not None:  # (rare: no cost else)
            no_duplicate_keys(raw, (b'"ids"',))
            req.ids = client_ids(req.ids)
        return req

    def typed(
        self, raw: bytes, schema: FeatureSchema
    ) -> tuple[np.ndarray, list[Any] | None, list[list[Any]] | None, bool] | None:
        """The usual V1 body, decoded straight into the schema's matrix (the fast path).

        ``{"instances": [{feature: value, ...}, ...], "ids": [...]}`` with every
        feature present and typed as the schema says, or the rows as arrays of
        every value in schema order: one msgspec decode into typed structs,
        then one pass into the matrix, with no dict per row. Returns (matrix,
        ids, rows, probabilities): rows are None for feature dicts (the log keeps
        the body as it came) and lists for arrays (the log names their values);
        probabilities, the body's ``"probabilities"`` (false if absent). Returns
        None for anything else (missing or null values, unknown names, wrong
        types, short arrays, a bad body): the general path then reads it, and
        counts, defaults or names the offending field.
        """
        decoders = self._decoders.get(schema.signature)
        if decoders is None:  # feature dicts first (the usual body), then arrays
            decoders = self._decoders[schema.signature] = tuple(
                msgspec.json.Decoder(
                    msgspec.defstruct(
                        "V1Request",
                        [
                            ("instances", list[schema.row_type(arrays)]),  # type: ignore[misc]
                            ("ids", list[str | int] | None, None),
                            ("probabilities", bool, False),
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
                return schema.encode_typed(rows), doc.ids, None, doc.probabilities
            listed = [list(astuple(r)) for r in rows]  # taken out once: the matrix and the log
            return schema.encode_typed(listed), doc.ids, listed, doc.probabilities
        return None

    def answer(self, req: Decoded, result: Result, model: str) -> Answer:
        if result.classes is not None:
            return self._classes(req, result)
        body = orjson.dumps(
            {
                "predictions": orjson.Fragment(result.predictions_json()),
                "ids": ids_json(result.ids),
                "model_version": result.version,
                "revision": result.revision,
                "tracks": result.tracks,
                "fallback": result.fallback,
            }
        )
        return 200, body, {}

    def _classes(self, req: Decoded, result: Result) -> Answer:
        """A multiclass model's answer: the classes, and their probabilities if asked for."""
        doc: dict[str, Any] = {"predictions": result.classes_answered()}
        if req.probabilities:  # (the bytes the prediction log keeps)
            doc["probabilities"] = orjson.Fragment(result.predictions_json())
        doc.update(ids=ids_json(result.ids), model_version=result.version,
                   revision=result.revision, tracks=result.tracks, fallback=result.fallback)  # fmt: skip
        return 200, orjson.dumps(doc), {}


def _inputs(inputs: Any) -> list[Any]:
    """V1 ``inputs``: a list of rows (as ``instances``), or columns ``{feature: [values]}``."""
    if isinstance(inputs, list):
        return inputs
    if not isinstance(inputs, dict) or not inputs:
        raise BadRequest("inputs: a list of rows, or an object of columns {feature: [values]}")
    sizes = {k: len(v) if isinstance(v, list) else -1 for k, v in inputs.items()}
    if min(sizes.values()) < 0 or len(set(sizes.values())) != 1:
        raise BadRequest(f"inputs: every column must be a list of the same length (got {sizes})")
    names = list(inputs)
    return [dict(zip(names, r, strict=True)) for r in zip(*inputs.values(), strict=True)]


class V2(Protocol):
    """Open Inference Protocol ``/v2/models/{name}[/versions/{v}]/infer``."""

    route = "v2/infer"
    path = "inputs"

    def __init__(self, task: Task | None = None) -> None:
        self.outputs = oip.outputs_of(task or Task("binary"))  # what an answer can hold

    def decode(
        self, raw: bytes, headers: Mapping[str, str], schema: FeatureSchema, stable: bool
    ) -> Decoded:
        body = oip.decompress(raw, headers.get("content-encoding"))
        if oip.HEADER not in headers:
            no_duplicate_keys(body, _V2_KEYS)
        infer = oip.parse_request(body, headers.get(oip.HEADER), self.outputs)
        return Decoded(oip.rows(infer, schema), client_ids(infer.ids), infer=infer)

    def answer(self, req: Decoded, result: Result, model: str) -> Answer:
        assert req.infer is not None
        body, header_length = oip.answer(req.infer, result, model)
        if header_length is None:
            return 200, body, {}
        return 200, body, {"content-type": "application/octet-stream",
                           oip.HEADER: str(header_length)}  # fmt: skip

    def status(self, e: RequestError) -> int:
        # the Open Inference Protocol answers 400 to every request it cannot take
        return 400 if e.status == 422 else e.status


def server_metadata() -> dict[str, Any]:
    """The Open Inference Protocol's server metadata (HTTP ``GET /v2``, gRPC ``ServerMetadata``)."""
    return {"name": "tideline", "version": __version__, "extensions": ["binary_tensor_data"]}


def model_metadata(dp: DataPlane) -> dict[str, Any]:
    """The Open Inference Protocol's model metadata, with the feature schema (HTTP
    ``GET /v2/models/{name}``; gRPC ``ModelMetadata``, whose message has no parameters)."""
    s = dp.stable
    features = s.schema.describe() if s else [f.to_dict() for f in dp.spec.model.features]
    parameters = {
        "task": dp.spec.model.task,
        "algorithm": dp.spec.model.algorithm,
        "revision": s.revision if s else dp.routing.stable,
        "features": orjson.dumps(features).decode(),
    }
    outputs = [
        {"name": "predict", "datatype": "FP64", "shape": [-1]},
        {"name": "ids", "datatype": "BYTES", "shape": [-1]},
        {"name": "tracks", "datatype": "BYTES", "shape": [-1]},
    ]
    if dp.classes is not None:  # a class name a row, and the classes' probabilities
        outputs[:1] = [
            {"name": "predict", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(dp.classes)]},
        ]
        parameters["classes"] = orjson.dumps(dp.classes).decode()
    return {
        "name": dp.name,
        "versions": [str(s.version)] if s else [],
        "platform": "tideline",
        "inputs": [
            {
                "name": f["name"],
                "datatype": "FP64" if f["type"] == "numeric" else "BYTES",
                "shape": [-1],
            }
            for f in features
        ],
        "outputs": outputs,
        # values are strings, numbers or booleans (OIP parameters): the features (and a
        # multiclass model's classes) as JSON
        "parameters": parameters,
    }
