"""The prediction log under the fault probe of issue 30, against a real redis-server: a padded
body holds no more than its rows, a client's id names one prediction, and labels for made-up
ids neither wait nor push a genuine label out."""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.helpers import (
    FRAUD_FEATURES,
    LoggedRequest,
    manifest,
    on_one_redis_and_a_cluster,
    wait_until,
)
from tideline import predlog
from tideline.algorithms import make_learner
from tideline.contracts import Keys
from tideline.demo.simulate import SyntheticStream
from tideline.pods.join import LogJoin
from tideline.pods.metrics import ServerMetrics
from tideline.pods.server.api import create_app
from tideline.pods.server.dataplane import DataPlane
from tideline.spec import parse
from tideline.store import ModelStore

pytestmark = pytest.mark.integration

KEYS = Keys("test", "fraud")
PREDICT = "/v1/models/fraud:predict"
JSON = {"content-type": "application/json"}


class Server:
    """A published model and a running server app: its client, data plane and log."""

    def __init__(self, url: str) -> None:
        self.model = parse(manifest(name="fraud"))
        self.dp = DataPlane(self.model, url, metrics=ServerMetrics(None), poll_interval=0.2)
        self.client = TestClient(create_app(self.dp))

    def logged(self, r) -> list[tuple[str, predlog.Entry]]:  # type: ignore[no-untyped-def]
        """The requests in this server's log: (entry id, request)."""
        return [(eid, e) for _, eid, e in predlog.read(r, KEYS, self.dp.log.instance)]

    def join(self, r, **kw) -> LogJoin:  # type: ignore[no-untyped-def]
        return LogJoin(r, KEYS, self.model.spec.learning.labelWindow, "reader", **kw)


def _serving(r, url: str) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    s = Server(url)
    learner = make_learner({"task": "binary", "algorithm": "sgd", "features": FRAUD_FEATURES})
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=0).take(500)
    learner.learn_many(learner.schema.encode(rows), y)
    ModelStore(r, "test", "fraud").publish(s.model.revision, 0, learner)
    with s.client:
        wait_until(lambda: s.dp.ready)
        yield s


@pytest.fixture
def server(r, redis_under_test) -> Iterator[Server]:
    yield from _serving(r, redis_under_test.url)


def _padded(rows: list, pad: int, ids: list | None = None) -> bytes:
    """A predict body with ``pad`` bytes of whitespace between its rows (valid JSON)."""
    space = b" " * pad
    body = b'{"instances":[' + space + b",".join(orjson.dumps(x) for x in rows) + space + b"]"
    return body + (b',"ids":' + orjson.dumps(ids) if ids is not None else b"") + b"}"


# --------------------------------------------------------------------------- padded bodies
def test_padded_bodies_are_logged_within_a_row_limit_and_their_labels_join_the_rows_sent(
    server: Server, r
) -> None:
    """Four one-row predictions padded to 2 MiB each (the probe sent 48 of 8 MiB: +385 MB
    held): the log holds a few hundred bytes a row, and each label joins its own row."""
    full = [{"amount": 10.0 + i, "hour": 3.0, "merchant": f"m-{i}"} for i in range(2)]
    sparse = [{"amount": 20.0 + i, "merchant": "m-x"} for i in range(2)]  # the general path
    ids, rows = [], []
    for row in full + sparse:
        resp = server.client.post(PREDICT, content=_padded([row], 2 << 20), headers=JSON)
        assert resp.status_code == 200, resp.text
        ids += resp.json()["ids"]
        rows.append(row)
    wait_until(lambda: len(server.logged(r)) == 4)
    stream = KEYS.log(server.dp.log.instance)
    held = r.memory_usage(stream, samples=0)
    assert held < 16 << 10, held  # of 8 MiB sent
    limit = predlog.row_bytes(len(FRAUD_FEATURES))
    for _, fields in r.xrange(stream):
        assert all(len(v) <= limit for k, v in fields.items() if k.startswith(b"b"))
    j = server.join(r)
    for i, pid in enumerate(ids):
        j.add(f"f{i}", pid, i % 2, time.time())
    joined = j.resolve()
    assert [x.features() for x in joined] == [[row] for row in rows]
    assert j.take_rejected() == []


def test_a_row_over_the_limit_is_logged_as_cut_and_its_label_is_unmatched_not_joined(
    server: Server, r
) -> None:
    big = {"amount": 1.0, "hour": 2.0, "merchant": "m" * 20_000}  # one value of 20 KB
    small = {"amount": 2.0, "hour": 2.0, "merchant": "m-2"}
    resp = server.client.post(PREDICT, json={"instances": [big, small]})
    assert resp.status_code == 200, resp.text
    wait_until(lambda: len(server.logged(r)) == 1)
    [(_, e)] = server.logged(r)
    assert e.meta.cut == [0] and e.rows == [None, small] and len(e) == 2
    with pytest.raises(ValueError, match="row 0 was not logged: over the log's size limit"):
        e.row(0)
    j = server.join(r)
    for i, pid in enumerate(resp.json()["ids"]):
        j.add(f"f{i}", pid, 1, time.time())
    [joined] = j.resolve()
    assert joined.features() == [small] and joined.feedback_ids == ["f1"]
    [rejected] = j.take_rejected()
    assert (rejected.feedback_id, rejected.reason) == (
        "f0", "unmatched: the row was over the log's size limit, not logged")  # fmt: skip


