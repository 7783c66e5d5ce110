"""The Open Inference Protocol's gRPC messages: built without protoc, read and answered as the
HTTP path reads and answers JSON and binary bodies, without a server."""

from __future__ import annotations

import grpc
import numpy as np
import orjson
import pytest

from tideline.features import FeatureSchema
from tideline.pods.server import oip
from tideline.pods.server import oip_messages as pb
from tideline.pods.server.dataplane import Result
from tideline.pods.server.errors import BadRequest
from tideline.pods.server.oip_grpc import GrpcV2, code_of, request_of, response_of
from tideline.pods.server.protocols import Decoded

SCHEMA = FeatureSchema.from_spec([{"name": "amount"}, {"name": "merchant", "type": "categorical"}])


def _bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(len(v).to_bytes(4, "little") + v for v in values)


def _raw() -> object:
    req = pb.ModelInferRequest(model_name="m", id="r-1")
    req.inputs.add(name="amount", datatype="FP32", shape=[2])
    req.inputs.add(name="merchant", datatype="BYTES", shape=[2])
    req.raw_input_contents.extend(
        [np.array([12.5, 0.5], dtype="<f4").tobytes(), _bytes_tensor([b"m-1", b"4"])]
    )
    return req


def _typed() -> object:
    req = pb.ModelInferRequest(model_name="m")
    req.inputs.add(name="amount", datatype="FP64", shape=[2]).contents.fp64_contents.extend(
        [12.5, 0.5]
    )
    req.inputs.add(name="merchant", datatype="INT64", shape=[2, 1]).contents.int64_contents.extend(
        [7, 4]
    )
    return req


def test_raw_and_typed_contents_read_as_their_http_twins() -> None:
    raw = oip.rows(request_of(_raw()), SCHEMA)
    assert raw == [[12.5, "m-1"], [0.5, "4"]]
    assert oip.rows(request_of(_typed()), SCHEMA) == [[12.5, 7], [0.5, 4]]
    body = orjson.dumps({"inputs": [
        {"name": "amount", "datatype": "FP32", "shape": [2], "data": [12.5, 0.5]},
        {"name": "merchant", "datatype": "BYTES", "shape": [2], "data": ["m-1", "4"]}]})  # fmt: skip
    assert oip.rows(oip.parse_request(body, None), SCHEMA) == raw


def _with(change) -> object:  # type: ignore[no-untyped-def]
    req = _raw()
    change(req)
    return req


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (lambda: _with(lambda r: r.raw_input_contents.pop()),
         "raw_input_contents: 1 given for 2 inputs"),
        (lambda: _with(lambda r: r.inputs[0].contents.fp32_contents.append(1.0)),
         "inputs[0] (amount).contents: given with raw_input_contents"),
        (lambda: _with(lambda r: setattr(r.inputs[0], "datatype", "FP64")),
         "inputs[0] (amount): 8 bytes of binary data, shape [2] of FP64 needs 16"),
        (lambda: _with(lambda r: setattr(r.inputs[1], "datatype", "BF16")),
         "inputs[1] (merchant).datatype: 'BF16' is not an OIP datatype"),
        (lambda: _with(lambda r: (r.inputs.add(name="amount", datatype="FP32", shape=[0]),
                                  r.raw_input_contents.append(b""))),
         "inputs[2].name: 'amount' is given twice"),
        (lambda: _with(lambda r: r.outputs.add(name="score")),
         "outputs[0].name: 'score' is not an output of this model"),
        (lambda: _with(lambda r: r.parameters["ids"].CopyFrom(pb.parameter("a"))),
         None),
    ],
    ids=["one raw content short", "contents beside raw contents", "too few bytes for FP64",
         "BF16", "a name given twice", "an unknown output", "ids as a parameter"],
)  # fmt: skip
def test_what_a_raw_request_can_get_wrong_is_named(request_, message) -> None:
    if message is None:  # a parameter can hold no list: read, and refused by the ids check
        assert request_of(request_()).ids == "a"
        return
    with pytest.raises(BadRequest) as e:
        request_of(request_())
    assert str(e.value).startswith(message), str(e.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.inputs[0].contents.fp32_contents.append(1.0),
         "inputs[0] (amount).contents: FP64 data goes in contents.fp64_contents (got fp32_contents, fp64_contents)"),
        (lambda r: r.inputs[1].contents.int64_contents.pop(),
         "inputs[1] (merchant).contents.int64_contents: holds 1 values, shape [2, 1] needs 2"),
        (lambda r: setattr(r.inputs[1], "datatype", "FP16"),
         "inputs[1] (merchant).contents: FP16 data goes in raw_input_contents (got int64_contents)"),
        (lambda r: setattr(r.inputs[1], "datatype", "INT8"),
         "inputs[1] (merchant).contents: INT8 data goes in contents.int_contents (got int64_contents)"),
    ],
    ids=["two fields of contents", "a value short", "FP16 in typed contents",
         "INT8 in int64_contents"],
)  # fmt: skip
def test_what_typed_contents_can_get_wrong_is_named(change, message) -> None:
    req = _typed()
    change(req)
    with pytest.raises(BadRequest) as e:
        request_of(req)
    assert str(e.value) == message


def test_an_int8_out_of_range_is_refused_as_in_json() -> None:
    req = pb.ModelInferRequest()
    req.inputs.add(name="amount", datatype="INT8", shape=[1]).contents.int_contents.append(300)
    with pytest.raises(BadRequest, match=r"inputs\[0\] \(amount\).data\[0\]: 300 is out of range"):
        request_of(req)


