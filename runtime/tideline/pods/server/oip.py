"""Open Inference Protocol (KServe V2) infer requests and answers, JSON and binary.

A request is a JSON header, optionally followed by the *binary tensor data
extension* (what tritonclient and the kserve SDK send by default): the
``Inference-Header-Content-Length`` header says how many bytes the JSON
takes, and each input whose ``parameters.binary_data_size`` is set has its
data in the bytes after it, in input order - fixed-size types little-endian,
row-major; ``BYTES`` as a 4-byte little-endian length and the bytes, per
element. Answers are binary the same way when the request asks
(``parameters.binary_data_output``, or ``binary_data`` on a requested output).

Inputs are one tensor per feature (shape ``[n]`` or ``[n, 1]``) or one
``[n, features]`` tensor in feature order. A number may carry a categorical
feature's value when it is an integer (``4.0`` is the category ``"4"``, as
the JSON ``4`` is); a ``BYTES`` element may carry a numeric feature's value
as text (``b"12.5"``). Every refusal is a 400 naming the tensor and the
element (``inputs[1] (country).data[5]``).

An answer's outputs are ``predict`` (FP64 ``[n]``: a row's score), ``ids`` and
``tracks`` (BYTES ``[n]``). A multiclass model's ``predict`` is BYTES ``[n]``, each
row's class name (its most probable), and ``probabilities`` is FP64 ``[n, k]``, the
classes' probabilities in the order of ``spec.model.classes`` (FP32 when the requested
output's parameters say ``{"datatype": "FP32"}``); as JSON its data is flat, in
row-major order (tritonclient reshapes it by the output's shape).
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from tideline.features import FeatureSchema
from tideline.pods.server.dataplane import Result
from tideline.pods.server.errors import BadRequest
from tideline.tasks import Task

# OIP datatypes and their little-endian layouts (BF16 has no numpy type: refused)
DTYPES: dict[str, str | None] = {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "BYTES": None,
}  # fmt: skip
OUTPUTS = ("predict", "ids", "tracks")  # what an answer can hold
CLASS_OUTPUTS = ("predict", "probabilities", "ids", "tracks")  # a multiclass model's
PROBABILITY_TYPES = {"FP64": "<f8", "FP32": "<f4"}  # the datatypes of ``probabilities``
HEADER = "inference-header-content-length"


@dataclass
class Tensor:
    """An input tensor: its values flat, as numbers (numpy) or as ``bytes`` (BYTES)."""

    index: int
    name: str
    datatype: str
    shape: list[int]
    values: np.ndarray | list[Any]  # BYTES: bytes (JSON may give numbers too)

    def where(self, k: int | None = None) -> str:
        at = f"inputs[{self.index}] ({self.name})"
        return at if k is None else f"{at}.data[{k}]"


@dataclass
class Request:
    id: str | None
    inputs: list[Tensor]
    outputs: dict[str, bool] | None  # name -> binary; None: every output, as binary_output says
    binary_output: bool
    ids: list[Any] | None  # the client's prediction ids: an "ids" input or parameters.ids
    # an output's datatype, when its parameters name one (probabilities: FP64 or FP32)
    datatypes: dict[str, str] = field(default_factory=dict)


def outputs_of(task: Task) -> tuple[str, ...]:
    """The outputs an answer of a model of ``task`` can hold.

    >>> outputs_of(Task("binary")), outputs_of(Task("multiclass", ("a", "b")))[:2]
    (('predict', 'ids', 'tracks'), ('predict', 'probabilities'))
    """
    return CLASS_OUTPUTS if task.multiclass else OUTPUTS


def decompress(raw: bytes, encoding: str | None) -> bytes:
    """A body sent with ``Content-Encoding: gzip`` or ``deflate`` (tritonclient can)."""
    if not encoding or encoding == "identity":
        return raw
    try:
        if encoding == "gzip":
            return gzip.decompress(raw)
        if encoding == "deflate":
            return zlib.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise BadRequest(f"body: not valid {encoding} data ({e})") from None
    raise BadRequest(f"content-encoding {encoding!r} is not supported (gzip, deflate)")


def parse_request(
    raw: bytes, header_length: str | None, known: tuple[str, ...] = OUTPUTS
) -> Request:
    """An infer request from its body (JSON, or a JSON header and binary tensor data);
    ``known``: the outputs it may ask for (:func:`outputs_of`)."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(raw):
            raise BadRequest(
                f"Inference-Header-Content-Length: {header_length!r} is not a length within "
                f"the body ({len(raw)} bytes)"
            )
        head, binary = raw[: int(header_length)], memoryview(raw)[int(header_length) :]
    else:
        head, binary = raw, memoryview(b"")
    try:
        doc = orjson.loads(head)
    except orjson.JSONDecodeError as e:
        hint = "" if header_length is not None or b"\0" not in raw[:4096] else (
            " (binary tensor data needs the Inference-Header-Content-Length header)"
        )  # fmt: skip
        raise BadRequest(f"body is not valid JSON: {e}{hint}") from None
    if not isinstance(doc, dict):
        raise BadRequest("body must be a JSON object")
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise BadRequest(f"id: must be a string (got {type(rid).__name__})")
    params = doc.get("parameters", {})
    if not isinstance(params, dict):
        raise BadRequest("parameters: must be an object")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("inputs: must be a non-empty list of tensors")
    tensors: list[Tensor] = []
    offset = 0
    for i, t in enumerate(inputs):
        tensor, used = _tensor(i, t, binary[offset:])
        offset += used
        tensors.append(tensor)
    if offset != len(binary):
        raise BadRequest(
            f"body: {len(binary) - offset} bytes of binary data after the last input's "
            "(binary_data_size must add up)"
        )
    binary_output = params.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise BadRequest("parameters.binary_data_output: must be true or false")
    return request(rid, tensors, doc.get("outputs"), params.get("ids"), known, binary_output)


