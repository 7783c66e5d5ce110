"""A multiclass model served: V1 and V2 answer class names (and the classes' probabilities
when asked), the metadata names the classes, labels are class names on the streams, the
fixed fallback answers its class, and the log keeps every row's probabilities. Against a
real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

from tests.helpers import FRAUD_FEATURES, Served, listening, log_entries, manifest, wait_until
from tideline.algorithms import make_learner
from tideline.algorithms.base import Learner
from tideline.contracts import route_hash
from tideline.store import ModelStore
from tideline.tasks import Task

pytestmark = pytest.mark.integration

CLASSES = ["cat", "dog", "eel"]
MODEL = {"task": "multiclass", "algorithm": "sgd", "features": FRAUD_FEATURES, "classes": CLASSES}
PREDICT, INFER = "/v1/models/zoo:predict", "/v2/models/zoo/infer"
TASK = Task("multiclass", tuple(CLASSES))


def _stream(n: int, seed: int) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Rows whose class is the band their amount falls in: cat below -1, eel above 1."""
    rng = np.random.default_rng(seed)
    amount, hour = rng.normal(0.0, 2.0, n), rng.uniform(0.0, 24.0, n)
    merchant = rng.integers(0, 8, n)
    rows = [{"amount": float(a), "hour": float(h), "merchant": f"m-{m}"}
            for a, h, m in zip(amount, hour, merchant, strict=True)]  # fmt: skip
    return rows, np.digitize(amount, [-1.0, 1.0]).astype(np.float64)


def _trained(seed: int = 0, model: dict[str, Any] = MODEL) -> Learner:
    learner = make_learner(model)
    rows, y = _stream(3000, seed)
    X = learner.schema.encode(rows)
    for _ in range(3):
        learner.learn_many(X, y)
    return learner


def _probabilities(learner: Learner, rows: list[dict[str, Any]]) -> np.ndarray:
    return learner.predict_many(learner.schema.encode(rows))


# two rows of each class (by the amount's band), the merchants and hours various
ROWS = [{"amount": a, "hour": h, "merchant": f"m-{i}"}
        for i, (a, h) in enumerate([(-4.0, 3.0), (-2.5, 22.0), (0.0, 12.0), (0.4, 7.0),
                                    (2.5, 1.0), (5.0, 15.0)])]  # fmt: skip


@pytest.fixture
def zoo(r, redis_server) -> Iterator[tuple[Served, Learner]]:
    """A multiclass sgd version served, and the learner it is a copy of."""
    s = Served(redis_server.url, manifest(name="zoo", model=MODEL))
    learner = _trained()
    ModelStore(r, "test", "zoo").publish(s.model.revision, 0, learner)
    with s.client:
        wait_until(lambda: s.dp.ready)
        yield s, learner


def _head(resp: Any) -> dict[str, Any]:
    """A V2 answer's JSON (its header, when binary data follows)."""
    length = resp.headers.get("inference-header-content-length")
    return orjson.loads(resp.content[: int(length)] if length else resp.content)