def test_the_answer_holds_every_output_raw_as_the_binary_extension_lays_it_out() -> None:
    req = request_of(_raw())
    result = Result([0.25, 0.75], ["a-0", "a-1"], 3, "rev", ["stable", "canary"])
    resp = pb.ModelInferResponse.FromString(response_of(req, result, "m"))
    assert (resp.model_name, resp.model_version, resp.id) == ("m", "3", "r-1")
    assert [(o.name, o.datatype, list(o.shape)) for o in resp.outputs] == [
        ("predict", "FP64", [2]), ("ids", "BYTES", [2]), ("tracks", "BYTES", [2])]  # fmt: skip
    assert np.frombuffer(resp.raw_output_contents[0], "<f8").tolist() == [0.25, 0.75]
    assert resp.raw_output_contents[2] == _bytes_tensor([b"stable", b"canary"])
    assert pb.parameters(resp.parameters) == {"revision": "rev", "fallback": False}
    # the HTTP answer's binary data is the same bytes
    body, length = oip.answer(oip.Request("r-1", req.inputs, None, True, None), result, "m")
    assert length is not None and body[length:] == b"".join(resp.raw_output_contents)


def test_a_request_forwarded_to_a_canary_over_http_comes_back_as_a_grpc_answer() -> None:
    proto = GrpcV2()
    msg = _raw()
    msg.outputs.add(name="tracks")
    msg.outputs.add(name="predict")
    decoded = proto.decode(msg, {}, SCHEMA, True)
    decoded.ids = ["x-1", "x-2"]
    path, body, headers = proto.forwarded(decoded, msg, "/v2/models/m/infer", {"a": "b"})
    again = oip.parse_request(body, headers[oip.HEADER])
    assert path == "/v2/models/m/infer" and headers["a"] == "b"
    assert oip.rows(again, SCHEMA) == decoded.rows and again.ids == ["x-1", "x-2"]
    assert again.outputs == {"tracks": True, "predict": True} and again.id == "r-1"
    # the canary answers in binary, as asked; the answer is the gRPC one
    result = Result([0.5, 0.5], ["x-1", "x-2"], 1, "canaryrev", ["canary", "canary"])
    answer, length = oip.answer(again, result, "m")
    status, content, _ = proto.canary_answer(Decoded(None, None), answer, {oip.HEADER: str(length)})
    resp = pb.ModelInferResponse.FromString(content)
    assert status == 200 and [o.name for o in resp.outputs] == ["tracks", "predict"]
    assert resp.raw_output_contents[0] == _bytes_tensor([b"canary", b"canary"])
    assert pb.parameters(resp.parameters) == {"revision": "canaryrev", "fallback": False}


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, grpc.StatusCode.INVALID_ARGUMENT), (422, grpc.StatusCode.INVALID_ARGUMENT),
     (404, grpc.StatusCode.NOT_FOUND), (409, grpc.StatusCode.ALREADY_EXISTS),
     (413, grpc.StatusCode.RESOURCE_EXHAUSTED), (503, grpc.StatusCode.UNAVAILABLE),
     (504, grpc.StatusCode.DEADLINE_EXCEEDED), (500, grpc.StatusCode.INTERNAL)],
    ids=["bad input", "unprocessable input", "no such model or version",
         "an id another prediction holds", "too many rows", "no model or store",
         "a deadline", "a bug"],
)  # fmt: skip
def test_an_http_status_has_the_grpc_code_kserve_answers_with(status, code) -> None:
    assert code_of(status) == code


def test_the_messages_are_the_protocols_on_the_wire() -> None:
    """Byte for byte what tritonclient's generated messages read and write."""
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    ours = _raw()
    ours.outputs.add(name="predict", parameters={"datatype": pb.parameter("FP32")})
    ours.parameters["n"].CopyFrom(pb.parameter(3))
    theirs = service_pb2.ModelInferRequest.FromString(ours.SerializeToString())
    assert theirs.inputs[1].name == "merchant" and theirs.parameters["n"].int64_param == 3
    assert pb.ModelInferRequest.FromString(theirs.SerializeToString()) == ours
    meta = pb.ModelMetadataResponse(name="m", versions=["1"])
    meta.inputs.add(name="amount", datatype="FP64", shape=[-1])
    assert service_pb2.ModelMetadataResponse.FromString(meta.SerializeToString()).inputs[
        0
    ].shape == [-1]
    assert set(pb.METHODS) == {m.name for m in service_pb2.DESCRIPTOR.services_by_name[
        "GRPCInferenceService"].methods} & set(pb.METHODS)  # fmt: skip


@pytest.mark.parametrize(
    ("env", "port", "host"),
    [({}, None, "0.0.0.0"), ({"TIDELINE_GRPC_PORT": "8081"}, 8081, "0.0.0.0"),
     ({"TIDELINE_GRPC_PORT": "0"}, None, "0.0.0.0"),
     ({"TIDELINE_GRPC_PORT": "9001", "TIDELINE_GRPC_HOST": "::"}, 9001, "::")],
    ids=["no gRPC unless asked (tests, apps built in code)", "the CLI's default port",
         "--grpc-port 0: none", "another port and host"],
)  # fmt: skip
def test_the_grpc_port_comes_from_the_environment_the_cli_sets(env, port, host) -> None:
    from tideline.pods.server.api import ServerConfig

    settings = ServerConfig.from_env(env)
    assert (settings.grpc_port, settings.grpc_host) == (port, host)
