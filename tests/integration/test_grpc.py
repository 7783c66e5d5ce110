"""The Open Inference Protocol over gRPC, as real clients call it: tritonclient's gRPC client
and the kserve SDK's, on their defaults, against a server listening on real ports.

Every RPC of ``inference.GRPCInferenceService``, the refusals as gRPC status codes
carrying the HTTP route's messages, and the data plane HTTP has: canary routing (in
process, and forwarded to another image over HTTP), the prediction log, and a label
joined with the id a gRPC prediction answered.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import yaml

from tests.helpers import (
    FRAUD_FEATURES,
    Served,
    fraud_model,
    listening,
    log_entries,
    manifest,
    wait_until,
)
from tideline.demo.simulate import SyntheticStream
from tideline.pods.server import oip_messages as pb
from tideline.pods.server.api import ServerConfig
from tideline.store import ModelStore

pytestmark = pytest.mark.integration
grpcclient = pytest.importorskip("tritonclient.grpc")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException
ROWS = [
    {"amount": 12.5, "hour": 3, "merchant": "m-1"},
    {"amount": 0.5, "hour": 12, "merchant": "m-2"},
]
ROOT = Path(__file__).parents[2]


class GrpcServed(Served):
    """:class:`Served`, listening for gRPC too (on ``address``) once it runs."""

    def __init__(self, url: str, doc: dict, **settings: object) -> None:
        from tideline.demo.embedded import free_port

        port = free_port()
        config = ServerConfig(grpc_port=port, grpc_host="127.0.0.1", **settings)  # type: ignore[arg-type]
        super().__init__(url, doc, config)
        self.address = f"127.0.0.1:{port}"
        self.http = ""  # its HTTP base URL, once it listens


def _served(r, url: str, doc: dict | None = None, **settings: object) -> GrpcServed:  # type: ignore[no-untyped-def]
    s = GrpcServed(url, doc or manifest(name="fraud"), **settings)
    ModelStore(r, "test", "fraud").publish(s.model.revision, 0, fraud_model())
    return s


@pytest.fixture
def server(r, redis_server) -> Iterator[tuple[GrpcServed, str]]:  # type: ignore[no-untyped-def]
    """A model's server listening for HTTP and gRPC: it and its gRPC address."""
    s = _served(r, redis_server.url)
    with listening(s) as url:
        s.http = url
        yield s, s.address


def _v1(s: Served, rows: list[dict] = ROWS) -> list[float]:
    return s.client.post("/v1/models/fraud:predict", json={"instances": rows}).json()["predictions"]


def _per_feature(rows: list[dict] = ROWS, ids: list[str] | None = None) -> list:
    n = len(rows)
    amount = grpcclient.InferInput("amount", [n], "FP64")
    amount.set_data_from_numpy(np.array([r["amount"] for r in rows]))
    hour = grpcclient.InferInput("hour", [n], "INT64")
    hour.set_data_from_numpy(np.array([r["hour"] for r in rows], dtype=np.int64))
    merchant = grpcclient.InferInput("merchant", [n], "BYTES")
    merchant.set_data_from_numpy(np.array([r["merchant"] for r in rows], dtype=object))
    inputs = [amount, hour, merchant]
    if ids is not None:
        given = grpcclient.InferInput("ids", [n], "BYTES")
        given.set_data_from_numpy(np.array(ids, dtype=object))
        inputs.append(given)
    return inputs


def _refused(call, code: grpc.StatusCode) -> str:  # type: ignore[no-untyped-def]
    """The message of the refusal ``call()`` gets, which must have ``code``."""
    with pytest.raises(InferenceServerException) as e:
        call()
    assert e.value.status() == f"StatusCode.{code.name}", (e.value.status(), e.value.message())
    return str(e.value.message())


# -- tritonclient.grpc, on its defaults --------------------------------------------------------
def test_tritonclient_health_and_metadata(server) -> None:
    s, address = server
    c = grpcclient.InferenceServerClient(address)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("fraud") and c.is_model_ready("fraud", "0")
    assert "version '7' of 'fraud' is not served" in _refused(
        lambda: c.is_model_ready("fraud", "7"), grpc.StatusCode.NOT_FOUND
    )
    assert "model 'other' is not served here" in _refused(
        lambda: c.get_model_metadata("other"), grpc.StatusCode.NOT_FOUND
    )
    meta = c.get_server_metadata(as_json=True)
    assert meta["name"] == "tideline" and "binary_tensor_data" in meta["extensions"]
    model = c.get_model_metadata("fraud", "0", as_json=True)
    assert model["versions"] == ["0"] and model["platform"] == "tideline"
    assert [(i["name"], i["datatype"]) for i in model["inputs"]] == [
        ("amount", "FP64"), ("hour", "FP64"), ("merchant", "BYTES")]  # fmt: skip
    assert [o["name"] for o in model["outputs"]] == ["predict", "ids", "tracks"]