def _outputs(resp: Any) -> dict[str, dict[str, Any]]:
    """A V2 answer's outputs by name, their binary data (if any) read into ``data``."""
    body, head = resp.content, _head(resp)
    length = resp.headers.get("inference-header-content-length")
    at = int(length) if length else 0
    out = {}
    for o in head["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            blob, at = body[at : at + size], at + size
            if o["datatype"] == "BYTES":
                values, k = [], 0
                while k < len(blob):
                    n = int.from_bytes(blob[k : k + 4], "little")
                    values.append(blob[k + 4 : k + 4 + n].decode())
                    k += 4 + n
                o["data"] = values
            else:
                dtype = {"FP64": "<f8", "FP32": "<f4"}[o["datatype"]]
                o["data"] = np.frombuffer(blob, dtype=dtype).tolist()
        out[o["name"]] = o
    assert length is None or at == len(body), "every byte of binary data belongs to an output"
    return out


def _infer(rows: list[dict[str, Any]], **doc: Any) -> dict[str, Any]:
    return {"inputs": [
        {"name": "amount", "shape": [len(rows)], "datatype": "FP64", "data": [r["amount"] for r in rows]},
        {"name": "hour", "shape": [len(rows)], "datatype": "FP64", "data": [r["hour"] for r in rows]},
        {"name": "merchant", "shape": [len(rows)], "datatype": "BYTES",
         "data": [r["merchant"] for r in rows]},
    ], **doc}  # fmt: skip


# --------------------------------------------------------------------------- V1
@pytest.mark.parametrize(
    "rows", [ROWS, [{k: v for k, v in r.items() if k != "hour"} for r in ROWS]],
    ids=["every feature given: the typed fast path", "a feature missing: the general path"],
)  # fmt: skip
def test_v1_answers_the_class_names_and_the_probabilities_when_asked(zoo, rows) -> None:
    s, learner = zoo
    p = _probabilities(learner, rows)
    assert len(set(p.argmax(axis=1).tolist())) == 3, "the rows span the three classes"
    want = [CLASSES[i] for i in p.argmax(axis=1).tolist()]
    plain = s.client.post(PREDICT, json={"instances": rows}).json()
    assert plain["predictions"] == want and "probabilities" not in plain
    assert plain["fallback"] is False and plain["model_version"] == 0
    asked = s.client.post(PREDICT, json={"instances": rows, "probabilities": True}).json()
    assert asked["predictions"] == want
    assert np.shape(asked["probabilities"]) == (len(rows), 3)
    np.testing.assert_allclose(asked["probabilities"], p, rtol=1e-6, atol=1e-7)  # (float32)
    # the probabilities are float32's shortest text: 0.6666667, not 0.6666666865348816
    assert all(len(repr(v)) <= 16 for row in asked["probabilities"] for v in row)
    off = s.client.post(PREDICT, json={"instances": rows, "probabilities": False}).json()
    assert "probabilities" not in off and off["predictions"] == want


def test_v1_refuses_probabilities_that_are_not_a_boolean(zoo) -> None:
    s, _ = zoo
    resp = s.client.post(PREDICT, json={"instances": ROWS, "probabilities": "yes"})
    assert (
        resp.status_code == 400 and resp.json()["error"] == "probabilities: must be true or false"
    )


def test_the_log_keeps_each_row_s_probabilities(zoo, r) -> None:
    s, learner = zoo
    body = s.client.post(PREDICT, json={"instances": ROWS, "probabilities": True}).json()
    wait_until(lambda: len(log_entries(r, s)) == 1)
    [entry] = log_entries(r, s)
    assert entry["ids"] == body["ids"] and entry["rows"] == ROWS
    assert entry["scores"] == body["probabilities"], "the bytes the answer carried"
    logged = TASK.checked(entry["scores"], len(entry["scores"]))  # (the monitor's reading)
    np.testing.assert_allclose(logged, _probabilities(learner, ROWS), rtol=1e-6, atol=1e-7)
    assert [CLASSES[i] for i in TASK.predicted(logged).tolist()] == body["predictions"]


# --------------------------------------------------------------------------- V2
def test_v2_json_answers_class_names_and_fp64_probabilities(zoo) -> None:
    s, learner = zoo
    p = _probabilities(learner, ROWS)
    resp = s.client.post(INFER, json=_infer(ROWS, id="q-1"))
    assert resp.status_code == 200, resp.text
    out = _outputs(resp)
    assert list(out) == ["predict", "probabilities", "ids", "tracks"]
    assert out["predict"]["datatype"] == "BYTES" and out["predict"]["shape"] == [6]
    assert out["predict"]["data"] == [CLASSES[i] for i in p.argmax(axis=1).tolist()]
    prob = out["probabilities"]
    assert (prob["datatype"], prob["shape"]) == ("FP64", [6, 3])
    assert len(prob["data"]) == 18, "flat, row-major"
    np.testing.assert_allclose(np.reshape(prob["data"], (6, 3)), p, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("outputs", "params", "datatype", "width"),
    [
        (None, {"binary_data_output": True}, "FP64", 8),
        ([{"name": "predict", "parameters": {"binary_data": True}},
          {"name": "probabilities", "parameters": {"binary_data": True, "datatype": "FP32"}}],
         {}, "FP32", 4),
        ([{"name": "probabilities", "parameters": {"datatype": "FP32"}}], {}, "FP32", None),
    ],
    ids=["every output binary, probabilities FP64", "the two asked for binary, probabilities FP32",
         "probabilities alone, FP32 as JSON"],
)  # fmt: skip
def test_v2_binary_and_requested_outputs(zoo, outputs, params, datatype, width) -> None:
    s, learner = zoo
    p = _probabilities(learner, ROWS)
    doc = _infer(ROWS, parameters=params)
    if outputs is not None:
        doc["outputs"] = outputs
    resp = s.client.post(INFER, json=doc)
    assert resp.status_code == 200, resp.text
    out = _outputs(resp)
    assert list(out) == ([o["name"] for o in outputs] if outputs else
                         ["predict", "probabilities", "ids", "tracks"])  # fmt: skip
    prob = out["probabilities"]
    assert (prob["datatype"], prob["shape"]) == (datatype, [6, 3])
    if width is not None:
        assert prob["parameters"]["binary_data_size"] == 6 * 3 * width
    else:
        assert "parameters" not in prob
    np.testing.assert_allclose(np.reshape(prob["data"], (6, 3)), p, rtol=1e-6, atol=1e-7)
    if "predict" in out:
        assert out["predict"]["data"] == [CLASSES[i] for i in p.argmax(axis=1).tolist()]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ({"name": "score"}, "outputs[0].name: 'score' is not an output of this model"),
        ({"name": "probabilities", "parameters": {"datatype": "INT8"}},
         "outputs[0].parameters.datatype: 'INT8' is not a datatype of probabilities (FP64, FP32)"),
    ],
    ids=["an unknown output", "probabilities as INT8"],
)  # fmt: skip
def test_v2_refuses_an_output_it_cannot_give_naming_it(zoo, output, message) -> None:
    s, _ = zoo
    resp = s.client.post(INFER, json=_infer(ROWS, outputs=[output]))
    assert resp.status_code == 400 and message in resp.json()["error"], resp.text


