"""The prediction server: every route and error through httpx, against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import (
    FRAUD_FEATURES,
    FRAUD_ROWS,
    Served,
    fraud_model,
    log_entries,
    manifest,
    on_one_redis_and_a_cluster,
    wait_until,
)
from tideline import predlog
from tideline.algorithms import make_learner
from tideline.contracts import Keys, route_hash
from tideline.demo.embedded import EmbeddedRedis
from tideline.demo.simulate import SyntheticStream
from tideline.pods.server import dataplane
from tideline.pods.server.api import ServerConfig
from tideline.pods.server.dataplane import DataPlane
from tideline.spec import parse
from tideline.store import ModelStore

pytestmark = pytest.mark.integration


def _logged(r, s: Served | DataPlane) -> int:
    """Predictions in the server's log."""
    return sum(len(e["ids"]) for e in log_entries(r, s))


# --------------------------------------------------------------------------- routes
def test_v1_predict_answers_with_ids_version_and_revision(served: Served) -> None:
    resp = served.client.post("/v1/models/fraud:predict", json={"instances": FRAUD_ROWS})
    assert resp.status_code == 200
    body = resp.json()
    assert len(body["predictions"]) == 2 and all(0 <= p <= 1 for p in body["predictions"])
    assert len(set(body["ids"])) == 2
    assert (body["model_version"], body["revision"]) == (0, served.model.revision)
    assert body["tracks"] == ["stable", "stable"] and body["fallback"] is False
    # the same rows given as arrays in schema order get the same answers
    arrays = [[12.5, 3, "m-1"], [0.5, None, "m-2"]]
    again = served.client.post("/v1/models/fraud:predict", json={"instances": arrays}).json()
    assert again["predictions"] == body["predictions"]


def test_v1_predict_matches_the_learner(served: Served) -> None:
    learner = fraud_model()
    rows, _ = SyntheticStream(FRAUD_FEATURES, "binary", seed=9).take(64)
    body = served.client.post("/v1/models/fraud:predict", json={"instances": rows}).json()
    np.testing.assert_allclose(
        body["predictions"], learner.predict_many(learner.schema.encode(rows)), rtol=1e-9
    )


FULL = [{"amount": 12.5, "hour": 3.0, "merchant": "m-1"}, {"amount": 0.5, "hour": 22.0, "merchant": "m-2"}]  # fmt: skip
ATYPICAL = [
    ("a missing feature", [{"amount": 12.5, "merchant": "m-1"}]),
    ("a null", [{"amount": 12.5, "hour": None, "merchant": "m-1"}]),
    ("an unknown name", [{**FULL[0], "colour": "red"}]),
    ("a bool for a number", [{**FULL[0], "hour": True}]),
    ("an integer for a category", [{**FULL[0], "merchant": 7}]),
    ("an array with a null", [[12.5, None, "m-1"]]),
]


def test_typed_rows_take_the_fast_path_and_answer_as_the_general_one(served: Served) -> None:
    rows, _ = SyntheticStream(FRAUD_FEATURES, "binary", seed=4).take(64)
    for n in (1, 5, 64):
        raw = orjson.dumps({"instances": rows[:n]})
        fast = served.typed(raw)
        assert fast is not None and fast[1] is None and fast[2] is None  # no ids; dict rows
        np.testing.assert_array_equal(fast[0], served.dp.stable.schema.encode(rows[:n]))
        typed = served.client.post("/v1/models/fraud:predict", content=raw).json()
        # an unknown name in the first row sends the request down the general path
        general = [{**rows[0], "note": "x"}, *rows[1:n]]
        assert served.typed(orjson.dumps({"instances": general})) is None
        slow = served.client.post("/v1/models/fraud:predict", json={"instances": general},
                                  headers={"X-Tideline-Unknown-Features": "ignore"}).json()  # fmt: skip
        assert typed["predictions"] == slow["predictions"]
    ids = served.typed(orjson.dumps({"instances": FULL, "ids": ["a", 7]}))
    assert ids is not None and ids[1] == ["a", 7]


def test_rows_as_arrays_take_the_fast_path_and_are_logged_by_name(served: Served, r) -> None:
    rows, _ = SyntheticStream(FRAUD_FEATURES, "binary", seed=5).take(64)
    arrays = [[row[name] for name in served.dp.stable.schema.names] for row in rows]
    fast = served.typed(orjson.dumps({"instances": arrays}))
    assert fast is not None and fast[2] == arrays
    np.testing.assert_array_equal(fast[0], served.dp.stable.schema.encode(rows))
    by_position = served.client.post("/v1/models/fraud:predict", json={"instances": arrays})
    by_name = served.client.post("/v1/models/fraud:predict", json={"instances": rows})
    assert by_position.json()["predictions"] == by_name.json()["predictions"]
    wait_until(lambda: _logged(r, served) == 128)
    [entry] = [e for e in log_entries(r, served) if e["meta"].names]  # the arrays, named
    assert entry["rows"] == rows and entry["ids"] == by_position.json()["ids"]


@pytest.mark.parametrize("rows", [a[1] for a in ATYPICAL], ids=[a[0] for a in ATYPICAL])
def test_what_the_fast_path_cannot_read_the_general_path_answers(served: Served, rows) -> None:
    assert served.typed(orjson.dumps({"instances": rows})) is None
    ignore = {"X-Tideline-Unknown-Features": "ignore"}  # (an unknown name is refused else)
    resp = served.client.post("/v1/models/fraud:predict", json={"instances": rows}, headers=ignore)
    assert resp.status_code == 200 and len(resp.json()["predictions"]) == 1