@pytest.mark.parametrize("version", ["", "0"], ids=["unversioned", "version 0"])
def test_tritonclient_infers_per_feature_as_the_v1_route_does(server, version) -> None:
    s, address = server
    c = grpcclient.InferenceServerClient(address)
    result = c.infer("fraud", _per_feature(), model_version=version)
    np.testing.assert_allclose(result.as_numpy("predict"), _v1(s))
    ids = result.as_numpy("ids")
    assert len(ids) == 2 and all(i.decode().count("-") >= 4 for i in ids)
    assert [t.decode() for t in result.as_numpy("tracks")] == ["stable", "stable"]
    response = result.get_response(as_json=True)
    assert response["model_version"] == "0" and response["id"] == ids[0].decode()
    assert response["parameters"]["fallback"] == {"bool_param": False}
    assert response["parameters"]["revision"] == {"string_param": s.model.revision}


def test_tritonclient_gets_only_the_outputs_it_names_and_its_request_id(server) -> None:
    s, address = server
    c = grpcclient.InferenceServerClient(address)
    out = [grpcclient.InferRequestedOutput("predict")]
    result = c.infer("fraud", _per_feature(), outputs=out, request_id="req-7")
    response = result.get_response()
    assert [o.name for o in response.outputs] == ["predict"] and response.id == "req-7"
    np.testing.assert_allclose(result.as_numpy("predict"), _v1(s))


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "BYTES"])
def test_one_matrix_tensor_carries_every_feature_in_any_datatype(server, datatype) -> None:
    s, address = server
    rows = [
        {"amount": 12.5, "hour": 3, "merchant": "4"},
        {"amount": 0.5, "hour": 12, "merchant": "17"},
    ]
    matrix = [[r["amount"], r["hour"], int(r["merchant"])] for r in rows]
    if datatype == "BYTES":
        data = np.array([[str(v).encode() for v in row] for row in matrix], dtype=object)
    else:
        data = np.array(matrix, dtype=np.float64 if datatype == "FP64" else np.float32)
    x = grpcclient.InferInput("input", [2, 3], datatype)
    x.set_data_from_numpy(data)
    result = grpcclient.InferenceServerClient(address).infer("fraud", [x])
    np.testing.assert_allclose(result.as_numpy("predict"), _v1(s, rows), rtol=1e-6)


def test_typed_contents_are_read_as_raw_contents_are(server) -> None:
    """Each input's ``contents`` (the protocol's typed fields) instead of raw bytes."""
    s, address = server
    req = pb.ModelInferRequest(model_name="fraud")
    for name, datatype, field, values in (
        ("amount", "FP64", "fp64_contents", [r["amount"] for r in ROWS]),
        ("hour", "INT32", "int_contents", [r["hour"] for r in ROWS]),
        ("merchant", "BYTES", "bytes_contents", [r["merchant"].encode() for r in ROWS]),
    ):
        t = req.inputs.add(name=name, datatype=datatype, shape=[2])
        getattr(t.contents, field).extend(values)
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        resp = call(req, timeout=10)
        assert [o.name for o in resp.outputs] == ["predict", "ids", "tracks"]
        np.testing.assert_allclose(np.frombuffer(resp.raw_output_contents[0], "<f8"), _v1(s))
        req.inputs[0].datatype = "FP32"  # FP64's values in fp32's field: named
        with pytest.raises(grpc.RpcError) as e:
            call(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[0] (amount).contents: FP32 data goes in contents.fp32_contents" in str(
        e.value.details()
    )