def test_a_binary_model_has_no_probabilities_output(served) -> None:
    doc = _infer(ROWS[:1], outputs=[{"name": "probabilities"}])
    resp = served.client.post("/v2/models/fraud/infer", json=doc)
    assert resp.status_code == 400
    assert (
        "'probabilities' is not an output of this model ('predict', 'ids', 'tracks')"
        in (resp.json()["error"])
    )


def test_metadata_names_the_classes_and_the_outputs_shapes(zoo) -> None:
    s, _ = zoo
    assert s.client.get("/v1/models/zoo").json() == {"name": "zoo", "ready": True,
                                                     "classes": CLASSES}  # fmt: skip
    meta = s.client.get("/v2/models/zoo").json()
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("predict", "BYTES", [-1]), ("probabilities", "FP64", [-1, 3]),
        ("ids", "BYTES", [-1]), ("tracks", "BYTES", [-1]),
    ]  # fmt: skip
    assert meta["parameters"]["task"] == "multiclass"
    assert orjson.loads(meta["parameters"]["classes"]) == CLASSES
    assert s.client.get("/v2/models/zoo/versions/0").json() == meta


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_reads_the_classes_and_the_probabilities(r, redis_server, binary) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    s = Served(redis_server.url, manifest(name="zoo", model=MODEL))  # (served on a real port)
    learner = _trained()
    ModelStore(r, "test", "zoo").publish(s.model.revision, 0, learner)
    p = _probabilities(learner, ROWS)
    inputs = []
    for name, datatype in (("amount", "FP64"), ("hour", "FP64"), ("merchant", "BYTES")):
        t = httpclient.InferInput(name, [len(ROWS)], datatype)
        values = [r[name] for r in ROWS]
        t.set_data_from_numpy(np.array(values, dtype=object if datatype == "BYTES" else None),
                              binary_data=binary)  # fmt: skip
        inputs.append(t)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary)
               for n in ("predict", "probabilities")]  # fmt: skip
    with listening(s) as url:
        c = httpclient.InferenceServerClient(url.removeprefix("http://"))
        result = c.infer("zoo", inputs, outputs=outputs)
    got = result.as_numpy("probabilities")
    assert got.shape == (6, 3)
    np.testing.assert_allclose(got, p, rtol=1e-6, atol=1e-7)
    names = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict")]
    assert names == [CLASSES[i] for i in p.argmax(axis=1).tolist()]


