"""The server as real clients call it: tritonclient's HTTP client, on its defaults and not.

tritonclient sends tensors in the binary tensor data extension and asks for
binary outputs unless told otherwise; these tests call a server listening on a
real port, as a user's code would.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.helpers import Served, fraud_model, listening, manifest, wait_until
from tideline.store import ModelStore

pytestmark = pytest.mark.integration
ROWS = [
    {"amount": 12.5, "hour": 3, "merchant": "m-1"},
    {"amount": 0.5, "hour": 12, "merchant": "m-2"},
]
httpclient = pytest.importorskip("tritonclient.http")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException


@pytest.fixture
def server(r, redis_server) -> Iterator[tuple[Served, str]]:
    s = Served(redis_server.url, manifest(name="fraud"))
    ModelStore(r, "test", "fraud").publish(s.model.revision, 0, fraud_model())
    with listening(s) as url:
        yield s, url.removeprefix("http://")


def _v1(s: Served) -> list[float]:
    return s.client.post("/v1/models/fraud:predict", json={"instances": ROWS}).json()["predictions"]


def _per_feature(binary: bool) -> list:
    amount = httpclient.InferInput("amount", [2], "FP64")
    amount.set_data_from_numpy(np.array([r["amount"] for r in ROWS]), binary_data=binary)
    hour = httpclient.InferInput("hour", [2], "INT64")
    hour.set_data_from_numpy(
        np.array([r["hour"] for r in ROWS], dtype=np.int64), binary_data=binary
    )
    merchant = httpclient.InferInput("merchant", [2], "BYTES")
    merchant.set_data_from_numpy(np.array([r["merchant"] for r in ROWS], dtype=object),
                                 binary_data=binary)  # fmt: skip
    return [amount, hour, merchant]


def test_tritonclient_health_and_metadata(server) -> None:
    s, url = server
    c = httpclient.InferenceServerClient(url)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("fraud") and c.is_model_ready("fraud", "0")
    assert not c.is_model_ready("fraud", "7")
    meta = c.get_server_metadata()
    assert meta["name"] == "tideline" and "binary_tensor_data" in meta["extensions"]
    model = c.get_model_metadata("fraud", "0")
    assert model["versions"] == ["0"]
    assert [i["name"] for i in model["inputs"]] == ["amount", "hour", "merchant"]
    assert {o["name"] for o in model["outputs"]} == {"predict", "ids", "tracks"}
    assert all(isinstance(v, str | int | float | bool) for v in model["parameters"].values())


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("version", ["", "0"], ids=["unversioned", "version 0"])
def test_tritonclient_infers_per_feature_as_the_v1_route_does(server, binary, version) -> None:
    s, url = server
    c = httpclient.InferenceServerClient(url)
    result = c.infer("fraud", _per_feature(binary), model_version=version)  # outputs: binary
    np.testing.assert_allclose(result.as_numpy("predict"), _v1(s))
    ids = result.as_numpy("ids")
    assert len(ids) == 2 and all(i.decode().count("-") >= 4 for i in ids)
    assert [t.decode() for t in result.as_numpy("tracks")] == ["stable", "stable"]
    response = result.get_response()
    assert response["model_version"] == "0" and response["parameters"]["fallback"] is False


def test_tritonclient_asks_for_json_outputs_and_only_those_it_names(server) -> None:
    s, url = server
    c = httpclient.InferenceServerClient(url)
    out = [httpclient.InferRequestedOutput("predict", binary_data=False)]
    result = c.infer("fraud", _per_feature(True), outputs=out, request_id="req-7")
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["predict"] and response["id"] == "req-7"
    np.testing.assert_allclose(response["outputs"][0]["data"], _v1(s))
    with pytest.raises(InferenceServerException, match="'score' is not an output"):
        c.infer("fraud", _per_feature(True), outputs=[httpclient.InferRequestedOutput("score")])


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "BYTES"])
def test_one_matrix_tensor_carries_every_feature_in_any_datatype(server, datatype) -> None:
    """Categorical values as integer codes in a numeric tensor, numbers as text in BYTES."""
    s, url = server
    rows = [
        {"amount": 12.5, "hour": 3, "merchant": "4"},
        {"amount": 0.5, "hour": 12, "merchant": "17"},
    ]
    expected = s.client.post("/v1/models/fraud:predict", json={"instances": rows}).json()
    matrix = [[r["amount"], r["hour"], int(r["merchant"])] for r in rows]
    if datatype == "BYTES":
        data = np.array([[str(v).encode() for v in row] for row in matrix], dtype=object)
    else:
        data = np.array(matrix, dtype=np.float64 if datatype == "FP64" else np.float32)
    x = httpclient.InferInput("input", [2, 3], datatype)
    x.set_data_from_numpy(data)
    result = httpclient.InferenceServerClient(url).infer("fraud", [x])
    np.testing.assert_allclose(result.as_numpy("predict"), expected["predictions"], rtol=1e-6)


def test_what_tritonclient_can_send_wrong_is_a_400_naming_the_element(server) -> None:
    _, url = server
    c = httpclient.InferenceServerClient(url)
    x = httpclient.InferInput("input", [2, 3], "FP64")
    x.set_data_from_numpy(np.array([[1.0, 2.0, 3.5], [1.0, 2.0, 4.0]]))  # a category of 3.5
    with pytest.raises(InferenceServerException) as e:
        c.infer("fraud", [x])
    assert e.value.status() == "400"
    assert "inputs[0] (input).data[2] (merchant)" in e.value.message()
    with pytest.raises(InferenceServerException, match="version '9' of 'fraud' is not served"):
        c.infer("fraud", _per_feature(True), model_version="9")


def test_a_binary_request_forwarded_to_a_canary_in_another_image_comes_back_binary(
    served: Served, r, other_image_canary
) -> None:
    canary, url = other_image_canary
    r.hset(served.dp.keys.routing, mapping={
        "stable": served.model.revision, "canary": canary.model.revision, "weight": 100,
        "canaryURL": url})  # fmt: skip
    wait_until(lambda: served.dp.routing.canary_url == url, timeout=2)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(_per_feature(True))
    resp = served.client.post("/v2/models/fraud/infer", content=body,
                              headers={"Inference-Header-Content-Length": str(json_size)})  # fmt: skip
    assert resp.status_code == 200, resp.text
    length = resp.headers["inference-header-content-length"]
    result = httpclient.InferResult.from_response_body(resp.content, header_length=int(length))
    assert [t.decode() for t in result.as_numpy("tracks")] == ["canary", "canary"]
    assert result.get_response()["parameters"]["revision"] == canary.model.revision