@pytest.mark.parametrize(
    ("inputs", "kw", "code", "message"),
    [
        (lambda: [_matrix([[1.0, 2.0, 3.5], [1.0, 2.0, 4.0]])], {}, grpc.StatusCode.INVALID_ARGUMENT,
         "inputs[0] (input).data[2] (merchant): a categorical value given as a number must be an integer (got 3.5)"),
        (_per_feature, {"model_version": "9"}, grpc.StatusCode.NOT_FOUND,
         "version '9' of 'fraud' is not served here"),
        (_per_feature, {"model_name": "other"}, grpc.StatusCode.NOT_FOUND,
         "model 'other' is not served here"),
        (_per_feature, {"outputs": [grpcclient.InferRequestedOutput("score")]},
         grpc.StatusCode.INVALID_ARGUMENT, "outputs[0].name: 'score' is not an output of this model"),
        (lambda: [_matrix([[1.0, 2.0]])], {}, grpc.StatusCode.INVALID_ARGUMENT,
         "inputs[0] (input).name: 'input' is not a feature of this model, and its shape [1, 2]"),
        (lambda: _per_feature(ROWS * 3), {}, grpc.StatusCode.RESOURCE_EXHAUSTED,
         "inputs: 6 rows is over the limit of 5"),
        (lambda: _per_feature(ids=["a", "a"]), {}, grpc.StatusCode.INVALID_ARGUMENT,
         "ids[1]: 'a' is given twice in the request"),
    ],
    ids=["a category of 3.5", "a version not served", "another model", "an unknown output",
         "a matrix of two features", "more rows than TIDELINE_MAX_ROWS",
         "an id twice in one request"],
)  # fmt: skip
def test_a_refusal_is_a_grpc_status_carrying_the_http_routes_message(
    r, redis_server, inputs, kw, code, message
) -> None:
    s = _served(r, redis_server.url, max_rows=5)
    with listening(s):
        c = grpcclient.InferenceServerClient(s.address)
        name = kw.pop("model_name", "fraud")
        assert message in _refused(lambda: c.infer(name, inputs(), **kw), code)


def _matrix(rows: list[list[float]]):  # type: ignore[no-untyped-def]
    x = grpcclient.InferInput("input", [len(rows), len(rows[0])], "FP64")
    x.set_data_from_numpy(np.array(rows))
    return x


def test_an_id_another_prediction_holds_is_already_exists(server) -> None:
    s, address = server
    c = grpcclient.InferenceServerClient(address)
    result = c.infer("fraud", _per_feature(ids=["order-1", "order-2"]))
    assert [i.decode() for i in result.as_numpy("ids")] == ["order-1", "order-2"]
    message = _refused(lambda: c.infer("fraud", _per_feature(ids=["order-3", "order-2"])),
                       grpc.StatusCode.ALREADY_EXISTS)  # fmt: skip
    assert "ids[1]: 'order-2' already names another prediction" in message


def test_with_no_version_loaded_and_lastgood_it_is_unavailable(r, redis_server) -> None:
    s = GrpcServed(redis_server.url, manifest(name="fraud"))  # nothing published
    with s.client:
        wait_until(lambda: _live(s.address))
        c = grpcclient.InferenceServerClient(s.address)
        assert c.is_server_live() and not c.is_server_ready() and not c.is_model_ready("fraud")
        message = _refused(lambda: c.infer("fraud", _per_feature()), grpc.StatusCode.UNAVAILABLE)
        assert "no model version is loaded yet" in message


def _live(address: str) -> bool:
    try:
        return bool(grpcclient.InferenceServerClient(address).is_server_live())
    except InferenceServerException:
        return False


# -- the data plane: routing, forwarding, the log, labels ----------------------------------------
def _with_canary(s: Served, r, weight: int) -> str:  # type: ignore[no-untyped-def]
    ModelStore(r, "test", "fraud").publish("canaryrev", 0, fraud_model(seed=3, params={"l2": 0.5}))
    r.hset(s.dp.keys.routing, mapping={"stable": s.model.revision, "canary": "canaryrev",
                                       "weight": weight})  # fmt: skip
    wait_until(lambda: s.dp.canary is not None and s.dp.routing.weight == weight, timeout=2)
    return "canaryrev"


def test_a_key_in_the_metadata_routes_as_the_http_header_does(server, r) -> None:
    from tideline.contracts import route_hash

    s, address = server
    _with_canary(s, r, weight=30)
    c = grpcclient.InferenceServerClient(address)
    for k in [f"user-{i}" for i in range(40)]:
        result = c.infer("fraud", _per_feature(ROWS[:1]), headers={"x-tideline-key": k})
        want = "canary" if route_hash(k) < 3000 else "stable"
        assert result.as_numpy("tracks")[0].decode() == want
        http = s.client.post("/v1/models/fraud:predict", json={"instances": ROWS[:1]},
                             headers={"x-tideline-key": k}).json()  # fmt: skip
        assert http["tracks"] == [want]
        np.testing.assert_allclose(result.as_numpy("predict"), http["predictions"])


