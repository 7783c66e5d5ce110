"""The model store against a real redis-server."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from tests.helpers import FRAUD_FEATURES, on_one_redis_and_a_cluster, retired
from tideline.algorithms import make_learner
from tideline.contracts import Pointers
from tideline.store import ModelStore, StoreError

pytestmark = pytest.mark.integration


def _learner(seed: int = 0):
    m = make_learner({"task": "binary", "algorithm": "sgd", "features": FRAUD_FEATURES})
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.normal(size=200), rng.normal(size=200), rng.integers(0, 64, 200)])
    m.learn_many(X, (X[:, 0] > 0).astype(float))
    return m, X


def test_keys_are_namespaced_per_model(r) -> None:
    store = ModelStore(r, "prod", "fraud")
    m, _ = _learner()
    store.publish("abc", 0, m)
    assert sorted(k.decode() for k in r.keys("*")) == [
        "tideline:{prod/fraud}:rev:abc:pointers",
        "tideline:{prod/fraud}:rev:abc:v:0",
        "tideline:{prod/fraud}:rev:abc:versions",
        "tideline:{prod/fraud}:rev:abc:vmeta",
    ]


@on_one_redis_and_a_cluster
def test_a_published_version_loads_back_identical(r) -> None:
    store = ModelStore(r, "ns", "m")
    m, X = _learner()
    store.publish("rev1", 0, m, {"note": "first"})
    loaded, meta = store.load("rev1", "served")
    np.testing.assert_array_equal(loaded.predict_many(X), m.predict_many(X))
    assert meta["version"] == 0 and meta["note"] == "first" and meta["n_seen"] == 200
    assert store.version_meta("rev1", 0)["note"] == "first"


def test_publishing_advances_served_and_never_makes_a_version_last_good_by_itself(r) -> None:
    store = ModelStore(r, "ns", "m")
    m, _ = _learner()
    store.publish("rev", 0, m)
    assert store.pointers("rev") == Pointers(latest=0, served=0)  # a cold v0 is no rollback target
    store.publish("rev", 1, m)
    store.set_pointer("rev", "lastGood", 1)  # proven (by the operator)
    store.publish("rev", 2, m)
    assert store.pointers("rev") == Pointers(latest=2, served=2, lastGood=1)


def test_a_warm_start_baseline_starts_as_last_good_unless_one_is_set(r) -> None:
    store = ModelStore(r, "ns", "m")
    m, _ = _learner()
    store.publish("rev", 0, m, baseline=True)
    store.publish("rev", 1, m)
    assert store.pointers("rev") == Pointers(latest=1, served=1, lastGood=0)
    store.set_pointer("rev", "lastGood", 1)
    store.publish("rev", 2, m, baseline=True)
    assert store.pointers("rev").lastGood == 1


def test_a_pinned_revision_moves_only_latest(r) -> None:
    store = ModelStore(r, "ns", "m")
    m, _ = _learner()
    for v in range(3):
        store.publish("rev", v, m)
    store.set_pointer("rev", "lastGood", 1)
    store.set_pointer("rev", "served", 1, pin=True)
    store.publish("rev", 3, m)
    p = store.pointers("rev")
    assert p == Pointers(latest=3, served=1, lastGood=1, pinned=True)
    store.set_pointer("rev", "served", 3, pin=False)
    store.publish("rev", 4, m)
    assert store.pointers("rev").served == 4


def test_retention_keeps_the_newest_and_every_pointer_target(r) -> None:
    store = ModelStore(r, "ns", "m")
    m, _ = _learner()
    store.publish("rev", 0, m, keep=5)
    store.set_pointer("rev", "served", 0, pin=True)  # v0 stays served
    for v in range(1, 12):
        store.publish("rev", v, m, keep=5)
    assert store.versions("rev") == [0, 8, 9, 10, 11]
    assert r.exists(store.keys.version("rev", 0)) and not r.exists(store.keys.version("rev", 1))
    with pytest.raises(StoreError, match="no version 3"):
        store.load("rev", 3)


def test_every_new_version_is_announced_on_pub_sub(r) -> None:
    store = ModelStore(r, "ns", "m")
    sub = r.pubsub()
    sub.subscribe(store.keys.events)
    assert sub.get_message(timeout=1)["type"] == "subscribe"
    m, _ = _learner()
    store.publish("rev", 0, m)
    msg = sub.get_message(timeout=2)
    event = orjson.loads(msg["data"])
    assert (event["event"], event["revision"], event["version"]) == ("version", "rev", 0)
    store.set_pointer("rev", "served", 0)
    event = orjson.loads(sub.get_message(timeout=2)["data"])
    assert (event["event"], event["pointer"]) == ("pointer", "served")
    sub.close()


def test_pointing_at_a_missing_version_is_refused(r) -> None:
    store = ModelStore(r, "ns", "m")
    with pytest.raises(StoreError, match="has no version 7"):
        store.set_pointer("rev", "served", 7)
    with pytest.raises(StoreError, match="unknown pointer"):
        store.set_pointer("rev", "best", 0)


@on_one_redis_and_a_cluster
def test_forgetting_a_revision_deletes_its_keys_and_learner_groups_and_nothing_else(r) -> None:
    store = ModelStore(r, "ns", "m")
    other = ModelStore(r, "ns", "m2")  # same revision name, another model
    m, _ = _learner()
    for v in range(3):
        store.publish("old", v, m)
        store.publish("new", v, m)
    other.publish("old", 0, m)
    k = store.keys
    r.set(k.checkpoint("old"), b"x")
    r.hset(k.control("old"), "paused", "0")
    for stream in (k.samples, k.feedback):
        for rev in ("old", "new"):
            r.xgroup_create(stream, k.learner_group(rev), id="0", mkstream=True)
    store.retire("old", 100.0)
    store.retire("old", 200.0)  # the first retirement counts
    assert retired(r, k) == {"old": 100.0}
    kept = {key for key in r.scan_iter() if b":old:" not in key or b"/m2}" in key}
    kept.remove(k.retired.encode())  # emptied, so gone

    assert store.forget("old") == 8  # 3 versions, versions, vmeta, pointers, checkpoint, control
    assert set(r.scan_iter()) == kept
    assert retired(r, k) == {}
    for stream in (k.samples, k.feedback):
        assert [g["name"] for g in r.xinfo_groups(stream)] == [k.learner_group("new").encode()]
    assert store.versions("new") == [0, 1, 2] and other.versions("old") == [0]
    assert store.forget("old") == 0  # twice is harmless