def test_v2_infer_with_one_tensor_per_feature_and_with_one_matrix(served: Served) -> None:
    per_feature = {
        "id": "req-1",
        "inputs": [
            {"name": "amount", "shape": [2], "datatype": "FP64", "data": [12.5, 0.5]},
            {"name": "hour", "shape": [2], "datatype": "FP64", "data": [3, 12]},
            {"name": "merchant", "shape": [2], "datatype": "BYTES", "data": ["m-1", "m-2"]},
        ],
    }
    resp = served.client.post("/v2/models/fraud/infer", json=per_feature)
    assert resp.status_code == 200
    body = resp.json()
    assert body["model_name"] == "fraud" and body["id"] == "req-1" and body["model_version"] == "0"
    out = body["outputs"][0]
    assert out["name"] == "predict" and out["shape"] == [2] and len(out["data"]) == 2
    matrix = {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "BYTES",
                          "data": [[12.5, 3, "m-1"], [0.5, 12, "m-2"]]}]}  # fmt: skip
    assert (
        served.client.post("/v2/models/fraud/infer", json=matrix).json()["outputs"][0]["data"]
        == out["data"]
    )


def test_health_readiness_and_metadata(served: Served) -> None:
    c = served.client
    assert c.get("/v2/health/live").json() == {"live": True}
    assert c.get("/v2/health/ready").status_code == 200
    assert c.get("/v2/models/fraud/ready").json()["ready"] is True
    assert c.get("/v1/models/fraud").json() == {"name": "fraud", "ready": True}
    meta = c.get("/v2/models/fraud").json()
    assert meta["versions"] == ["0"] and meta["platform"] == "tideline"
    assert [i["name"] for i in meta["inputs"]] == ["amount", "hour", "merchant"]
    assert [i["datatype"] for i in meta["inputs"]] == ["FP64", "FP64", "BYTES"]
    assert meta["parameters"]["task"] == "binary"


def test_feedback_and_learn_write_the_learner_streams(served: Served, r) -> None:
    c, k = served.client, served.dp.keys
    ids = c.post("/v1/models/fraud:predict", json={"instances": FRAUD_ROWS}).json()["ids"]
    resp = c.post("/v1/models/fraud/feedback", json={"id": ids[0], "label": 1})
    assert resp.status_code == 202 and resp.json() == {"accepted": 1}
    batch = {"feedback": [{"id": ids[1], "label": 0}, {"id": ids[0], "label": True}]}
    assert c.post("/v1/models/fraud/feedback", json=batch).json() == {"accepted": 2}
    one, packed = [orjson.loads(e[1][b"data"]) for e in r.xrange(k.feedback)]
    assert (one["id"], one["label"]) == (ids[0], 1.0)
    pairs = [(f["id"], f["label"]) for f in packed["feedback"]]
    assert pairs == [(ids[1], 0.0), (ids[0], 1.0)], "a request's labels: one packed entry"
    resp = c.post("/v1/models/fraud:learn", json={"instances": FRAUD_ROWS, "labels": [1, 0]})
    assert resp.status_code == 202 and resp.json() == {"accepted": 2}
    samples = [orjson.loads(e[1][b"data"]) for e in r.xrange(k.samples)]
    assert samples == [{"instances": FRAUD_ROWS, "labels": [1.0, 0.0]}], (
        "one packed entry a request"
    )


@on_one_redis_and_a_cluster
def test_every_prediction_is_logged_with_its_track(served: Served, r) -> None:
    body = served.client.post("/v1/models/fraud:predict", json={"instances": FRAUD_ROWS}).json()
    wait_until(lambda: len(log_entries(r, served)) == 1)
    [entry] = log_entries(r, served)
    assert (entry["track"], entry["revision"], entry["version"]) == (
        "stable",
        served.model.revision,
        0,
    )
    assert entry["ids"] == body["ids"]
    # a generated id names its log entry (no index): the server's log, the entry, the row
    where = predlog.parse_id(body["ids"][1])
    assert where is not None and (where.instance, where.entry, where.row) == (
        served.dp.log.instance, entry["entry"], 1)  # fmt: skip
    assert entry["meta"].ids is None  # generated ids are not written
    assert entry["scores"] == body["predictions"]
    assert entry["rows"] == FRAUD_ROWS  # the request body, logged as it came
    assert abs(entry["ts"] - time.time()) < 5


@pytest.mark.parametrize("fast", [True, False], ids=["fast path", "general path"])
def test_a_caller_cannot_choose_its_track_only_a_forwarding_server_can(
    served: Served, r, fast
) -> None:
    c = served.client
    body = {"instances": FULL if fast else FRAUD_ROWS}
    for i in range(30):  # the canary (there is none), and made-up tracks
        track = "canary" if i % 2 else f"made-up-{i}"
        assert c.post("/v1/models/fraud:predict", json=body,
                      headers={"x-tideline-track": track}).status_code == 200  # fmt: skip
    wait_until(lambda: _logged(r, served) == 30 * len(body["instances"]))
    assert {e["track"] for e in log_entries(r, served)} == {"stable"}
    metrics = c.get("/metrics").text
    assert "made-up" not in metrics
    canary = [line for line in metrics.splitlines()
              if 'track="canary"' in line and not line.startswith("#") and "_created" not in line]  # fmt: skip
    assert canary and all(float(line.split()[-1]) == 0.0 for line in canary), canary
    # a request forwarded by one of the model's servers carries the shared token
    token = r.get(served.dp.keys.forward_token).decode()
    assert len(token) == 64
    assert served.dp.trusted_track("canary", token) == "canary"
    assert served.dp.trusted_track("canary", "0" * 64) is None
    assert served.dp.trusted_track("made-up", token) is None


@pytest.mark.parametrize(
    ("route", "body", "status", "message"),
    [
        ("/v1/models/fraud:predict", {"instances": FRAUD_ROWS, "ids": [None, "b"]}, 422, "ids[0]: an id must be a string or an integer (got null)"),
        ("/v1/models/fraud:predict", {"instances": FRAUD_ROWS, "ids": ["a", "x" * 300]}, 422, "ids[1]: an id must be at most 256"),
        ("/v1/models/fraud:predict", {"instances": FRAUD_ROWS, "ids": [{"a": 1}, "b"]}, 422, "ids[0]: an id must be a string or an integer (got dict)"),
        ("/v2/models/fraud/infer", {"id": {}, "inputs": [{"name": "amount", "shape": [1], "datatype": "FP64", "data": [1.0]}]}, 400, "id: must be a string (got dict)"),
    ],
    ids=["a null id", "an id of 300 characters", "an object as an id", "a V2 request id that is an object"],
)  # fmt: skip
def test_client_ids_are_strings_or_integers_never_python_text(
    served: Served, route, body, status, message
) -> None:
    resp = served.client.post(route, json=body)
    assert resp.status_code == status and message in resp.json()["error"], resp.text