def test_a_canary_in_another_image_answers_its_share_over_http(
    r, redis_server, other_image_canary
) -> None:
    canary, url = other_image_canary
    s = _served(r, redis_server.url)
    with listening(s):
        r.hset(s.dp.keys.routing, mapping={"stable": s.model.revision,
               "canary": canary.model.revision, "weight": 100, "canaryURL": url})  # fmt: skip
        wait_until(lambda: s.dp.routing.canary_url == url, timeout=2)
        c = grpcclient.InferenceServerClient(s.address)
        out = [grpcclient.InferRequestedOutput(n) for n in ("tracks", "predict", "ids")]
        result = c.infer("fraud", _per_feature(ids=["c-1", "c-2"]), outputs=out, request_id="q")
        assert [t.decode() for t in result.as_numpy("tracks")] == ["canary", "canary"]
        assert [i.decode() for i in result.as_numpy("ids")] == ["c-1", "c-2"]
        np.testing.assert_allclose(result.as_numpy("predict"), _v1(canary))
        response = result.get_response(as_json=True)
        assert response["id"] == "q" and [o["name"] for o in response["outputs"]] == [
            "tracks", "predict", "ids"]  # fmt: skip
        assert response["parameters"]["revision"] == {"string_param": canary.model.revision}
        # the canary logged it, as its own track
        wait_until(lambda: any(e["ids"] == ["c-1", "c-2"] for e in log_entries(r, canary.dp)))
        [e] = [e for e in log_entries(r, canary.dp) if e["ids"] == ["c-1", "c-2"]]
        assert e["track"] == "canary" and e["rows"] == ROWS


def test_a_grpc_prediction_is_logged_and_its_label_joins_it(server, r) -> None:
    from tideline.pods.learner import LearnerProcess

    s, address = server
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=8).take(20)
    rows = [{"amount": 0.0, "hour": 12.0, "merchant": "m-0", **row} for row in rows]
    c = grpcclient.InferenceServerClient(address)
    ids: list[str] = []
    for i in range(0, 20, 10):
        batch = rows[i : i + 10]
        result = c.infer("fraud", _floats(batch))
        ids += [i.decode() for i in result.as_numpy("ids")]
        np.testing.assert_allclose(result.as_numpy("predict"), _v1(s, batch), rtol=1e-9)
    wait_until(lambda: sum(len(e["ids"]) for e in log_entries(r, s)) == 40)  # (and HTTP's 20)
    grpc_entries = [e for e in log_entries(r, s) if e["ids"][0] in ids]
    assert [i for e in grpc_entries for i in e["ids"]] == ids
    assert [row for e in grpc_entries for row in e["rows"]] == rows
    feedback = [{"id": i, "label": label} for i, label in zip(ids, y.tolist(), strict=True)]
    # (over the port: the feedback route awaits Redis on the server's own loop)
    resp = httpx.post(f"{s.http}/v1/models/fraud/feedback", json={"feedback": feedback})
    assert resp.json() == {"accepted": 20}
    learner = LearnerProcess(s.model, r, checkpoint_seconds=0.0)
    learner.start()
    deadline = time.monotonic() + 10
    while learner.counters["samples"] < 20:
        assert time.monotonic() < deadline, learner.counters
        learner.step(block_ms=10)
    learner.flush()
    assert learner.counters["label_sum"] == y.sum()
    assert r.xlen(s.dp.keys.deadletter) == 0


def _floats(rows: list[dict]) -> list:
    n = len(rows)
    out = []
    for name, datatype in (("amount", "FP64"), ("hour", "FP64"), ("merchant", "BYTES")):
        t = grpcclient.InferInput(name, [n], datatype)
        values = [r[name] for r in rows]
        t.set_data_from_numpy(np.array(values, dtype=object if datatype == "BYTES" else None))
        out.append(t)
    return out


def test_grpc_answers_count_on_their_route_and_track(server) -> None:
    s, address = server
    c = grpcclient.InferenceServerClient(address)
    c.infer("fraud", _per_feature())
    with pytest.raises(InferenceServerException):
        c.infer("fraud", [_matrix([[1.0, 2.0, 3.5]])])
    metrics = s.client.get("/metrics").text
    assert (
        'tideline_server_requests_total{route="grpc/infer",status="200",track="stable"} 1.0'
        in metrics
    )
    assert (
        'tideline_server_requests_total{route="grpc/infer",status="400",track="none"} 1.0'
        in metrics
    )
    assert s.dp.stats["stable"].requests == 1 and s.dp.stats["stable"].refused == 1