def request(
    rid: str | None,
    tensors: list[Tensor],
    outputs: Any,
    ids: Any,
    known: tuple[str, ...] = OUTPUTS,
    binary_output: bool = False,
) -> Request:
    """An infer request from its read inputs, whatever carried them (JSON and binary data
    here, a protobuf message in :mod:`tideline.pods.server.oip_grpc`): ``outputs``, the
    requested outputs as the JSON form gives them (a list of ``{name, parameters}``);
    ``ids``, the client's ids given as a parameter (an ``ids`` input wins)."""
    seen: set[str] = set()
    for t in tensors:
        if t.name in seen:
            raise BadRequest(f"inputs[{t.index}].name: {t.name!r} is given twice")
        seen.add(t.name)
    wanted, datatypes = _outputs(outputs, known)
    id_tensor = next((t for t in tensors if t.name == "ids"), None)
    if id_tensor is not None:
        tensors.remove(id_tensor)
        ids = [_text(id_tensor, k, v) for k, v in enumerate(id_tensor.values)]
    return Request(rid, tensors, wanted, binary_output, ids, datatypes)


def header(i: int, name: Any, datatype: Any, shape: Any) -> tuple[str, str, str, list[int]]:
    """Input i's name, datatype and shape checked: where it is (for errors), and those three."""
    if not isinstance(name, str) or not name:
        raise BadRequest(f"inputs[{i}].name: required, a string")
    at = f"inputs[{i}] ({name})"
    if not isinstance(datatype, str) or datatype not in DTYPES:
        known = ", ".join(DTYPES)
        raise BadRequest(f"{at}.datatype: {datatype!r} is not an OIP datatype ({known})")
    if not isinstance(shape, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise BadRequest(f"{at}.shape: must be a list of sizes")
    return at, name, datatype, shape


def binary_values(at: str, datatype: str, shape: list[int], chunk: bytes) -> np.ndarray | list[Any]:
    """A tensor's values from its binary data (the extension's, or gRPC's raw contents):
    fixed-size types little-endian and row-major, ``BYTES`` length-prefixed."""
    size = math.prod(shape)
    dtype = DTYPES[datatype]
    values: np.ndarray | list[Any]  # BYTES: bytes
    if dtype is None:
        values = _bytes_elements(at, chunk)
    else:
        width = np.dtype(dtype).itemsize
        if len(chunk) != size * width:
            raise BadRequest(
                f"{at}: {len(chunk)} bytes of binary data, shape {shape} of {datatype} needs "
                f"{size * width}"
            )
        values = np.frombuffer(chunk, dtype=dtype)
    if len(values) != size:
        raise BadRequest(f"{at}: holds {len(values)} values, shape {shape} needs {size}")
    return values


def _tensor(i: int, t: Any, binary: memoryview) -> tuple[Tensor, int]:
    """Input i, and the bytes of binary data it took."""
    if not isinstance(t, dict):
        raise BadRequest(f"inputs[{i}]: must be an object with name, shape, datatype and data")
    at, name, datatype, shape = header(i, t.get("name"), t.get("datatype"), t.get("shape"))
    size = math.prod(shape)
    params = t.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest(f"{at}.parameters: must be an object")
    nbytes = params.get("binary_data_size")
    dtype = DTYPES[datatype]
    if nbytes is not None:
        if "data" in t:
            raise BadRequest(f"{at}: has both data and binary_data_size")
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise BadRequest(f"{at}.parameters.binary_data_size: must be a size in bytes")
        if nbytes > len(binary):
            raise BadRequest(
                f"{at}.parameters.binary_data_size: {nbytes} bytes, but {len(binary)} are left "
                "in the body"
            )
        values = binary_values(at, datatype, shape, bytes(binary[:nbytes]))
        return Tensor(i, name, datatype, shape, values), nbytes
    data = t.get("data")
    if not isinstance(data, list):
        raise BadRequest(f"{at}.data: must be a list (or the input's binary_data_size given)")
    flat = _flatten(data)
    if len(flat) != size:
        raise BadRequest(f"{at}.data: holds {len(flat)} values, shape {shape} needs {size}")
    tensor = Tensor(i, name, datatype, shape, [])
    tensor.values = json_values(tensor, flat, dtype)
    return tensor, 0


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def json_values(t: Tensor, flat: list[Any], dtype: str | None) -> np.ndarray | list[Any]:
    """A JSON tensor's values (or a protobuf's typed contents), checked against its datatype."""
    kinds = set(map(type, flat))
    if dtype is None:  # BYTES: strings (and, in JSON, numbers too: a row of mixed values)
        if kinds - {str, int, float}:
            k = next(k for k, v in enumerate(flat) if type(v) not in (str, int, float))
            raise BadRequest(f"{t.where(k)}: a BYTES element must be a string (got {flat[k]!r})")
        return [v.encode() if type(v) is str else v for v in flat]
    if t.datatype == "BOOL":
        if kinds - {bool}:
            k = next(k for k, v in enumerate(flat) if not isinstance(v, bool))
            raise BadRequest(
                f"{t.where(k)}: a BOOL element must be true or false (got {flat[k]!r})"
            )
        return np.array(flat, dtype=bool)
    if kinds - {int, float}:
        k = next(k for k, v in enumerate(flat) if type(v) not in (int, float))
        raise BadRequest(f"{t.where(k)}: a {t.datatype} element must be a number (got {flat[k]!r})")
    if t.datatype.startswith(("INT", "UINT")):
        if float in kinds:
            frac = [k for k, v in enumerate(flat) if isinstance(v, float) and not v.is_integer()]
            if frac:
                raise BadRequest(f"{t.where(frac[0])}: {flat[frac[0]]!r} is not an integer "
                                 f"({t.datatype})")  # fmt: skip
        info = np.iinfo(np.dtype(dtype))
        out_of = [k for k, v in enumerate(flat) if not info.min <= v <= info.max]
        if out_of:
            raise BadRequest(f"{t.where(out_of[0])}: {flat[out_of[0]]!r} is out of range for "
                             f"{t.datatype}")  # fmt: skip
    with np.errstate(over="ignore"):
        arr = np.array(flat, dtype=dtype)
    if t.datatype.startswith("FP") and not np.isfinite(arr).all():
        k = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise BadRequest(f"{t.where(k)}: {flat[k]!r} is out of range for {t.datatype}")
    return arr


def _bytes_elements(at: str, chunk: bytes) -> list[bytes]:
    out: list[bytes] = []
    k = 0
    while k < len(chunk):
        if k + 4 > len(chunk):
            raise BadRequest(f"{at}: BYTES data ends inside an element's length")
        n = int.from_bytes(chunk[k : k + 4], "little")
        if k + 4 + n > len(chunk):
            raise BadRequest(f"{at}: BYTES element {len(out)} runs past the tensor's data")
        out.append(chunk[k + 4 : k + 4 + n])
        k += 4 + n
    return out


def _outputs(
    requested: Any, known: tuple[str, ...]
) -> tuple[dict[str, bool] | None, dict[str, str]]:
    """The requested outputs (name -> binary; None: all) and the datatypes they ask for."""
    if requested is None:
        return None, {}
    if not isinstance(requested, list):
        raise BadRequest("outputs: must be a list of {name}")
    out: dict[str, bool] = {}
    datatypes: dict[str, str] = {}
    for i, o in enumerate(requested):
        name = o.get("name") if isinstance(o, dict) else None
        if name not in known:
            raise BadRequest(f"outputs[{i}].name: {name!r} is not an output of this model {known}")
        params = o.get("parameters") or {}
        binary = params.get("binary_data", False) if isinstance(params, dict) else False
        if not isinstance(binary, bool):
            raise BadRequest(f"outputs[{i}].parameters.binary_data: must be true or false")
        out[name] = binary
        datatype = params.get("datatype") if isinstance(params, dict) else None
        if name == "probabilities" and datatype is not None:
            if datatype not in PROBABILITY_TYPES:
                raise BadRequest(f"outputs[{i}].parameters.datatype: {datatype!r} is not a "
                                 f"datatype of probabilities ({', '.join(PROBABILITY_TYPES)})")  # fmt: skip
            datatypes[name] = datatype
    return out, datatypes


def _text(t: Tensor, k: int, v: Any) -> str:
    """An element as a categorical value or an id: text, or an integer written out."""
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            raise BadRequest(f"{t.where(k)}: not UTF-8 text") from None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        if not v.is_integer():
            raise BadRequest(f"{t.where(k)}: a category or an id given as a number must be an "
                             f"integer (got {v!r})")  # fmt: skip
        v = int(v)
    return str(v)


# -- rows for the model --------------------------------------------------------------------
def rows(req: Request, schema: FeatureSchema) -> list[list[Any]]:
    """Rows in the schema's feature order: from a tensor per feature, or one [n, features]."""
    names = schema.names
    width = len(names)
    if len(req.inputs) == 1 and req.inputs[0].name not in names:
        t = req.inputs[0]
        if len(t.shape) != 2 or t.shape[1] != width:
            raise BadRequest(
                f"{t.where()}.name: {t.name!r} is not a feature of this model, and its shape "
                f"{t.shape} is not [n, {width}] (one row per prediction, features {names})"
            )
        n = t.shape[0]
        columns = [_column(t, schema, j, range(j, n * width, width)) for j in range(width)]
        return [list(r) for r in zip(*columns, strict=True)] if n else []
    by_name: dict[str, list[Any]] = {}
    for t in req.inputs:
        if t.name not in names:
            raise BadRequest(
                f"{t.where()}.name: {t.name!r} is not a feature of this model ({names})"
            )
        if len(t.shape) > 2 or (len(t.shape) == 2 and t.shape[1] != 1) or not t.shape:
            raise BadRequest(f"{t.where()}.shape: a feature's tensor has shape [n] or [n, 1]")
        by_name[t.name] = _column(t, schema, names.index(t.name), range(len(t.values)))
    sizes = {len(c) for c in by_name.values()}
    if len(sizes) != 1:
        raise BadRequest("inputs: every feature's tensor must hold the same number of rows")
    n = sizes.pop()
    cols = [by_name.get(name, [None] * n) for name in names]
    return [list(r) for r in zip(*cols, strict=True)]


def _column(t: Tensor, schema: FeatureSchema, j: int, at: Sequence[int]) -> list[Any]:
    """Feature j's values from tensor ``t`` at these flat positions, typed for the schema:
    floats for a numeric feature, strings or integers for a categorical one."""
    f = schema.features[j]
    vals = t.values
    if isinstance(vals, list):  # BYTES
        if f.type == "numeric":
            out: list[Any] = []
            for k in at:
                try:
                    v = float(vals[k])
                except (ValueError, TypeError):
                    raise BadRequest(
                        f"{t.where(k)} ({f.name}): {vals[k]!r} is not a number"
                    ) from None
                if not math.isfinite(v):
                    raise BadRequest(f"{t.where(k)} ({f.name}): must be finite (got {vals[k]!r})")
                out.append(v)
            return out
        return [_text(t, k, vals[k]) for k in at]
    col = vals[np.asarray(at, dtype=np.intp)]
    if f.type == "numeric":
        return col.astype(np.float64).tolist()
    if col.dtype.kind == "f":  # an integer as a category: exact in a double up to 2**53
        bad = np.flatnonzero(~np.isfinite(col) | (col != np.round(col)) | (np.abs(col) > 2**53))
        if len(bad):
            k = at[int(bad[0])]
            raise BadRequest(
                f"{t.where(k)} ({f.name}): a categorical value given as a number must be an "
                f"integer (got {float(vals[k])!r})"
            )
        return col.astype(np.int64).tolist()
    if col.dtype.kind == "b":
        return ["true" if v else "false" for v in col.tolist()]
    return col.tolist()


# -- answers ---------------------------------------------------------------------------
def answer(req: Request, result: Result, model: str) -> tuple[bytes, int | None]:
    """The infer answer's body, and the length of its JSON header when binary data follows."""
    ids = [str(i) for i in result.ids]
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in wanted(req, result).items():
        out, data = output(name, binary, req, result, ids)
        if binary:
            out["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        outputs.append(out)
    head = orjson.dumps(
        {
            "model_name": model,
            "model_version": str(result.version) if result.version is not None else None,
            "id": answer_id(req, ids),
            "parameters": {"revision": result.revision or "", "fallback": result.fallback},
            "outputs": outputs,
        }
    )
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def wanted(req: Request, result: Result) -> dict[str, bool]:
    """The outputs an answer holds (name -> binary): those asked for, else every one."""
    if req.outputs is not None:
        return req.outputs
    names = CLASS_OUTPUTS if result.classes is not None else OUTPUTS
    return dict.fromkeys(names, req.binary_output)


def answer_id(req: Request, ids: list[str]) -> str:
    """An answer's id: the request's, else its first prediction's."""
    return req.id if req.id is not None else (ids[0] if ids else "")


def output(
    name: str, binary: bool, req: Request, result: Result, ids: list[str]
) -> tuple[dict[str, Any], bytes]:
    """One output of an answer: its JSON form (name, datatype, shape; and its data when not
    ``binary``), and its binary data when ``binary``."""
    if name == "predict" and result.classes is None:
        out: dict[str, Any] = {"name": name, "datatype": "FP64",
                               "shape": [len(result.predictions)]}  # fmt: skip
        if binary:
            return out, np.asarray(result.predictions, dtype="<f8").tobytes()
        out["data"] = orjson.Fragment(result.predictions_json())  # the bytes the log keeps too
        return out, b""
    if name == "probabilities":
        return _probabilities(result, req.datatypes.get(name, "FP64"), binary)
    if name == "predict":  # (multiclass: each row's class)
        values = result.classes_answered()
    else:
        values = ids if name == "ids" else list(result.tracks)
    out = {"name": name, "datatype": "BYTES", "shape": [len(values)]}
    if binary:
        return out, b"".join(len(b).to_bytes(4, "little") + b for b in (v.encode() for v in values))
    out["data"] = values
    return out, b""


def _probabilities(result: Result, datatype: str, binary: bool) -> tuple[dict[str, Any], bytes]:
    """A multiclass answer's ``probabilities`` output, and its binary data (if binary)."""
    p = np.asarray(result.predictions)
    out: dict[str, Any] = {"name": "probabilities", "datatype": datatype, "shape": list(p.shape)}
    if binary:
        return out, p.astype(PROBABILITY_TYPES[datatype]).tobytes()
    # flat, in row-major order; the float32 values the result holds, in their shortest form
    out["data"] = orjson.Fragment(orjson.dumps(p.ravel(), option=orjson.OPT_SERIALIZE_NUMPY))
    return out, b""


# -- a request re-sent over HTTP ------------------------------------------------------------
def binary_request(req: Request) -> tuple[bytes, int]:
    """``req`` as the binary tensor data extension sends it (the body, and its JSON header's
    length), every output asked for in binary: what a server sends a canary in another
    image for a request that came over gRPC."""
    tensors: list[tuple[str, str, list[int], bytes]] = [
        (t.name, t.datatype, t.shape, _tensor_bytes(t.datatype, t.values)) for t in req.inputs
    ]
    if req.ids is not None:
        ids = [str(i).encode() for i in req.ids]
        tensors.append(("ids", "BYTES", [len(ids)], _tensor_bytes("BYTES", ids)))
    doc: dict[str, Any] = {
        "inputs": [{"name": name, "datatype": datatype, "shape": shape,
                    "parameters": {"binary_data_size": len(data)}}
                   for name, datatype, shape, data in tensors],
        "parameters": {"binary_data_output": True},
    }  # fmt: skip
    if req.id is not None:
        doc["id"] = req.id
    if req.outputs is not None:
        doc["outputs"] = [
            {"name": name, "parameters": {"binary_data": True, **(
                {"datatype": req.datatypes[name]} if name in req.datatypes else {})}}
            for name in req.outputs
        ]  # fmt: skip
    head = orjson.dumps(doc)
    return head + b"".join(t[3] for t in tensors), len(head)


def _tensor_bytes(datatype: str, values: np.ndarray | list[Any]) -> bytes:
    dtype = DTYPES[datatype]
    if dtype is not None:
        return np.asarray(values, dtype=dtype).tobytes()
    items = (v if isinstance(v, bytes) else str(v).encode() for v in values)
    return b"".join(len(b).to_bytes(4, "little") + b for b in items)


def binary_answer(body: bytes, header_length: str | None) -> tuple[dict[str, Any], list[bytes]]:
    """An infer answer's JSON header and each output's data as binary (the answer to
    :func:`binary_request`; an output answered as JSON is encoded here)."""
    n = int(header_length) if header_length is not None else len(body)
    doc = orjson.loads(body[:n])
    blobs: list[bytes] = []
    offset = n
    for out in doc.get("outputs", []):
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            blobs.append(body[offset : offset + size])
            offset += size
        else:
            data = _flatten(out.get("data", []))
            values = [v.encode() for v in data] if out["datatype"] == "BYTES" else data
            blobs.append(_tensor_bytes(out["datatype"], values))
    return doc, blobs