@pytest.mark.parametrize(
    ("route", "body", "headers", "status", "message"),
    [
        ("/v1/models/fraud:predict", b'{"instances": [{"amount": 1}]}', {"content-type": "text/plain"}, 415, "content-type text/plain is not JSON"),
        ("/v1/models/fraud/feedback", b'{"id": "a", "label": 1}', {"content-type": "multipart/form-data; boundary=x"}, 415, "is not JSON"),
        ("/v1/models/fraud:predict", b'{"instances": [{"amount": 1}], "instances": [{"amount": 2}]}', {}, 400, "instances: given twice"),
        ("/v1/models/fraud:learn", b'{"instances": [{"amount": 1}], "labels": [1], "labels": [0]}', {}, 400, "labels: given twice"),
        ("/v2/models/fraud/infer", b'{"inputs": [{"name": "amount", "shape": [true], "datatype": "FP64", "data": [1.0]}]}', {}, 400, "inputs[0] (amount).shape"),
    ],
    ids=["a text/plain predict", "a multipart feedback", "instances given twice", "labels given twice",
         "a V2 shape of booleans"],
)  # fmt: skip
def test_what_is_not_one_json_document_of_the_protocol_is_refused(
    served: Served, route, body, headers, status, message
) -> None:
    resp = served.client.post(route, content=body, headers=headers)
    assert resp.status_code == status and message in resp.json()["error"], resp.text


def test_a_v2_error_names_the_tensor_element_the_client_sent(served: Served) -> None:
    per_feature = {"inputs": [
        {"name": "merchant", "shape": [2], "datatype": "BYTES", "data": ["m-1", "m-2"]},
        {"name": "amount", "shape": [2], "datatype": "FP64", "data": [1.0, "x"]},
    ]}  # fmt: skip
    resp = served.client.post("/v2/models/fraud/infer", json=per_feature)
    assert resp.status_code in (400, 422) and resp.json()["error"].startswith(
        "inputs[1] (amount).data[1]"
    ), resp.text
    names = served.dp.stable.schema.names
    row = [1.0 if n != "merchant" else "m-1" for n in names]
    bad = list(row)
    bad[names.index("amount")] = "x"
    matrix = {
        "inputs": [
            {"name": "rows", "shape": [2, len(names)], "datatype": "BYTES", "data": row + bad}
        ]
    }
    resp = served.client.post("/v2/models/fraud/infer", json=matrix)
    k = len(names) + names.index("amount")
    assert resp.json()["error"].startswith(f"inputs[0] (rows).data[{k}]"), resp.text


def test_generated_prediction_ids_carry_64_random_bits_per_request(served: Served) -> None:
    ids = [served.client.post("/v1/models/fraud:predict", json={"instances": FRAUD_ROWS}).json()["ids"]
           for _ in range(3)]  # fmt: skip
    secrets = [i[0].split("-")[4] for i in ids]  # instance-ms-seq-request-secret-row
    assert all(len(x) == 16 and int(x, 16) >= 0 for x in secrets) and len(set(secrets)) == 3
    assert [i[-1].rsplit("-", 1)[1] for i in ids] == ["1", "1", "1"]  # the row's index ends it


def test_a_log_write_takes_what_was_queued_as_it_began(r, redis_server) -> None:
    """Requests answered while a write is under way wait for the next flush (one XADD a flush)."""
    model = parse(manifest(name="fraud"))
    ModelStore(r, "test", "fraud").publish(model.revision, 0, fraud_model())

    async def scenario() -> tuple[int, list[str]]:
        dp = DataPlane(model, redis_server.url, log_flush_interval=60)  # no flush of its own
        await dp.start()
        real = dp.r.pipeline
        arrived: list[Any] = []

        def pipeline(**kw):  # a real pipeline; two requests come in while the first executes
            pipe = real(**kw)
            execute = pipe.execute

            async def with_requests_arriving(**kw):
                if not arrived:
                    arrived.extend(dp.predict(FRAUD_ROWS) for _ in range(2))
                return await execute(**kw)

            pipe.execute = with_requests_arriving
            return pipe

        try:
            ids = [i for _ in range(3) for i in dp.predict(FRAUD_ROWS).ids]
            dp.r.pipeline = pipeline
            await dp.log.write(dp.r)
            dp.r.pipeline = real
            return dp.log.requests, ids  # in a batch of their own
        finally:
            await dp.stop()

    left, ids = asyncio.run(scenario())
    assert left == 2  # still queued when the write returned
    entries = predlog.read(r, Keys("test", "fraud"))
    assert len(entries) == 5  # the three queued before, then the two late ones, at stop
    assert [i for name, eid, e in entries[:3] for i in e.ids(name, eid)] == ids


def test_a_log_write_stopped_while_serialising_keeps_every_entry(r, redis_server) -> None:
    """Cancelled between two chunks of 100 entries: all go back to the queue, in order."""
    model = parse(manifest(name="fraud"))
    ModelStore(r, "test", "fraud").publish(model.revision, 0, fraud_model())

    async def scenario() -> tuple[list[str], list[str], int]:
        dp = DataPlane(model, redis_server.url, log_flush_interval=60)  # no flush of its own
        await dp.start()
        try:
            # 64 rows a request: an entry each (a batch holds up to 64 rows)
            ids = [i for _ in range(250) for i in dp.predict(FRAUD_ROWS * 32).ids]
            assert len(dp.log.queue) == 250
            writing = asyncio.get_running_loop().create_task(dp.log.write(dp.r))
            await asyncio.sleep(0)  # the writer serialises 100, then lets the loop go
            assert len(dp.log.queue) == 150
            writing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await writing
            queued = [q.entry for q in dp.log.queue for _ in q.metas]
            return ids, queued, len(predlog.read(r, dp.keys, dp.log.instance))
        finally:
            await dp.stop()

    ids, queued, written = asyncio.run(scenario())
    assert written == 0
    entries = [(name, eid, e) for name, eid, e in predlog.read(r, Keys("test", "fraud"))]
    assert queued == [eid for _, eid, _ in entries]  # all 250 requests, in the order they came
    assert [i for name, eid, e in entries for i in e.ids(name, eid)] == ids  # written at stop


