"""The monitor's evidence for proving a replaced version and for unpinning after a rollback."""

from __future__ import annotations

import orjson
import pytest

from tests.helpers import FRAUD_FEATURES, LoggedRequest, manifest
from tideline import health as health_summary
from tideline.algorithms import make_learner
from tideline.contracts import Keys, Pointers
from tideline.demo.simulate import SyntheticStream
from tideline.pods.monitor import Monitor
from tideline.pods.store import ModelStore
from tideline.spec import parse

pytestmark = pytest.mark.integration


def _model():
    return parse(manifest(name="fraud", rollout={"analysis": {"interval": "100ms",
                                                              "minSamples": 200}}))  # fmt: skip


def _trained(model, rows, y):
    m = make_learner(model.spec.model.to_dict())
    m.learn_many(m.schema.encode(rows), y)
    return m


def _answered(r, model, store, version, rows, y, prefix):
    """Requests answered by ``version`` (logged as a server logs them), then their labels."""
    k = Keys(model.namespace, model.name)
    served, _ = store.load(model.revision, version)
    ids = [f"{prefix}{i}" for i in range(len(rows))]
    scores = [float(x) for x in served.predict_many(served.schema.encode(rows))]
    LoggedRequest(rows, ids=ids, scores=scores, track="stable", revision=model.revision,
                  version=version).write(r, k)  # fmt: skip
    pipe = r.pipeline()
    for i, label in zip(ids, y.tolist(), strict=True):
        pipe.xadd(k.feedback, {"data": orjson.dumps({"id": i, "label": label})})
    pipe.execute()


def _quality(mon: Monitor) -> dict:
    return orjson.loads(health_summary.encode(mon.write()))["quality"]


def test_a_version_replaced_before_its_labels_came_is_offered_with_lastgood_and_constant(
    r,
) -> None:
    model = _model()
    stream = SyntheticStream(FRAUD_FEATURES, "binary", seed=3)
    store = ModelStore(r, model.namespace, model.name)
    rows, y = stream.take(3000)
    store.publish(model.revision, 1, _trained(model, rows[:1000], y[:1000]))
    store.set_pointer(model.revision, "lastGood", 1)
    store.publish(model.revision, 2, _trained(model, rows, y))
    mon = Monitor(model, r)
    mon.list_logs_every = 0.0
    mon.start()
    test_rows, test_y = stream.take(600)
    _answered(r, model, store, 2, test_rows, test_y, "a")
    # the learner published v3 before v2's labels came: v3 is served, v2 was replaced
    store.publish(model.revision, 3, _trained(model, rows[:2000], y[:2000]))
    mon.step(block_ms=50)
    c = _quality(mon)["candidates"]
    assert c["served"]["version"] == 3 and c["served"].get("servedLabelled", 0) == 0
    recent = c["recent"]
    assert (recent["version"], recent["servedLabelled"]) == (2, 600)
    assert recent["versus"]["lastGood"]["samples"] == 600
    assert recent["versus"]["constant"]["lower"] > 0, "surely better than the best constant"


def test_while_pinned_latest_is_compared_on_the_labels_since_the_pin_alone(r) -> None:
    model = _model()
    stream = SyntheticStream(FRAUD_FEATURES, "binary", seed=4)
    store = ModelStore(r, model.namespace, model.name)
    k = Keys(model.namespace, model.name)
    rows, y = stream.take(3000)
    store.publish(model.revision, 1, _trained(model, rows, y))
    store.set_pointer(model.revision, "lastGood", 1)
    store.publish(model.revision, 2, _trained(model, rows, 1.0 - y))  # poisoned
    mon = Monitor(model, r)
    mon.list_logs_every = 0.0
    mon.start()
    before_rows, before_y = stream.take(500)
    _answered(r, model, store, 2, before_rows, before_y, "b")
    mon.step(block_ms=50)
    assert _quality(mon).get("pin") is None
    # the rollback: v1 pinned, its details beside the pin; then the learner publishes v3
    r.hset(k.pointers(model.revision), mapping=Pointers.pin_hash(
        from_=2, to=1, at=123.0, reason="lastGood v1 beats served v2", latest=2))  # fmt: skip
    store.set_pointer(model.revision, "served", 1, pin=True)
    store.publish(model.revision, 3, _trained(model, rows[:2500], y[:2500]))
    q = _quality(mon)
    assert q["pin"]["at"] == 123.0 and q["pin"]["version"] == 1
    assert q["pin"].get("samples", 0) == 0 and q["pin"]["errorBefore"] < 0.5
    assert q["candidates"]["latest"]["sincePin"]["samples"] == 0
    after_rows, after_y = stream.take(400)
    _answered(r, model, store, 1, after_rows, after_y, "c")
    mon.step(block_ms=50)
    q = _quality(mon)
    assert q["window"] == 900
    assert q["candidates"]["latest"]["sincePin"]["samples"] == 400
    assert q["candidates"]["latest"]["vsServed"]["samples"] == 900
    assert q["pin"]["samples"] == 400 and q["pin"]["errorSince"] < 0.5
    # unpinned: the pin's evidence goes
    store.set_pointer(model.revision, "served", 3, pin=False)
    q = _quality(mon)
    assert q.get("pin") is None and "sincePin" not in q["candidates"]["latest"]