# --------------------------------------------------------------------------- labels
def test_feedback_and_learn_take_class_names_and_indices_and_write_names(zoo, r) -> None:
    s, _ = zoo
    c, k = s.client, s.dp.keys
    ids = c.post(PREDICT, json={"instances": ROWS[:3]}).json()["ids"]
    assert c.post("/v1/models/zoo/feedback", json={"id": ids[0], "label": "dog"}).status_code == 202
    batch = {"feedback": [{"id": ids[1], "label": 2}, {"id": ids[2], "label": 0.0}]}
    assert c.post("/v1/models/zoo/feedback", json=batch).json() == {"accepted": 2}
    one, packed = [orjson.loads(e[1][b"data"]) for e in r.xrange(k.feedback)]
    assert (one["id"], one["label"]) == (ids[0], "dog")
    assert [(f["id"], f["label"]) for f in packed["feedback"]] == [(ids[1], "eel"), (ids[2], "cat")]
    resp = c.post("/v1/models/zoo:learn", json={"instances": ROWS[:3], "labels": ["eel", 1, "cat"]})
    assert resp.status_code == 202 and resp.json() == {"accepted": 3}
    [sample] = [orjson.loads(e[1][b"data"]) for e in r.xrange(k.samples)]
    assert sample == {"instances": ROWS[:3], "labels": ["eel", "dog", "cat"]}


@pytest.mark.parametrize(
    ("route", "body", "message"),
    [
        ("feedback", {"feedback": [{"id": "a", "label": "cat"}, {"id": "b", "label": "fox"}]},
         "feedback[1].label: 'fox' is not a class of this model (classes: cat, dog, eel)"),
        ("feedback", {"id": "a", "label": 3},
         "body.label: multiclass labels must be class indices 0 to 2 (got 3)"),
        ("feedback", {"id": "a", "label": 1.5},
         "body.label: a class index must be a whole number (got 1.5)"),
        ("feedback", {"id": "a", "label": True},
         "body.label: a label must be a class name or a class index (got bool)"),
        (":learn", {"instances": ROWS[:2], "labels": ["cat", "Dog"]},
         "labels[1]: 'Dog' is not a class of this model (classes: cat, dog, eel)"),
    ],
    ids=["an unknown class name in a batch", "an index past the classes", "a fraction",
         "a boolean", "a class name in another case, to learn"],
)  # fmt: skip
def test_a_label_that_is_not_a_class_is_a_422_naming_it(zoo, r, route, body, message) -> None:
    s, _ = zoo
    path = "/v1/models/zoo/feedback" if route == "feedback" else "/v1/models/zoo:learn"
    resp = s.client.post(path, json=body)
    assert resp.status_code == 422 and resp.json()["error"] == message
    assert r.xlen(s.dp.keys.feedback) == r.xlen(s.dp.keys.samples) == 0, "nothing written"