def test_the_log_queue_is_bounded_in_bytes_and_keeps_the_newest(r, redis_server) -> None:
    """Through an outage the queue drops its oldest entries past log_queue_bytes, counted."""
    model = parse(manifest(name="fraud"))
    ModelStore(r, "test", "fraud").publish(model.revision, 0, fraud_model())
    body = orjson.dumps({"instances": FRAUD_ROWS * 8})  # 16 rows, read by the general path

    async def scenario() -> tuple[list[list[str]], int, int, float]:
        dp = DataPlane(
            model, redis_server.url, log_flush_interval=60, log_queue_bytes=10 * len(body)
        )
        await dp.start()
        try:
            requests = [dp.predict(FRAUD_ROWS * 8, raw=body).ids for _ in range(25)]
            queued, held = dp.log.requests, dp.log.bytes
            dropped = dp.metrics.registry.get_sample_value("tideline_server_log_dropped_total")
            await dp.log.write(dp.r)
            return [list(ids) for ids in requests], queued, held, dropped or 0.0
        finally:
            await dp.stop()

    requests, queued, held, dropped = asyncio.run(scenario())
    # whole entries go, the oldest first (an entry holds 4 of these 16-row requests)
    assert 10 - 4 < queued <= 10 and held == queued * len(body) and dropped == 25 - queued
    entries = predlog.read(r, Keys("test", "fraud"))
    assert [i for name, eid, e in entries for i in e.ids(name, eid)] == [
        i for ids in requests[-queued:] for i in ids
    ]


def test_stop_ends_the_background_tasks_even_when_redis_py_swallows_a_cancellation(
    r, redis_server
) -> None:
    """redis-py can turn a cancellation that lands as a read times out into a TimeoutError
    (redis/redis-py#2551): the pub/sub loop took it for a lost connection and went on, so
    the event loop's shutdown waited for it forever."""
    model = parse(manifest(name="fraud"))
    ModelStore(r, "test", "fraud").publish(model.revision, 0, fraud_model())

    async def scenario() -> list[str]:
        dp = DataPlane(model, redis_server.url)
        await dp.start()
        real = dp.r.pubsub

        def pubsub(**kw):
            ps = real(**kw)
            get_message = ps.get_message

            async def swallowing(**kw):
                try:
                    return await get_message(**kw)
                except asyncio.CancelledError:
                    raise TimeoutError("timed out") from None

            ps.get_message = swallowing
            return ps

        dp.r.pubsub = pubsub
        await asyncio.sleep(1.5)  # the loop is in a get_message of the new kind
        tasks = list(dp._tasks)
        await asyncio.wait_for(dp.stop(), timeout=10)
        left = [t.get_name() for t in tasks if not t.done()]
        dp.r.pubsub = real  # whatever is left can be cancelled now, not to hang this test
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks, timeout=5)
        return left

    assert asyncio.run(scenario()) == []


def test_metrics_count_requests_predictions_and_missing_values(served: Served) -> None:
    served.client.post("/v1/models/fraud:predict", json={"instances": FRAUD_ROWS})
    text = served.client.get("/metrics").text
    assert (
        'tideline_server_requests_total{route="v1/predict",status="200",track="stable"} 1.0' in text
    )
    assert 'tideline_server_predictions_total{track="stable"} 2.0' in text
    assert 'tideline_server_missing_values_total{feature="hour"} 1.0' in text
    assert "tideline_server_request_seconds_bucket" in text
    assert 'tideline_server_served_version{track="stable"} 0.0' in text