# --------------------------------------------------------------------------- client ids
def test_a_client_id_is_not_rebound_by_another_request_and_its_label_joins_the_first(
    server: Server, r
) -> None:
    """The probe: a second caller reusing ``order-42`` took the id, and the first caller's
    label joined the second caller's row. Now the second is refused, naming the id."""
    victim = {"amount": 1.0, "hour": 1.0, "merchant": "m-victim"}
    attacker = {"amount": 999.0, "hour": 1.0, "merchant": "m-attacker"}
    first = server.client.post(PREDICT, json={"instances": [victim], "ids": ["order-42"]})
    assert first.status_code == 200 and first.json()["ids"] == ["order-42"]
    for body, path in (({"instances": [attacker], "ids": ["order-42"]}, PREDICT),
                       ({"inputs": [{"name": "amount", "shape": [1], "datatype": "FP64",
                                     "data": [999.0]}],
                         "parameters": {"ids": ["order-42"]}}, "/v2/models/fraud/infer")):  # fmt: skip
        again = server.client.post(path, json=body)
        assert again.status_code == 409, again.text
        assert again.json()["error"].startswith("ids[0]: 'order-42' already names another")
    wait_until(lambda: len(server.logged(r)) >= 3)
    time.sleep(0.1)  # (the writer's next flushes: nothing else comes)
    logged = [e for _, e in server.logged(r) if len(e)]
    assert [e.meta.ids for e in logged] == [["order-42"]]  # the refused ones: empty requests
    j = server.join(r)
    j.add("f1", "order-42", 1, time.time())
    [joined] = j.resolve()
    assert joined.features() == [victim]
    # held for the log's window (labelWindow and a grace), and free again after it
    claim = KEYS.log_claim("order-42")
    window = predlog.retention(server.model.spec.learning.labelWindow)
    assert window * 1000 - 5000 < r.pttl(claim) <= window * 1000
    r.pexpire(claim, 1)
    wait_until(lambda: not r.exists(claim))
    later = server.client.post(PREDICT, json={"instances": [attacker], "ids": ["order-42"]})
    assert later.status_code == 200, later.text


@on_one_redis_and_a_cluster  # (the claims and the index bucket a bind writes: the model's slot)
def test_a_request_with_one_taken_id_binds_none_of_its_ids(server: Server) -> None:
    row = {"amount": 1.0, "hour": 1.0, "merchant": "m"}
    assert server.client.post(PREDICT, json={"instances": [row], "ids": ["b"]}).status_code == 200
    both = server.client.post(PREDICT, json={"instances": [row, row], "ids": ["a", "b"]})
    assert both.status_code == 409 and both.json()["error"].startswith("ids[1]: 'b' already")
    assert server.client.post(PREDICT, json={"instances": [row], "ids": ["a"]}).status_code == 200


def test_an_id_given_twice_in_one_request_is_refused(server: Server) -> None:
    row = {"amount": 1.0, "hour": 1.0, "merchant": "m"}
    resp = server.client.post(PREDICT, json={"instances": [row, row], "ids": ["x", "x"]})
    assert resp.status_code == 422
    assert resp.json()["error"] == "ids[1]: 'x' is given twice in the request"


def test_only_requests_with_their_own_ids_pay_a_round_trip_before_the_answer(
    server: Server, r
) -> None:
    row = {"amount": 1.0, "hour": 1.0, "merchant": "m"}

    def evals() -> int:
        return r.info("commandstats").get("cmdstat_eval", {}).get("calls", 0)

    before = evals()
    for _ in range(20):
        assert server.client.post(PREDICT, json={"instances": [row]}).status_code == 200
    assert evals() == before
    for i in range(3):
        body = {"instances": [row], "ids": [f"o-{i}"]}
        assert server.client.post(PREDICT, json=body).status_code == 200
    assert evals() == before + 3


# --------------------------------------------------------------------------- forged ids
def test_forged_ids_are_unmatched_at_once_and_a_genuine_label_waits_and_joins(r) -> None:
    """The probe: ids naming server logs that do not exist waited 600 s each, and 110,000 of
    them filled the waiting room and pushed out a genuine label. Here the room holds 1,000:
    10,000 forged ids, then a label whose prediction is logged later."""
    j = LogJoin(r, KEYS, 1800.0, "reader", max_waiting=1000)
    now = time.time()
    ms = int(now * 1000)
    for i in range(10_000):
        j.add(f"forged-{i}", f"{i:012x}-{ms}-0-0-{'0' * 16}-0", 1, now)
    for i in range(100):  # and clients' ids no request was answered with
        j.add(f"made-up-{i}", f"order-{i}", 1, now)
    genuine = LoggedRequest([{"amount": 7.0}]).answered(r, KEYS)  # answered, not yet logged
    j.add("genuine", genuine.ids[0], 1, time.time())
    assert j.resolve() == []
    rejected = j.take_rejected()
    assert len(rejected) == 10_100 and j.waiting == 1 and j.overflow == 0
    reasons = {x.reason for x in rejected}
    assert reasons == {"unmatched: no server writes the log the id names",
                       "unmatched: no prediction has this id"}  # fmt: skip
    genuine.write(r, KEYS)
    joined: list = []

    def resolved() -> bool:
        joined.extend(j.resolve())
        return bool(joined)

    wait_until(resolved, timeout=5.0, interval=0.05, message="the genuine label joined")
    assert [x.feedback_ids for x in joined] == [["genuine"]]
    assert joined[0].features() == [{"amount": 7.0}] and j.take_rejected() == []


def test_a_server_lists_its_log_before_its_first_answer(server: Server, r) -> None:
    """So that a label overtaking the server's first write waits for it, not unmatched."""
    wait_until(lambda: r.zscore(KEYS.logs, server.dp.log.instance) is not None, timeout=1.0)
    assert r.exists(KEYS.log(server.dp.log.instance)) == 0  # nothing was written