@pytest.mark.parametrize(
    ("message", "code", "status", "said"),
    [
        (b"\xff\xff\xff", grpc.StatusCode.INVALID_ARGUMENT, "400",
         "the message is not an inference.ModelInferRequest"),
        (pb.ModelInferRequest(model_name="other").SerializeToString(), grpc.StatusCode.NOT_FOUND,
         "404", "model 'other' is not served here (this server serves 'fraud')"),
    ],
    ids=["bytes that are no ModelInferRequest are refused as invalid and counted as HTTP counts a body that is no JSON",
         "a model not served here is refused and counted"],
)  # fmt: skip
def test_a_grpc_refusal_counts_as_the_http_route_counts_one(
    server, message, code, status, said
) -> None:
    s, address = server
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as e:
            call(message, timeout=10)
    assert (e.value.code(), e.value.details()) == (code, said)
    metrics = s.client.get("/metrics").text
    assert (
        f'tideline_server_requests_total{{route="grpc/infer",status="{status}",track="none"}} 1.0'
        in metrics
    )
    assert s.dp.stats["stable"].refused == 1


@pytest.mark.parametrize("method", list(pb.METHODS))
def test_bytes_that_are_not_the_methods_message_are_invalid_naming_its_type(server, method) -> None:
    s, address = server
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
        with pytest.raises(grpc.RpcError) as e:
            call(b"\xff\xff\xff", timeout=10)
    assert (e.value.code(), e.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the message is not an inference.{method}Request",
    )


# -- the kserve SDK's gRPC client, on its defaults ----------------------------------------------
# Run in a process of its own: the kserve SDK's generated messages and tritonclient's both
# register inference.* in protobuf's default pool, so one process cannot import both.
KSERVE_CLIENT = """
import asyncio, json, sys
import numpy as np
import kserve

ROWS = json.loads(sys.argv[2])

async def main():
    async with kserve.InferenceGRPCClient(sys.argv[1]) as client:
        out = {"live": await client.is_server_live(), "ready": await client.is_server_ready(),
               "model": await client.is_model_ready("fraud")}
        numpy_inputs = [
            kserve.InferInput("amount", [2], "FP64", np.array([r["amount"] for r in ROWS])),
            kserve.InferInput("hour", [2], "INT64", np.array([r["hour"] for r in ROWS])),
            kserve.InferInput("merchant", [2], "BYTES",
                              np.array([r["merchant"] for r in ROWS], dtype=object)),
        ]
        list_inputs = [  # lists: sent as each input's typed contents
            kserve.InferInput("amount", [2], "FP64", [r["amount"] for r in ROWS]),
            kserve.InferInput("hour", [2], "INT64", [r["hour"] for r in ROWS]),
            kserve.InferInput("merchant", [2], "BYTES", [r["merchant"] for r in ROWS]),
        ]
        for kind, inputs in (("raw", numpy_inputs), ("typed", list_inputs)):
            resp = await client.infer(kserve.InferRequest("fraud", inputs, request_id="k-1"))
            outputs = {o.name: o.as_numpy().tolist() for o in resp.outputs}
            out[kind] = {"id": resp.id, "version": resp.model_version,
                         "predict": outputs["predict"],
                         "tracks": [t.decode() if isinstance(t, bytes) else t
                                    for t in outputs["tracks"]]}
        try:
            await client.infer(kserve.InferRequest("other", numpy_inputs))
        except Exception as e:
            out["error"] = [str(e.code()), e.details()]
    print(json.dumps(out))

asyncio.run(main())
"""


def _kserve_python() -> str | None:
    """An interpreter with the kserve SDK: this one, or bench/clients.py's virtualenv of it."""
    import importlib.util

    if importlib.util.find_spec("kserve") is not None:
        return sys.executable
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    venv = cache / "tideline-compat" / "kserve-0.21.0" / "bin" / "python"
    return str(venv) if venv.exists() else None