# --------------------------------------------------------------------------- fallback
def test_with_no_version_loaded_the_fallback_class_answers(r, redis_server) -> None:
    doc = manifest(name="zoo", model=MODEL, serving={"fallback": {"class": "dog"}})
    s = Served(redis_server.url, doc)
    with s.client:
        assert s.dp.stable is None
        one = s.client.post(PREDICT, json={"instances": ROWS[:2], "probabilities": True}).json()
        assert one["predictions"] == ["dog", "dog"] and one["fallback"] is True
        assert one["probabilities"] == [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
        resp = s.client.post(INFER, json=_infer(ROWS[:2], parameters={"binary_data_output": True}))
        out = _outputs(resp)
        assert out["predict"]["data"] == ["dog", "dog"]
        assert out["probabilities"]["data"] == [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
        assert _head(resp)["parameters"]["fallback"] is True
        wait_until(lambda: len(log_entries(r, s)) == 2)
        for e in log_entries(r, s):
            assert e["scores"] == [[0.0, 1.0, 0.0]] * 2 and e["meta"].fallback == "no-model"


def test_past_the_timeout_the_fallback_class_answers(r, redis_server) -> None:
    model = {**MODEL, "algorithm": "forest"}
    doc = manifest(name="zoo", model=model, serving={"timeout": "0.1ms", "fallback": {"class": "eel"}})  # fmt: skip
    s = Served(redis_server.url, doc)
    ModelStore(r, "test", "zoo").publish(s.model.revision, 0, _trained(model=model))
    rows, _ = _stream(2000, seed=7)
    with s.client:
        wait_until(lambda: s.dp.ready)
        body = s.client.post(PREDICT, json={"instances": rows, "probabilities": True}).json()
        assert body["fallback"] is True and set(body["predictions"]) == {"eel"}
        assert body["probabilities"] == [[0.0, 0.0, 1.0]] * 2000
        assert 'tideline_server_fallbacks_total{reason="timeout"} 1.0' in (
            s.client.get("/metrics").text
        )


# --------------------------------------------------------------------------- canary
def test_a_canary_answers_its_rows_with_its_own_probabilities(r, redis_server) -> None:
    doc = manifest(name="zoo", model=MODEL, serving={"routingKey": "merchant"})
    s = Served(redis_server.url, doc)
    store = ModelStore(r, "test", "zoo")
    stable, canary = _trained(), _trained(seed=3, model={**MODEL, "params": {"l2": 0.05}})
    store.publish(s.model.revision, 0, stable)
    store.publish("canaryrev", 0, canary)
    rows, _ = _stream(40, seed=11)
    expect = ["canary" if route_hash(row["merchant"]) < 5000 else "stable" for row in rows]
    assert set(expect) == {"stable", "canary"}
    with s.client:
        wait_until(lambda: s.dp.ready)
        r.hset(s.dp.keys.routing, mapping={"stable": s.model.revision, "canary": "canaryrev",
                                           "weight": 50})  # fmt: skip
        wait_until(lambda: s.dp.canary is not None and s.dp.routing.weight == 50, timeout=2)
        body = s.client.post(PREDICT, json={"instances": rows, "probabilities": True}).json()
        assert body["tracks"] == expect
        on = np.array(expect) == "canary"
        want = np.where(on[:, None], _probabilities(canary, rows), _probabilities(stable, rows))
        np.testing.assert_allclose(body["probabilities"], want, rtol=1e-6, atol=1e-7)
        assert body["predictions"] == [CLASSES[i] for i in want.argmax(axis=1).tolist()]
        wait_until(lambda: len(log_entries(r, s)) == 1)
        [e] = log_entries(r, s)
        assert e["tracks"] == expect and e["scores"] == body["probabilities"]
        # a shadow's probabilities ride in the entry too, a row of k each
        r.hset(s.dp.keys.routing, mapping={"weight": 0, "shadow": 1})
        wait_until(lambda: s.dp.routing.shadow, timeout=2)
        body = s.client.post(PREDICT, json={"instances": rows[:3]}).json()
        assert body["tracks"] == ["stable"] * 3
        wait_until(lambda: len(log_entries(r, s)) == 2)
        revision, version, scores = log_entries(r, s)[1]["meta"].shadow
        assert (revision, version) == ("canaryrev", 0)
        np.testing.assert_allclose(scores, _probabilities(canary, rows[:3]), rtol=1e-12)