# --------------------------------------------------------------------------- errors
BAD = [
    ("an unknown model", "/v1/models/other:predict", {"instances": FRAUD_ROWS}, 404, "'other' is not served here"),
    ("no instances", "/v1/models/fraud:predict", {"rows": FRAUD_ROWS}, 400, "instances: required"),
    ("instances that are not a list", "/v1/models/fraud:predict", {"instances": 5}, 400, "instances: must be a list"),
    ("no rows at all", "/v1/models/fraud:predict", {"instances": []}, 400, "at least one row"),
    ("text where a number goes", "/v1/models/fraud:predict",
     {"instances": [FRAUD_ROWS[0], {"amount": "lots"}]}, 422, "instances[1].amount: must be a number (got 'lots')"),
    ("a list where a category goes", "/v1/models/fraud:predict",
     {"instances": [{"merchant": ["a"]}]}, 422, "instances[0].merchant: must be a string or an integer"),
    ("a row of the wrong length", "/v1/models/fraud:predict",
     {"instances": [[1.0, 2.0]]}, 422, "instances[0]: must be an object or a list of 3 values"),
    ("ids that do not match the rows", "/v1/models/fraud:predict",
     {"instances": FRAUD_ROWS, "ids": ["a"]}, 422, "ids: 1 ids for 2 rows"),
    ("a V2 tensor for no feature", "/v2/models/fraud/infer",
     {"inputs": [{"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["red"]}]}, 400,
     "inputs[0] (colour).name: 'colour' is not a feature"),
    ("a V2 tensor whose data does not fill its shape", "/v2/models/fraud/infer",
     {"inputs": [{"name": "amount", "shape": [3], "datatype": "FP64", "data": [1.0]}]}, 400,
     "inputs[0] (amount).data: holds 1 values, shape [3] needs 3"),
    ("feedback without a label", "/v1/models/fraud/feedback", {"id": "x"}, 422, "body: needs id and label"),
    ("a binary label of 2", "/v1/models/fraud/feedback", {"id": "x", "label": 2}, 422,
     "body.label: a binary label must be 0 or 1"),
    ("learn with fewer labels than rows", "/v1/models/fraud:learn",
     {"instances": FRAUD_ROWS, "labels": [1]}, 422, "labels: 1 labels for 2 instances"),
    ("learn with a bad row", "/v1/models/fraud:learn",
     {"instances": [{"hour": "noon"}], "labels": [1]}, 422, "instances[0].hour: must be a number"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "status", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_requests_get_a_4xx_naming_the_field(
    served: Served, path: str, body: dict, status: int, message: str
) -> None:
    resp = served.client.post(path, json=body)
    assert resp.status_code == status
    assert message in resp.json()["error"]


def test_malformed_json_infinity_and_oversized_bodies(served: Served, redis_server) -> None:
    c = served.client
    resp = c.post(
        "/v1/models/fraud:predict",
        content=b'{"instances": [',
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["error"]
    resp = c.post("/v1/models/fraud:predict", content=b'{"instances": [{"amount": NaN}]}')
    assert resp.status_code == 400
    resp = c.post("/v1/models/fraud:predict", content=b'{"instances": [{"amount": 1e999}]}')
    assert resp.status_code in (400, 422)
    for route in (
        "/v1/models/fraud:predict",
        "/v2/models/fraud/infer",
        "/v1/models/fraud/feedback",
        "/v1/models/fraud:learn",
    ):  # invalid UTF-8, in a key and in a value
        for body in (b'{"instances":[{"\xff":1}]}', b'{"instances":[{"merchant":"\xff"}]}'):
            resp = c.post(route, content=body)
            assert resp.status_code == 400 and "UTF-8" in resp.json()["error"], (route, resp.text)
    resp = c.post(
        "/v1/models/fraud:predict", json={"instances": [{"amount": 1e300, "hour": -1e308}]}
    )
    assert resp.status_code == 200 and 0.0 <= resp.json()["predictions"][0] <= 1.0
    counted = [line for line in c.get("/metrics").text.splitlines()
               if line.startswith('tideline_server_requests_total{route="v1/predict"') and 'status="400"' in line]  # fmt: skip
    assert counted and float(counted[0].split()[-1]) >= 2, "bad bodies are counted"
    small = Served(
        redis_server.url, manifest(name="fraud"), ServerConfig(max_body_bytes=200, max_rows=3)
    )
    with small.client:
        wait_until(lambda: small.dp.ready)
        resp = small.client.post(
            "/v1/models/fraud:predict", json={"instances": [FRAUD_ROWS[0]] * 20}
        )
        assert resp.status_code == 413 and "over the limit of 200" in resp.json()["error"]
        resp = small.client.post("/v1/models/fraud:predict", json={"instances": [{}] * 4})
        assert resp.status_code == 413 and "4 rows is over the limit of 3" in resp.json()["error"]


def test_kserve_v1_routes_and_inputs_in_both_forms(served: Served) -> None:
    c = served.client
    assert c.get("/").json() == {"status": "alive"}
    assert c.get("/v1/models").json() == {"models": ["fraud"]}
    resp = c.post("/v1/models/fraud:explain", json={"instances": FRAUD_ROWS})
    assert resp.status_code == 501 and "explanations are not served" in resp.json()["error"]
    expected = c.post("/v1/models/fraud:predict", json={"instances": FRAUD_ROWS}).json()[
        "predictions"
    ]
    as_rows = c.post("/v1/models/fraud:predict", json={"inputs": FRAUD_ROWS}).json()
    columns = {"amount": [12.5, 0.5], "hour": [3, None], "merchant": ["m-1", "m-2"]}
    as_columns = c.post("/v1/models/fraud:predict", json={"inputs": columns}).json()
    assert as_rows["predictions"] == expected == as_columns["predictions"]
    ragged = c.post("/v1/models/fraud:predict", json={"inputs": {"amount": [1.0], "hour": [1, 2]}})
    assert ragged.status_code == 400 and "the same length" in ragged.json()["error"]
    # unrouted: the protocol's error shape, not FastAPI's {"detail": ...}
    assert c.get("/v1/models/fraud/nothing").json() == {"error": "no such route"}


def test_an_unknown_feature_name_is_refused_unless_the_request_says_ignore(served: Served) -> None:
    c = served.client
    rows = [
        FRAUD_ROWS[0],
        {**FRAUD_ROWS[1], "amout": 3.0},
    ]  # a typo: the amount would silently default
    resp = c.post("/v1/models/fraud:predict", json={"instances": rows})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"].startswith("instances[1].amout: not a feature of this model")
    ok = c.post("/v1/models/fraud:predict", json={"instances": rows},
                headers={"X-Tideline-Unknown-Features": "ignore"})  # fmt: skip
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2


# --------------------------------------------------------------------------- behaviour
def test_not_ready_until_a_version_is_loaded_then_ready(r, redis_server) -> None:
    s = Served(redis_server.url, manifest(name="fraud"))
    with s.client:
        assert s.client.get("/v2/health/ready").status_code == 503
        assert s.client.get("/v1/models/fraud").status_code == 503  # KServe V1 readiness
        assert s.client.get("/").json() == {"status": "alive"}  # (live, not ready)
        resp = s.client.post("/v1/models/fraud:predict", json={"instances": FRAUD_ROWS})
        assert resp.status_code == 503 and "no model version is loaded" in resp.json()["error"]
        ModelStore(r, "test", "fraud").publish(s.model.revision, 0, fraud_model())
        wait_until(lambda: s.client.get("/v2/health/ready").status_code == 200, timeout=3)


def test_learn_refuses_a_bad_row_before_any_version_is_loaded_as_after(r, redis_server) -> None:
    """With no version loaded, the spec's features read a :learn request's rows: a value of
    the wrong type is a 422 naming it, not a dead letter later."""
    s = Served(redis_server.url, manifest(name="fraud"), ServerConfig(max_rows=3))
    with s.client:
        assert s.dp.stable is None
        for body, status, message in (
            ({"instances": [{"hour": "noon"}], "labels": [1]}, 422, "instances[0].hour: must be a number"),
            ({"instances": [], "labels": []}, 400, "instances: must hold at least one row"),
            ({"instances": [{}] * 4, "labels": [1] * 4}, 413, "4 rows is over the limit of 3"),
        ):  # fmt: skip
            resp = s.client.post("/v1/models/fraud:learn", json=body)
            assert resp.status_code == status and message in resp.json()["error"], resp.text
        assert r.xlen(Keys("test", "fraud").samples) == 0
        resp = s.client.post(
            "/v1/models/fraud:learn", json={"instances": FRAUD_ROWS, "labels": [1, 0]}
        )
        assert resp.status_code == 202 and r.xlen(Keys("test", "fraud").samples) == 1


def test_with_no_version_loaded_v1_and_v2_answer_alike(r, redis_server) -> None:
    """The fallback value when the spec names one; 503 when it says lastGood - on both routes."""
    v2 = {"inputs": [{"name": "amount", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]}]}
    for fallback, status in (({"value": 0.3}, 200), ("lastGood", 503)):
        s = Served(redis_server.url, manifest(name="fraud", serving={"fallback": fallback}))
        with s.client:
            one = s.client.post("/v1/models/fraud:predict", json={"instances": FRAUD_ROWS})
            two = s.client.post("/v2/models/fraud/infer", json=v2)
            assert one.status_code == two.status_code == status, (one.text, two.text)
            if status == 200:
                assert one.json()["predictions"] == [0.3, 0.3] and one.json()["fallback"] is True
                out = {o["name"]: o for o in two.json()["outputs"]}
                assert out["predict"]["data"] == [0.3, 0.3]
                assert two.json()["parameters"]["fallback"] is True
                # and refuse alike what a loaded model would refuse: a wrong count of ids
                one = s.client.post("/v1/models/fraud:predict",
                                    json={"instances": FRAUD_ROWS, "ids": ["a"]})  # fmt: skip
                two = s.client.post("/v2/models/fraud/infer",
                                    json={**v2, "parameters": {"ids": ["a"]}})  # fmt: skip
                assert (one.status_code, two.status_code) == (422, 400), (one.text, two.text)
                assert "1 ids for 2 rows" in one.json()["error"] == two.json()["error"]
            else:
                assert "no model version is loaded" in two.json()["error"]


@on_one_redis_and_a_cluster
def test_a_new_served_version_is_live_within_a_second(served: Served, r) -> None:
    store = ModelStore(r, "test", "fraud")
    newer = fraud_model(seed=5, n=5000)
    before = served.client.post("/v1/models/fraud:predict", json={"instances": FRAUD_ROWS}).json()
    store.publish(served.model.revision, 1, newer)
    took = wait_until(
        lambda: (
            served.client.post("/v1/models/fraud:predict", json={"instances": FRAUD_ROWS}).json()[
                "model_version"
            ]
            == 1
        ),
        timeout=1.0,
        interval=0.01,
    )
    after = served.client.post("/v1/models/fraud:predict", json={"instances": FRAUD_ROWS}).json()
    assert after["predictions"] != before["predictions"]
    np.testing.assert_allclose(
        after["predictions"], newer.predict_many(newer.schema.encode(FRAUD_ROWS)), rtol=1e-9
    )
    assert took < 1.0
    # a rollback (pointer moved back) is picked up the same way
    store.set_pointer(served.model.revision, "served", 0, pin=True)
    wait_until(
        lambda: (
            served.client.post("/v1/models/fraud:predict", json={"instances": FRAUD_ROWS}).json()[
                "model_version"
            ]
            == 0
        ),
        timeout=1.0,
    )


def _with_canary(served: Served, r, weight: int, shadow: bool = False) -> str:
    store = ModelStore(r, "test", "fraud")
    store.publish("canaryrev", 0, fraud_model(seed=3, params={"l2": 0.5}))
    r.hset(served.dp.keys.routing, mapping={
        "stable": served.model.revision, "canary": "canaryrev", "weight": weight, "shadow": int(shadow)})  # fmt: skip
    wait_until(
        lambda: served.dp.canary is not None and served.dp.routing.weight == weight, timeout=2
    )
    return "canaryrev"


def test_the_split_follows_the_weight_and_each_key_sticks_to_its_track(served: Served, r) -> None:
    _with_canary(served, r, weight=30)
    keys = [f"user-{i}" for i in range(10_000)]
    on_canary = sum(route_hash(k) < 3000 for k in keys)
    assert abs(on_canary / len(keys) - 0.30) < 0.02
    c = served.client
    tracks = {}
    for k in keys[:300]:
        body = c.post(
            "/v1/models/fraud:predict",
            json={"instances": [FRAUD_ROWS[0]]},
            headers={"x-tideline-key": k},
        ).json()
        tracks[k] = body["tracks"][0]
        assert body["revision"] == served.model.revision  # the response names the stable revision
    assert 0.2 < sum(t == "canary" for t in tracks.values()) / 300 < 0.4
    for k in keys[:50]:  # the same entity, the same track, every time
        body = c.post(
            "/v1/models/fraud:predict",
            json={"instances": [FRAUD_ROWS[0]]},
            headers={"x-tideline-key": k},
        ).json()
        assert body["tracks"][0] == tracks[k]


def test_a_routing_feature_splits_rows_of_one_request(r, redis_server) -> None:
    doc = manifest(name="fraud", serving={"routingKey": "merchant"})
    s = Served(redis_server.url, doc)
    ModelStore(r, "test", "fraud").publish(s.model.revision, 0, fraud_model())
    with s.client:
        wait_until(lambda: s.dp.ready)
        _with_canary(s, r, weight=50)
        expect = ["canary" if route_hash(f"m-{i}") < 5000 else "stable" for i in range(200)]
        for hour in (None, 3.0):  # the general path (a missing feature), then the fast one
            rows = [{"amount": 1.0, "merchant": f"m-{i}"} for i in range(200)]
            if hour is not None:
                rows = [{**row, "hour": hour} for row in rows]
            assert (s.typed(orjson.dumps({"instances": rows})) is None) == (hour is None)
            r.delete(s.dp.keys.log(s.dp.log.instance))
            body = s.client.post("/v1/models/fraud:predict", json={"instances": rows}).json()
            assert body["tracks"] == expect
            # one entry for the request, each row with its track and the model that answered
            wait_until(lambda: len(log_entries(r, s)) == 1)
            [e] = log_entries(r, s)
            assert e["tracks"] == expect and e["rows"] == rows and e["ids"] == body["ids"]
            assert e["meta"].models == {"stable": (s.model.revision, 0), "canary": ("canaryrev", 0)}


@pytest.mark.parametrize("rows", [FRAUD_ROWS, FULL], ids=["general path", "fast path"])
def test_shadow_mirrors_without_answering(served: Served, r, rows) -> None:
    _with_canary(served, r, weight=100, shadow=True)
    body = served.client.post("/v1/models/fraud:predict", json={"instances": rows}).json()
    assert body["tracks"] == ["stable", "stable"]
    wait_until(lambda: len(log_entries(r, served)) == 1)
    [e] = log_entries(r, served)  # the shadow's scores ride in the request's entry
    assert e["tracks"] == ["stable", "stable"] and e["ids"] == body["ids"]
    assert e["scores"] == body["predictions"] and e["rows"] == rows
    revision, version, scores = e["meta"].shadow
    assert (revision, version) == ("canaryrev", 0) and scores != body["predictions"]


def test_past_the_timeout_the_fixed_fallback_answers_and_is_flagged(r, redis_server) -> None:
    doc = manifest(name="fraud", serving={"timeout": "0.1ms", "fallback": {"value": 0.25}})
    doc["spec"]["model"] = {"task": "binary", "algorithm": "forest", "features": FRAUD_FEATURES}
    s = Served(redis_server.url, doc)
    forest = make_learner(doc["spec"]["model"])
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=1).take(3000)
    forest.learn_many(forest.schema.encode(rows), y)
    ModelStore(r, "test", "fraud").publish(s.model.revision, 0, forest)
    with s.client:
        wait_until(lambda: s.dp.ready)
        body = s.client.post("/v1/models/fraud:predict", json={"instances": rows[:2000]}).json()
        assert body["fallback"] is True and set(body["predictions"]) == {0.25}
        assert (
            'tideline_server_fallbacks_total{reason="timeout"} 1.0' in s.client.get("/metrics").text
        )


def test_through_a_redis_outage_it_keeps_serving_and_logs_afterwards(r) -> None:
    own = EmbeddedRedis().start()
    port = own.port
    s = Served(own.url, manifest(name="fraud"))
    ModelStore(own.client(), "test", "fraud").publish(s.model.revision, 0, fraud_model())
    try:
        with s.client:
            wait_until(lambda: s.dp.ready)
            own.stop()  # Redis is gone
            for _ in range(5):
                resp = s.client.post("/v1/models/fraud:predict", json={"instances": FRAUD_ROWS})
                assert resp.status_code == 200 and resp.json()["model_version"] == 0
            resp = s.client.post("/v1/models/fraud/feedback", json={"id": "x", "label": 1})
            assert resp.status_code == 503 and "nothing was stored" in resp.json()["error"]
            # the detail (an address, an errno) stays in the log
            assert str(port) not in resp.text and "Errno" not in resp.text
            assert s.client.get("/v2/health/ready").status_code == 200
            own = EmbeddedRedis(port=port).start()  # back, empty
            wait_until(lambda: _logged(own.client(), s) == 10, timeout=10)
    finally:
        own.stop()


def test_a_canary_in_another_image_gets_its_share_forwarded(
    served: Served, r, other_image_canary
) -> None:
    canary, url = other_image_canary
    r.hset(served.dp.keys.routing, mapping={
        "stable": served.model.revision, "canary": canary.model.revision, "weight": 100, "canaryURL": url})  # fmt: skip
    wait_until(lambda: served.dp.routing.canary_url == url, timeout=2)
    body = served.client.post("/v1/models/fraud:predict", json={"instances": FRAUD_ROWS}).json()
    assert body["revision"] == canary.model.revision and body["tracks"] == ["canary", "canary"]
    # logged by the canary's server, in its own log, under the ids it answered with
    wait_until(lambda: any(e["track"] == "canary" for e in log_entries(r, served, True)))
    [e] = log_entries(r, served, every_server=True)
    assert e["revision"] == canary.model.revision and e["ids"] == body["ids"]
    assert log_entries(r, served) == []


def test_a_shadow_canary_in_another_image_sees_the_traffic_but_never_answers(
    served: Served, r, other_image_canary
) -> None:
    canary, url = other_image_canary
    r.hset(served.dp.keys.routing, mapping={
        "stable": served.model.revision, "canary": canary.model.revision, "weight": 0, "shadow": 1,
        "canaryURL": url})  # fmt: skip
    wait_until(lambda: served.dp.routing.shadow, timeout=2)
    body = served.client.post("/v1/models/fraud:predict", json={"instances": FRAUD_ROWS}).json()
    assert body["revision"] == served.model.revision and body["tracks"] == ["stable", "stable"]
    wait_until(lambda: {e["track"] for e in log_entries(r, served, True)} == {"stable", "shadow"})
    shadow = next(e for e in log_entries(r, served, True) if e["track"] == "shadow")
    assert shadow["revision"] == canary.model.revision


@on_one_redis_and_a_cluster
def test_the_learner_joins_feedback_with_what_the_server_logged(served: Served, r) -> None:
    from tideline.pods.learner import LearnerProcess

    c = served.client
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=8).take(40)
    ids = []
    for i in range(0, 40, 10):  # dict rows (logged as the request came) and list rows
        body = {"instances": rows[i : i + 10]} if i < 20 else {
            "instances": [[r["amount"], r["hour"], r["merchant"]] for r in rows[i : i + 10]]}  # fmt: skip
        ids += c.post("/v1/models/fraud:predict", json=body).json()["ids"]
    wait_until(lambda: _logged(r, served) == 40)
    feedback = [{"id": i, "label": label} for i, label in zip(ids, y.tolist(), strict=True)]
    assert c.post("/v1/models/fraud/feedback", json={"feedback": feedback}).json() == {
        "accepted": 40
    }
    learner = LearnerProcess(served.model, r, checkpoint_seconds=0.0)
    learner.start()
    deadline = time.monotonic() + 10
    while learner.counters["samples"] < 40:
        assert time.monotonic() < deadline, learner.counters
        learner.step(block_ms=10)
    learner.flush()
    assert learner.counters["label_sum"] == y.sum()
    assert r.xlen(served.dp.keys.deadletter) == 0


def test_the_prediction_log_keeps_the_label_window_and_a_grace(
    r, redis_server, monkeypatch
) -> None:
    """Trimmed by time, whatever the rate: labelWindow (10 min) and a grace (60 s) of requests."""
    model = parse(manifest(name="fraud", learning={"labelWindow": "10m"}))
    ModelStore(r, "test", "fraud").publish(model.revision, 0, fraud_model())

    async def scenario() -> tuple[list[str], list[str], DataPlane]:
        dp = DataPlane(model, redis_server.url, log_flush_interval=60)
        await dp.start()
        now = time.time()
        try:
            monkeypatch.setattr(dataplane.time, "time", lambda: now - 661)
            gone = list(dp.predict(FRAUD_ROWS).ids)
            monkeypatch.setattr(dataplane.time, "time", lambda: now - 659)
            kept = list(dp.predict(FRAUD_ROWS).ids)
            monkeypatch.undo()
            await dp.log.write(dp.r)
            return gone, kept, dp
        finally:
            await dp.stop()

    gone, kept, dp = asyncio.run(scenario())
    assert [i for e in log_entries(r, dp) for i in e["ids"]] == kept
    # the stream of a server that is gone expires with its last entry
    assert 660 < r.ttl(dp.keys.log(dp.log.instance)) <= 720
    assert r.zscore(dp.keys.logs, dp.log.instance) is not None


# --------------------------------------------------------------------------- fuzzed bodies
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)  # fmt: skip


def _dumps(value: object) -> bytes:
    """JSON as a careless client writes it: big integers, NaN and Infinity included."""
    return json.dumps(value).encode()


_row = st.dictionaries(st.sampled_from(["amount", "hour", "merchant", "x", ""]), _json, max_size=4)
_bodies = st.one_of(
    st.binary(max_size=200),
    _json.map(_dumps),
    st.fixed_dictionaries({"instances": st.lists(_row | _json, max_size=4)},
                          optional={"ids": _json, "labels": _json}).map(_dumps),
    st.fixed_dictionaries({"inputs": st.lists(st.fixed_dictionaries(
        {"name": _json | st.sampled_from(["amount", "merchant"]), "shape": _json,
         "datatype": _json | st.sampled_from(["FP32", "BYTES", "INT64"]), "data": _json}), max_size=3)},
        optional={"id": _json, "parameters": _json, "outputs": _json}).map(_dumps),
    st.fixed_dictionaries({"id": _json, "label": _json}).map(_dumps),
    st.fixed_dictionaries({"feedback": st.lists(st.fixed_dictionaries({"id": _json, "label": _json}),
                                                max_size=3)}).map(_dumps),
)  # fmt: skip
ROUTES = ["/v1/models/fraud:predict", "/v2/models/fraud/infer", "/v1/models/fraud/feedback",
          "/v1/models/fraud:learn"]  # fmt: skip


@settings(derandomize=True, max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(route=st.sampled_from(ROUTES), body=_bodies)
def test_any_body_on_any_route_gets_an_answer_never_a_5xx(
    served: Served, route: str, body: bytes
) -> None:
    resp = served.client.post(route, content=body, headers={"content-type": "application/json"})
    assert resp.status_code < 500, (route, body, resp.text)
    if resp.status_code >= 400:
        err = resp.json()["error"]
        assert isinstance(err, str) and err, (route, body, resp.text)


def test_with_feedback_auth_only_a_bearer_of_the_token_may_teach_the_model(r, redis_server) -> None:
    s = Served(
        redis_server.url, manifest(name="fraud"), ServerConfig(feedback_token="s3cret-t0ken")
    )
    ModelStore(r, "test", "fraud").publish(s.model.revision, 0, fraud_model())
    learn = {"instances": FRAUD_ROWS, "labels": [1, 0]}
    with s.client as c:
        wait_until(lambda: s.dp.ready)
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic s3cret-t0ken"},
                        {"authorization": "s3cret-t0ken"}):  # fmt: skip
            for route, body in (("/v1/models/fraud/feedback", {"id": "x", "label": 1}),
                                ("/v1/models/fraud:learn", learn)):  # fmt: skip
                resp = c.post(route, json=body, headers=headers)
                assert resp.status_code == 401 and "Bearer" in resp.json()["error"], (
                    route,
                    headers,
                )
        assert r.xlen(s.dp.keys.feedback) == 0 and r.xlen(s.dp.keys.samples) == 0, "nothing stored"
        good = {"authorization": "Bearer s3cret-t0ken"}
        assert (
            c.post(
                "/v1/models/fraud/feedback", json={"id": "x", "label": 1}, headers=good
            ).status_code
            == 202
        )
        assert c.post("/v1/models/fraud:learn", json=learn, headers=good).status_code == 202
        # predictions need no token
        assert c.post("/v1/models/fraud:predict", json={"instances": FRAUD_ROWS}).status_code == 200