def test_the_kserve_sdk_grpc_client(server) -> None:
    import json

    python = _kserve_python()
    if python is None:
        # kserve 0.21.0 needs python-dateutil<3, kubernetes 37 >=3: not in the dev extra;
        # make test makes its virtualenv (make compat-bin) before pytest starts
        pytest.skip("the kserve SDK is not installed here nor in bench/clients.py's "
                    "virtualenv: run make compat-bin")  # fmt: skip
    s, address = server
    done = subprocess.run(
        [python, "-c", KSERVE_CLIENT, address, json.dumps(ROWS)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["live"] and out["ready"] and out["model"]
    expected = _v1(s)
    for kind in ("raw", "typed"):
        np.testing.assert_allclose(out[kind]["predict"], expected)
        assert out[kind]["tracks"] == ["stable", "stable"]
        assert out[kind]["id"] == "k-1" and out[kind]["version"] == "0"
    assert out["error"][0] == "StatusCode.NOT_FOUND" and "model 'other'" in out["error"][1]


# -- `tideline server`: uvloop, workers sharing the port ----------------------------------------
@pytest.mark.parametrize("workers", [1, 2], ids=["one worker", "two workers on one gRPC port"])
def test_tideline_server_answers_grpc_beside_http(r, redis_server, tmp_path: Path, workers) -> None:
    from tideline.demo.embedded import free_port

    doc = manifest(name="fraud")
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    s = Served(redis_server.url, doc)
    ModelStore(r, "test", "fraud").publish(s.model.revision, 0, fraud_model())
    port, grpc_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tideline.cli", "server", "--config", str(path), "--redis",
         redis_server.url, "--host", "127.0.0.1", "--port", str(port), "--grpc-port",
         str(grpc_port), "--workers", str(workers)],
        env={**{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
             "PYTHONPATH": str(ROOT / "runtime")}, cwd=ROOT,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        address = f"127.0.0.1:{grpc_port}"

        def ready() -> bool:
            try:
                return bool(grpcclient.InferenceServerClient(address).is_server_ready())
            except InferenceServerException:
                return False

        wait_until(ready, timeout=30, interval=0.1, message="the server ready over gRPC")
        with s.client:
            wait_until(lambda: s.dp.ready)
            expected = _v1(s)
        c = grpcclient.InferenceServerClient(address)
        for _ in range(8):  # (with two workers, both answer in turn)
            result = c.infer("fraud", _per_feature())
            np.testing.assert_allclose(result.as_numpy("predict"), expected)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode in (0, -15), err
    assert "Application shutdown complete" in err


# -- a multiclass model -----------------------------------------------------------------------
def test_a_multiclass_model_answers_class_names_and_probabilities_in_the_datatype_asked(
    r, redis_server
) -> None:
    from tideline.algorithms import make_learner

    classes = ["cat", "dog", "eel"]
    spec = {
        "task": "multiclass",
        "algorithm": "sgd",
        "features": FRAUD_FEATURES,
        "classes": classes,
    }
    learner = make_learner(spec)
    rows, _ = SyntheticStream(FRAUD_FEATURES, "binary", seed=3).take(300)
    rows = [{"amount": 0.0, "hour": 12.0, "merchant": "m-0", **row} for row in rows]
    X = learner.schema.encode(rows)
    y = np.digitize([row["amount"] for row in rows], [-1.0, 1.0]).astype(np.float64)
    learner.learn_many(X, y)
    s = GrpcServed(redis_server.url, manifest(name="zoo", model=spec))
    ModelStore(r, "test", "zoo").publish(s.model.revision, 0, learner)
    with listening(s):
        c = grpcclient.InferenceServerClient(s.address)
        meta = c.get_model_metadata("zoo", as_json=True)
        assert [(o["name"], o["datatype"]) for o in meta["outputs"]][:2] == [
            ("predict", "BYTES"), ("probabilities", "FP64")]  # fmt: skip
        out = [grpcclient.InferRequestedOutput("predict"),
               grpcclient.InferRequestedOutput("probabilities")]  # fmt: skip
        # (tritonclient.grpc has no setter for an output's parameters: its message is set)
        out[1]._output.parameters["datatype"].string_param = "FP32"
        result = c.infer("zoo", _floats(rows[:4]), outputs=out)
        expected = learner.predict_many(X[:4])
        probabilities = result.as_numpy("probabilities")
        assert probabilities.dtype == np.float32 and probabilities.shape == (4, 3)
        np.testing.assert_allclose(probabilities, expected, rtol=1e-6)
        assert [p.decode() for p in result.as_numpy("predict")] == [
            classes[i] for i in expected.argmax(axis=1)]  # fmt: skip
