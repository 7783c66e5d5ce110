"""The Open Inference Protocol's gRPC messages (package ``inference``), built from their fields.

The protocol's ``grpc_predict_v2.proto`` (KServe's; Triton's ``grpc_service.proto``
holds the same messages under the same names and numbers) is written out here as a
table of fields, and its descriptors are built from the table at import: no
``protoc``, nothing generated. The messages live in a pool of their own, so a process
that also imports a client's generated ``inference`` messages (tritonclient, the
kserve SDK) holds both without a clash.

Only what the service answers is here: the health, metadata and infer messages (the
model repository extension's load and unload are not served). ``InferParameter``
carries Triton's ``double_param`` and ``uint64_param`` besides the protocol's three,
so a parameter either client sends is read.

Examples
--------
>>> req = ModelInferRequest(model_name="fraud", id="r-1")
>>> ModelInferRequest.FromString(req.SerializeToString()).model_name
'fraud'
>>> InferParameter(string_param="x").WhichOneof("parameter_choice")
'string_param'
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "inference"
SERVICE = f"{PACKAGE}.GRPCInferenceService"

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES,
    "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64, "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64, "float": _F.TYPE_FLOAT, "double": _F.TYPE_DOUBLE,
}  # fmt: skip

# message -> its fields: (name, number, type, label); a type not in _SCALARS is a message
# (a nested one by its own name), "map" a map<string, InferParameter>; "oneof" fields
# share the message's one oneof.
_PARAMETERS = ("parameters", "map")
_MESSAGES: dict[str, list[tuple[str, int, str, str]]] = {
    "ServerLiveRequest": [],
    "ServerLiveResponse": [("live", 1, "bool", "")],
    "ServerReadyRequest": [],
    "ServerReadyResponse": [("ready", 1, "bool", "")],
    "ModelReadyRequest": [("name", 1, "string", ""), ("version", 2, "string", "")],
    "ModelReadyResponse": [("ready", 1, "bool", "")],
    "ServerMetadataRequest": [],
    "ServerMetadataResponse": [
        ("name", 1, "string", ""), ("version", 2, "string", ""),
        ("extensions", 3, "string", "repeated"),
    ],
    "ModelMetadataRequest": [("name", 1, "string", ""), ("version", 2, "string", "")],
    "ModelMetadataResponse": [
        ("name", 1, "string", ""), ("versions", 2, "string", "repeated"),
        ("platform", 3, "string", ""), ("inputs", 4, "TensorMetadata", "repeated"),
        ("outputs", 5, "TensorMetadata", "repeated"),
    ],
    "ModelMetadataResponse.TensorMetadata": [
        ("name", 1, "string", ""), ("datatype", 2, "string", ""),
        ("shape", 3, "int64", "repeated"),
    ],
    "ModelInferRequest": [
        ("model_name", 1, "string", ""), ("model_version", 2, "string", ""),
        ("id", 3, "string", ""), ("parameters", 4, "map", ""),
        ("inputs", 5, "InferInputTensor", "repeated"),
        ("outputs", 6, "InferRequestedOutputTensor", "repeated"),
        ("raw_input_contents", 7, "bytes", "repeated"),
    ],
    "ModelInferRequest.InferInputTensor": [
        ("name", 1, "string", ""), ("datatype", 2, "string", ""),
        ("shape", 3, "int64", "repeated"), ("parameters", 4, "map", ""),
        ("contents", 5, "InferTensorContents", ""),
    ],
    "ModelInferRequest.InferRequestedOutputTensor": [
        ("name", 1, "string", ""), ("parameters", 2, "map", ""),
    ],
    "ModelInferResponse": [
        ("model_name", 1, "string", ""), ("model_version", 2, "string", ""),
        ("id", 3, "string", ""), ("parameters", 4, "map", ""),
        ("outputs", 5, "InferOutputTensor", "repeated"),
        ("raw_output_contents", 6, "bytes", "repeated"),
    ],
    "ModelInferResponse.InferOutputTensor": [
        ("name", 1, "string", ""), ("datatype", 2, "string", ""),
        ("shape", 3, "int64", "repeated"), ("parameters", 4, "map", ""),
        ("contents", 5, "InferTensorContents", ""),
    ],
    "InferParameter": [
        ("bool_param", 1, "bool", "oneof"), ("int64_param", 2, "int64", "oneof"),
        ("string_param", 3, "string", "oneof"), ("double_param", 4, "double", "oneof"),
        ("uint64_param", 5, "uint64", "oneof"),
    ],
    "InferTensorContents": [
        ("bool_contents", 1, "bool", "repeated"), ("int_contents", 2, "int32", "repeated"),
        ("int64_contents", 3, "int64", "repeated"), ("uint_contents", 4, "uint32", "repeated"),
        ("uint64_contents", 5, "uint64", "repeated"), ("fp32_contents", 6, "float", "repeated"),
        ("fp64_contents", 7, "double", "repeated"), ("bytes_contents", 8, "bytes", "repeated"),
    ],
}  # fmt: skip

# the service's methods: name -> (request, response)
METHODS = {
    name: (f"{name}Request", f"{name}Response")
    for name in (
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    )  # fmt: skip
}


def _file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(
        name="tideline/oip_grpc.proto", package=PACKAGE, syntax="proto3"
    )
    made: dict[str, descriptor_pb2.DescriptorProto] = {}
    for full in _MESSAGES:  # (outer messages come before their nested ones)
        outer, _, inner = full.partition(".")
        parent = f.message_type if not inner else made[outer].nested_type
        made[full] = parent.add(name=inner or outer)
    for full, fields in _MESSAGES.items():
        msg = made[full]
        outer = full.partition(".")[0]
        for name, number, kind, label in fields:
            field = msg.field.add(name=name, number=number, json_name=_camel(name))
            if kind == "map":  # map<string, InferParameter>: a repeated nested entry type
                entry = msg.nested_type.add(name=f"{_camel(name, True)}Entry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=_F.TYPE_STRING,
                                label=_F.LABEL_OPTIONAL, json_name="key")  # fmt: skip
                entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE,
                                label=_F.LABEL_OPTIONAL, json_name="value",
                                type_name=f".{PACKAGE}.InferParameter")  # fmt: skip
                field.type, field.label = _F.TYPE_MESSAGE, _F.LABEL_REPEATED
                field.type_name = f".{PACKAGE}.{full}.{entry.name}"
                continue
            field.label = _F.LABEL_REPEATED if label == "repeated" else _F.LABEL_OPTIONAL
            if kind in _SCALARS:
                field.type = _SCALARS[kind]
            else:
                nested = f"{outer}.{kind}" if f"{outer}.{kind}" in _MESSAGES else kind
                field.type, field.type_name = _F.TYPE_MESSAGE, f".{PACKAGE}.{nested}"
            if label == "oneof":
                if not msg.oneof_decl:
                    msg.oneof_decl.add(name="parameter_choice")
                field.oneof_index = 0
    service = f.service.add(name=SERVICE.rpartition(".")[2])
    for name, (request, response) in METHODS.items():
        service.method.add(name=name, input_type=f".{PACKAGE}.{request}",
                           output_type=f".{PACKAGE}.{response}")  # fmt: skip
    return f


def _camel(name: str, upper: bool = False) -> str:
    head, *rest = name.split("_")
    return (head.title() if upper else head) + "".join(p.title() for p in rest)


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file())


def _message(name: str) -> Any:
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))


ServerLiveRequest = _message("ServerLiveRequest")
ServerLiveResponse = _message("ServerLiveResponse")
ServerReadyRequest = _message("ServerReadyRequest")
ServerReadyResponse = _message("ServerReadyResponse")
ModelReadyRequest = _message("ModelReadyRequest")
ModelReadyResponse = _message("ModelReadyResponse")
ServerMetadataRequest = _message("ServerMetadataRequest")
ServerMetadataResponse = _message("ServerMetadataResponse")
ModelMetadataRequest = _message("ModelMetadataRequest")
ModelMetadataResponse = _message("ModelMetadataResponse")
ModelInferRequest = _message("ModelInferRequest")
ModelInferResponse = _message("ModelInferResponse")
InferParameter = _message("InferParameter")
InferTensorContents = _message("InferTensorContents")
MESSAGES = {name: _message(name) for pair in METHODS.values() for name in pair}


def parameter(value: bool | int | float | str) -> Any:
    """An ``InferParameter`` holding ``value`` (bool, int, float or str)."""
    if isinstance(value, bool):
        return InferParameter(bool_param=value)
    if isinstance(value, int):
        return InferParameter(int64_param=value)
    if isinstance(value, float):
        return InferParameter(double_param=value)
    return InferParameter(string_param=value)


def parameters(given: Any) -> dict[str, Any]:
    """A message's ``parameters`` map as plain values.

    >>> req = ModelInferRequest(parameters={"a": parameter("x"), "n": parameter(2)})
    >>> sorted(parameters(req.parameters).items())
    [('a', 'x'), ('n', 2)]
    """
    out: dict[str, Any] = {}
    for key, p in given.items():
        which = p.WhichOneof("parameter_choice")
        out[key] = getattr(p, which) if which is not None else None
    return out
