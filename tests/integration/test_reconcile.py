"""A model's turn against a real Redis and an in-memory Kubernetes API.

The real API server is the e2e suite's; here a dict stands in for it so each
turn's applies, deletes and Redis writes can be counted exactly.
"""

from __future__ import annotations

import base64
import copy
import logging
import time
from typing import Any

import orjson
import pytest
import redis

from tests.helpers import (
    CANARY_ROLLOUT,
    Clock,
    FakeKube,
    as_applied,
    health_summary,
    manifest,
    on_one_redis_and_a_cluster,
    retired,
    turn,
)
from tideline.algorithms import make_learner
from tideline.contracts import Keys
from tideline.signing import KEY_ENV, Signer
from tideline.spec import parse
from tideline.store import ModelStore
from tideline_operator import reconcile
from tideline_operator.builders import OperatorConfig
from tideline_operator.reconcile import ModelMemory, Reconciler, route_weights
from tideline_operator.rollout import ROLLBACK_TO

pytestmark = pytest.mark.integration


def test_the_first_turn_builds_every_child_and_the_second_changes_nothing(setup, r) -> None:
    rec, kube, clock, events, _ = setup
    body = as_applied(manifest("fraud", rollout=CANARY_ROLLOUT))
    st = turn(setup, body, ready=False)
    rev = parse(manifest("fraud")).revision
    assert st is not None and st["stableRevision"] == rev and st["phase"] == "Progressing"
    kinds = sorted(k for k, _ in kube.applied)
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "Deployment",
                     "PodDisruptionBudget", "Secret", "Service"]  # fmt: skip
    owner = kube.objects[("Service", "fraud")]["metadata"]["ownerReferences"][0]
    assert owner["uid"] == "u-1" and owner["controller"] is True
    assert r.hgetall(Keys("test", "fraud").routing)[b"stable"] == rev.encode()
    assert ("Normal", "Deployed", f"revision {rev}") in events

    clock.now += 1
    st = turn(setup, body)  # replicas became ready
    assert st is not None and st["phase"] == "Healthy"
    applied = len(kube.applied)
    for _ in range(3):
        clock.now += 1
        assert turn(setup, body) is None, "an unchanged model writes no status"
    assert len(kube.applied) == applied, "and applies nothing"


def _publish(r: redis.Redis, m: dict, rev: str, versions: int) -> None:
    store = ModelStore(r, "test", m["metadata"]["name"])
    learner = make_learner(m["spec"]["model"])
    for v in range(1, versions + 1):
        store.publish(rev, v, learner)


@on_one_redis_and_a_cluster
def test_a_guardrail_breach_pins_served_to_last_good_and_resets_the_learner(setup, r) -> None:
    rec, kube, clock, events, _ = setup
    m = manifest("fraud", rollout=CANARY_ROLLOUT, guardrails={"maxAccuracyDrop": 0.05})
    rev = parse(m).revision
    _publish(r, m, rev, 7)  # served 7
    ModelStore(r, "test", "fraud").set_pointer(rev, "lastGood", 6)  # proven earlier
    body = as_applied(m)
    turn(setup, body)
    keys = Keys("test", "fraud")
    # on the same 500 labelled samples, lastGood v6 is 10 points more accurate than v7
    r.set(keys.health, health_summary(clock.now, stable={"accuracy": 0.80, "window": 500},
                                      quality={"served": (rev, 7), "lastGood": (rev, 6, 0.10, 0.03, 500)}))  # fmt: skip
    start = time.perf_counter()
    st = turn(setup, body)
    took = time.perf_counter() - start
    assert st is not None and st["servedVersion"] == 6 and st["pinned"] is True
    assert st["lastRollback"]["from"] == 7 and st["lastRollback"]["to"] == 6
    assert "lastGood v6 beats served v7" in st["lastRollback"]["reason"]
    ptr = ModelStore(r, "test", "fraud").pointers(rev)
    assert ptr.served == 6 and ptr.pinned is True
    assert r.hget(keys.control(rev), "resetTo") == b"6"
    assert any(reason == "RolledBack" for _, reason, _ in events)
    print(f"\n[reconcile] breach in Redis -> served pinned in one turn of {took * 1000:.1f} ms")

    # the learner publishes v8 after the reset; still surely worse: it stays pinned
    ModelStore(r, "test", "fraud").publish(rev, 8, make_learner(m["spec"]["model"]))
    clock.now += 6
    r.set(keys.health, health_summary(clock.now, stable={"accuracy": 0.90, "window": 500},
                                      quality={"served": (rev, 6), "lastGood": (rev, 6),
                                               "latest": (rev, 8, -0.2, 0.03, 500)}))  # fmt: skip
    st = turn(setup, body)
    assert st is None or st["servedVersion"] == 6
    # v9, not worse than v6 on the same samples: served again
    ModelStore(r, "test", "fraud").publish(rev, 9, make_learner(m["spec"]["model"]))
    clock.now += 6
    r.set(keys.health, health_summary(clock.now, stable={"accuracy": 0.90, "window": 500},
                                      quality={"served": (rev, 6), "lastGood": (rev, 6),
                                               "latest": (rev, 9, 0.0, 0.03, 500)}))  # fmt: skip
    st = turn(setup, body)
    assert st is not None and st["servedVersion"] == 9 and not st["pinned"]
    assert ModelStore(r, "test", "fraud").pointers(rev).served == 9


def test_a_version_proven_on_labels_becomes_last_good_in_redis(setup, r) -> None:
    rec, kube, clock, events, _ = setup
    m = manifest("fraud", rollout=CANARY_ROLLOUT)
    rev = parse(m).revision
    _publish(r, m, rev, 3)  # a cold model: no lastGood
    body = as_applied(m)
    turn(setup, body)
    r.set(Keys("test", "fraud").health, health_summary(clock.now, quality={
        "served": (rev, 3), "constant": (None, None, -0.3, 0.03, 1000)}))  # fmt: skip
    st = turn(setup, body)
    assert st is not None and st["lastGoodVersion"] == 3
    assert ModelStore(r, "test", "fraud").pointers(rev).lastGood == 3
    assert any(reason == "Proven" for _, reason, _ in events)


def test_the_stable_learner_s_lag_is_in_status_refreshed_each_analysis_interval(setup, r) -> None:
    rec, kube, clock, events, _ = setup
    m = manifest("fraud", rollout=CANARY_ROLLOUT)  # analysis every 5 s
    rev = parse(m).revision
    body = as_applied(m)
    turn(setup, body)
    learner = Keys("test", "fraud").learner(rev)
    r.hset(learner, "lag", 1200)
    clock.now += 1
    assert (turn(setup, body) or {}).get("learnerLag") == 1200
    r.hset(learner, "lag", 300)
    clock.now += 1
    assert turn(setup, body) is None, "not a status write a second"
    clock.now += 5
    assert (turn(setup, body) or {}).get("learnerLag") == 300


@on_one_redis_and_a_cluster
def test_rollback_by_annotation_points_served_at_the_named_version(setup, r) -> None:
    m = manifest("fraud", rollout=CANARY_ROLLOUT)
    rev = parse(m).revision
    _publish(r, m, rev, 5)
    body = as_applied(m)
    turn(setup, body)
    body["metadata"]["annotations"] = {ROLLBACK_TO: "2"}
    st = turn(setup, body)
    assert st is not None and st["servedVersion"] == 2
    assert ModelStore(r, "test", "fraud").pointers(rev).served == 2


@on_one_redis_and_a_cluster
def test_a_new_revision_runs_a_warm_started_canary_then_replaces_stable(setup, r) -> None:
    rec, kube, clock, events, _ = setup
    m = manifest("fraud", rollout=CANARY_ROLLOUT)
    old = parse(m).revision
    turn(setup, as_applied(m))
    m2 = copy.deepcopy(m)
    m2["spec"]["model"]["params"] = {"optimizer": "adagrad"}
    new = parse(m2).revision
    st = turn(setup, as_applied(m2, generation=2))
    assert st is not None and st["canaryRevision"] == new and st["canaryWeight"] == 20
    learner = kube.objects[("Deployment", f"fraud-learner-{new}")]
    args = learner["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-2:] == ["--warm-start-revision", old]
    canary_template = copy.deepcopy(learner["spec"]["template"])
    assert ("Deployment", f"fraud-server-{new}") not in kube.objects, "same image: in process"
    routing = r.hgetall(Keys("test", "fraud").routing)
    assert routing[b"canary"] == new.encode() and routing[b"weight"] == b"20"
    assert routing[b"canaryURL"] == b""

    # the stable ConfigMap keeps the stable revision's manifest, not the new spec
    cm = kube.objects[("ConfigMap", f"fraud-{old}")]["data"]["model.yaml"]
    assert "adagrad" not in cm

    # pause 30 s, then weight 50, then promotion
    clock.now += 31
    r.set(Keys("test", "fraud").health, health_summary(clock.now, stable={"accuracy": 0.9},
                                                quality={"served": (old, 0), "canary": (new, 0, 0.0, 0.01, 500)}))  # fmt: skip
    st = turn(setup, as_applied(m2, generation=2))
    assert st is not None and st["stableRevision"] == new and st.get("canaryRevision") is None
    st = turn(setup, as_applied(m2, generation=2))  # the next turn sees the old Deployments go
    assert ("Deployment", f"fraud-learner-{old}") in kube.deleted
    assert ("ConfigMap", f"fraud-{old}") in kube.deleted
    assert ("Service", "fraud") not in kube.deleted
    svc = kube.objects[("Service", "fraud")]
    assert svc["spec"]["selector"]["tideline.dev/revision"] == new
    assert r.hget(Keys("test", "fraud").routing, "stable") == new.encode()
    assert any(reason == "Promoted" for _, reason, _ in events)
    promoted = kube.objects[("Deployment", f"fraud-learner-{new}")]["spec"]["template"]
    assert promoted == canary_template, "the promoted learner is not restarted"


def _promoted(setup: tuple, r: redis.Redis) -> tuple[dict, dict, str, str]:
    """A model whose revision ``old`` (with versions, a checkpoint and a learner group in
    Redis) was promoted over by ``new`` and whose objects just went: (m, m2, old, new)."""
    _, kube, _, _, _ = setup
    keys = Keys("test", "fraud")
    m = manifest("fraud", rollout={"steps": [{"setWeight": 50}, {"pause": {}}]})
    old = parse(m).revision
    _publish(r, m, old, 2)
    r.set(keys.checkpoint(old), b"state")
    r.xgroup_create(keys.samples, keys.learner_group(old), id="0", mkstream=True)
    turn(setup, as_applied(m))
    m2 = copy.deepcopy(m)
    m2["spec"]["model"]["params"] = {"optimizer": "adagrad"}
    new = parse(m2).revision
    _publish(r, m2, new, 1)
    turn(setup, as_applied(m2, generation=2))
    promote = as_applied(m2, generation=2)
    promote["metadata"]["annotations"] = {"tideline.dev/promote": "true"}
    st = turn(setup, promote)
    assert st is not None and st["stableRevision"] == new
    turn(setup, as_applied(m2, generation=2))  # the old Deployments go
    assert ("Deployment", f"fraud-learner-{old}") in kube.deleted
    return m, m2, old, new


def _keys_of(r: redis.Redis, revision: str) -> list[bytes]:
    return sorted(r.scan_iter(match=Keys("test", "fraud").rev_prefix(revision) + "*"))


@on_one_redis_and_a_cluster
def test_a_removed_revisions_redis_keys_go_a_grace_after_its_objects(setup, r) -> None:
    rec, _, clock, _, _ = setup
    _, m2, old, new = _promoted(setup, r)
    keys = Keys("test", "fraud")
    kept = _keys_of(r, new)
    assert len(_keys_of(r, old)) == 6  # versions 1-2, versions, vmeta, pointers, checkpoint
    assert retired(r, Keys("test", "fraud")) == {old: clock.now}
    clock.now += rec.settings.retired_grace - 1  # its pods may still be stopping
    turn(setup, as_applied(m2, generation=2))
    assert len(_keys_of(r, old)) == 6
    clock.now += 1
    turn(setup, as_applied(m2, generation=2))
    assert _keys_of(r, old) == [] and _keys_of(r, new) == kept
    assert retired(r, Keys("test", "fraud")) == {}
    assert [g["name"] for g in r.xinfo_groups(keys.samples)] == []


def test_a_revision_that_comes_back_starts_afresh_from_the_stable(setup, r) -> None:
    """A reverted spec: the old revision's learner warm-starts from the stable again instead
    of resuming the checkpoint it left behind."""
    _, kube, clock, _, _ = setup
    m, _, old, new = _promoted(setup, r)
    clock.now += 5  # well within the grace
    st = turn(setup, as_applied(m, generation=3))
    assert st is not None and st["canaryRevision"] == old
    # forgotten: nothing is left of it but the word to start afresh (StartWord)
    control = Keys("test", "fraud").control(old)
    assert _keys_of(r, old) == [control.encode()] and r.hgetall(control) == {b"start": b"fresh"}
    assert retired(r, Keys("test", "fraud")) == {}
    learner = kube.objects[("Deployment", f"fraud-learner-{old}")]
    assert learner["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == [
        "--warm-start-revision",
        new,
    ]


def test_a_canary_with_another_image_gets_its_own_servers_and_service(setup, r) -> None:
    rec, kube, clock, events, _ = setup
    m = manifest("fraud", rollout=CANARY_ROLLOUT)
    turn(setup, as_applied(m))
    m2 = copy.deepcopy(m)
    m2["spec"]["image"] = "img:2"
    new = parse(m2).revision
    turn(setup, as_applied(m2, generation=2))
    server = kube.objects[("Deployment", f"fraud-server-{new}")]
    assert server["spec"]["template"]["spec"]["containers"][0]["image"] == "img:2"
    assert (
        kube.objects[("Service", "fraud-canary")]["spec"]["selector"]["tideline.dev/revision"]
        == new
    )
    url = r.hget(Keys("test", "fraud").routing, "canaryURL")
    assert url == b"http://fraud-canary.test.svc:8080"


def test_a_spec_the_parser_rejects_is_degraded_naming_the_field(setup, r) -> None:
    rec, kube, clock, events, _ = setup
    m = manifest("fraud")
    m["spec"]["model"]["params"] = {"learningRate": -1}
    st = turn(setup, as_applied(m))
    assert st is not None and st["phase"] == "Degraded"
    degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
    assert (
        degraded["reason"] == "InvalidSpec"
        and "spec.model.params.learningRate" in degraded["message"]
    )
    assert kube.applied == []
    assert events and events[0][1] == "InvalidSpec"
    assert turn(setup, as_applied(m)) is None, "and it is not retried into new writes"


def test_gateway_weights_split_between_the_stable_and_canary_services() -> None:
    route = {"spec": {"rules": [
        {"matches": [{"path": {"value": "/"}}], "backendRefs": [{"name": "fraud", "port": 8080}]},
        {"backendRefs": [{"name": "other", "port": 80}]},
    ]}}  # fmt: skip
    rules = route_weights(route, "fraud", "fraud-canary", 30, 8080)
    assert rules[0]["backendRefs"] == [
        {"name": "fraud", "port": 8080, "weight": 70},
        {"name": "fraud-canary", "port": 8080, "weight": 30},
    ]
    assert rules[1] == route["spec"]["rules"][1]
    back = route_weights({"spec": {"rules": rules}}, "fraud", "fraud-canary", 0, 8080)
    assert back[0]["backendRefs"] == [{"name": "fraud", "port": 8080, "weight": 100}]


def test_the_redis_url_from_a_secret_is_read_once_per_resync_not_every_turn(setup, r) -> None:
    import base64

    rec, kube, clock, events, _ = setup
    url = f"redis://127.0.0.1:{r.connection_pool.connection_kwargs['port']}/0"
    kube.objects[("Secret", "redis")] = {"data": {"url": base64.b64encode(url.encode()).decode()}}
    body = as_applied(manifest("fraud", redis={"secretRef": {"name": "redis"}}))
    for _ in range(5):
        clock.now += 1
        turn(setup, body)
    assert kube.reads.count(("Secret", "redis")) == 1
    assert r.hget(Keys("test", "fraud").routing, "stable") is not None, "it reached that Redis"
    clock.now += rec.resync
    turn(setup, body)
    assert kube.reads.count(("Secret", "redis")) == 2


def test_monitor_kinds_installed_after_the_operator_started_are_used_within_a_resync(
    setup, r
) -> None:
    rec, kube, clock, events, _ = setup
    body = as_applied(manifest("fraud"))
    turn(setup, body)
    assert ("ServiceMonitor", "fraud") not in kube.objects, "no Prometheus Operator yet"
    kube.served_apis |= {"monitoring.coreos.com/v1/servicemonitors",
                         "monitoring.coreos.com/v1/podmonitors"}  # fmt: skip
    for _ in range(3):
        clock.now += 1
        turn(setup, body)
    asked = kube.reads.count(("API", "monitoring.coreos.com/v1/servicemonitors"))
    assert asked == 1, "not asked again every turn"
    clock.now += rec.resync
    turn(setup, body)
    kinds = {k for k, _ in kube.objects}
    assert {"ServiceMonitor", "PodMonitor"} <= kinds, sorted(kinds)
    clock.now += 5 * rec.resync
    turn(setup, body)
    assert kube.reads.count(("API", "monitoring.coreos.com/v1/servicemonitors")) == 2, (
        "once served, not asked again"
    )


def test_objects_it_does_not_own_are_never_taken_over_nor_deleted(setup, r) -> None:
    rec, kube, clock, events, _ = setup
    foreign = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "fraud", "namespace": "test", "labels": {"app": "theirs"}},
               "spec": {"selector": {"app": "theirs"}}}  # fmt: skip
    kube.objects[("Service", "fraud")] = copy.deepcopy(foreign)
    theirs_canary = copy.deepcopy(foreign)
    theirs_canary["metadata"]["name"] = "fraud-canary"
    kube.objects[("Service", "fraud-canary")] = theirs_canary
    body = as_applied(manifest("fraud", rollout=CANARY_ROLLOUT))
    st = turn(setup, body)
    assert st is not None and st["phase"] == "Degraded"
    degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ResourceExists" and "Service 'fraud'" in degraded["message"]
    assert kube.objects[("Service", "fraud")]["spec"] == {"selector": {"app": "theirs"}}
    assert ("Service", "fraud-canary") not in kube.deleted
    assert any(reason == "ResourceExists" for _, reason, _ in events)
    # the name is freed: the model is deployed; the other canary Service is still left alone
    del kube.objects[("Service", "fraud")]
    clock.now += 1
    st = turn(setup, body)
    assert st is not None and st["phase"] == "Healthy"
    assert kube.objects[("Service", "fraud")]["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert ("Service", "fraud-canary") in kube.objects and (
        "Service",
        "fraud-canary",
    ) not in kube.deleted


def test_a_spec_against_the_platform_policy_is_degraded_and_nothing_is_built(r) -> None:
    kube, clock = FakeKube(), Clock()
    url = f"redis://127.0.0.1:{r.connection_pool.connection_kwargs['port']}/0"
    rec = Reconciler(kube, OperatorConfig(image="img:1", redis_url=url, allowed_images=("registry.corp/ml/*",),  # type: ignore[arg-type]
                                    allow_redis_secret_ref=False), clock=clock)  # fmt: skip
    setup = (rec, kube, clock, [], ModelMemory())
    m = manifest("fraud", rollout=CANARY_ROLLOUT)
    m["spec"]["image"] = "docker.io/someone/tideline:latest"
    st = turn(setup, as_applied(m))
    assert st is not None and st["phase"] == "Degraded" and not kube.applied
    degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "PolicyViolation" and degraded["message"].startswith(
        "spec.image: "
    )
    m["spec"]["image"] = "registry.corp/ml/tideline:2"
    m["spec"]["redis"] = {"secretRef": {"name": "their-redis"}}
    st = turn(setup, as_applied(m, generation=2))
    degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "PolicyViolation" and "spec.redis.secretRef" in degraded["message"]
    del m["spec"]["redis"]
    st = turn(setup, as_applied(m, generation=3))
    assert st is not None and st["phase"] != "Degraded" and kube.applied


def _events(events: list, reason: str) -> int:
    return sum(1 for _, why, _ in events if why == reason)


def test_an_operator_that_stops_after_the_rolling_back_turn_unpins_as_without_the_stop(
    setup, r
) -> None:
    """The rolling-back turn applied its actions, then the operator stopped before its status
    was written: a new operator (fresh memory) goes on from the old status and the store."""
    rec, kube, clock, events, mem = setup
    m = manifest("fraud", rollout=CANARY_ROLLOUT, guardrails={"maxAccuracyDrop": 0.05})
    rev = parse(m).revision
    keys = Keys("test", "fraud")
    _publish(r, m, rev, 7)
    ModelStore(r, "test", "fraud").set_pointer(rev, "lastGood", 6)
    body = as_applied(m)
    turn(setup, body)
    written = copy.deepcopy(mem.status)  # what the API holds
    r.set(keys.health, health_summary(clock.now, stable={"accuracy": 0.80, "window": 500},
                                      quality={"served": (rev, 7), "lastGood": (rev, 6, 0.10, 0.03, 500)}))  # fmt: skip
    rolled = turn(setup, body)
    assert rolled is not None and rolled["pinned"] is True  # ... and never written

    again = Reconciler(kube, rec.settings, clock=clock)
    restarted = (again, kube, clock, events, ModelMemory())
    body["status"] = written
    ModelStore(r, "test", "fraud").publish(rev, 8, make_learner(m["spec"]["model"]))
    clock.now += 6
    r.set(keys.health, health_summary(clock.now, stable={"accuracy": 0.90, "window": 500},
                                      quality={"served": (rev, 6), "lastGood": (rev, 6),
                                               "latest": (rev, 8, -0.2, 0.03, 500)}))  # fmt: skip
    st = turn(restarted, body)
    assert st is not None and st["pinned"] is True and st["servedVersion"] == 6
    assert st["lastRollback"] == rolled["lastRollback"], "read back from the store"
    ModelStore(r, "test", "fraud").publish(rev, 9, make_learner(m["spec"]["model"]))
    clock.now += 6
    r.set(keys.health, health_summary(clock.now, stable={"accuracy": 0.90, "window": 500},
                                      quality={"served": (rev, 6), "lastGood": (rev, 6),
                                               "latest": (rev, 9, 0.0, 0.03, 500)}))  # fmt: skip
    st = turn(restarted, body)
    assert st is not None and st["servedVersion"] == 9 and not st["pinned"]
    assert ModelStore(r, "test", "fraud").pointers(rev).served == 9
    assert (_events(events, "RolledBack"), _events(events, "Unpinned")) == (1, 1)


def test_an_operator_that_stops_after_the_promoting_turn_promotes_once(setup, r) -> None:
    rec, kube, clock, events, mem = setup
    m = manifest("fraud", rollout={"steps": [{"setWeight": 50}, {"pause": {}}]})
    turn(setup, as_applied(m))
    m2 = copy.deepcopy(m)
    m2["spec"]["model"]["params"] = {"optimizer": "adagrad"}
    new = parse(m2).revision
    turn(setup, as_applied(m2, generation=2))
    written = copy.deepcopy(mem.status)
    template = copy.deepcopy(kube.objects[("Deployment", f"fraud-learner-{new}")]["spec"])
    promote = as_applied(m2, generation=2)
    promote["metadata"]["annotations"] = {"tideline.dev/promote": "true"}
    assert (turn(setup, promote) or {})["stableRevision"] == new  # ... and never written

    again = Reconciler(kube, rec.settings, clock=clock)
    promote["status"] = written  # the annotation is still there
    clock.now += 1
    st = again.turn(promote, ModelMemory(), kube.children(),
                    lambda t, reason, msg: events.append((t, reason, msg)))  # fmt: skip
    assert st is not None and st["stableRevision"] == new and st.get("canaryRevision") is None
    assert _events(events, "Promoted") == 1
    learner = kube.objects[("Deployment", f"fraud-learner-{new}")]["spec"]
    assert learner == template, "the promoted learner keeps its arguments"


def test_a_store_restarted_empty_is_noticed_and_what_can_be_is_restored(setup, r) -> None:
    rec, kube, clock, events, mem = setup
    m = manifest("fraud", rollout=CANARY_ROLLOUT)
    rev = parse(m).revision
    keys = Keys("test", "fraud")
    store = ModelStore(r, "test", "fraud")
    _publish(r, m, rev, 7)
    store.set_pointer(rev, "lastGood", 6)
    body = as_applied(m)
    st = turn(setup, body)
    assert st is not None and r.get(keys.epoch).decode() == st["storeEpoch"]
    token = st["storeEpoch"]
    assert r.hget(keys.control(rev), "start") is None, "a revision with pointers needs no word"
    held = {v: r.get(keys.version(rev, v)) for v in (6, 7)}  # what the servers hold

    r.flushall()  # Redis restarted without persistence
    clock.now += 1
    st = turn(setup, body)
    assert st is not None and st["phase"] == "Degraded"
    [cond] = [c for c in st["conditions"] if c["type"] == "StoreReset"]
    assert (cond["status"], cond["reason"]) == ("True", "StoreReset")
    assert cond["message"].startswith("the store lost keys (the epoch token is gone): "
                                      "latest v7 -> none, served v7 -> none, lastGood v6 gone")  # fmt: skip
    assert r.get(keys.epoch).decode() == st["storeEpoch"] != token, "a new token, kept"
    assert r.hget(keys.control(rev), "start") == b"after:7", "the learner numbers on after v7"
    clock.now += 1
    turn(setup, body)
    assert _events(events, "StoreReset") == 1, "once per reset"

    # a server puts back the versions it held (tideline.store.restore)
    for v, blob in held.items():
        store.restore(rev, v, blob, {}, {"served": 7, "latest": 7} if v == 7 else {})
    clock.now += 1
    st = turn(setup, body)
    assert st is not None and st["phase"] == "Healthy" and st["lastGoodVersion"] == 6
    assert store.pointers(rev).lastGood == 6, "lastGood restored from the status"
    [cond] = [c for c in st["conditions"] if c["type"] == "StoreReset"]
    assert (cond["status"], cond["reason"]) == ("False", "Recovered")
    assert r.hget(keys.control(rev), "start") is None, "the word goes once pointers are back"
    assert _events(events, "Proven") == 0 and _events(events, "StoreRecovered") == 1


def test_a_pointers_hash_evicted_alone_is_a_store_reset_and_last_good_comes_back(setup, r) -> None:
    """allkeys-lru evicted the pointers hash (not the token, not the versions): noticed, and
    no "v6 is the first version proven" - lastGood comes back from the status at once."""
    rec, kube, clock, events, _ = setup
    m = manifest("fraud", rollout=CANARY_ROLLOUT)
    rev = parse(m).revision
    keys = Keys("test", "fraud")
    _publish(r, m, rev, 7)
    ModelStore(r, "test", "fraud").set_pointer(rev, "lastGood", 6)
    body = as_applied(m)
    turn(setup, body)
    r.delete(keys.pointers(rev))
    clock.now += 1
    st = turn(setup, body)
    assert st is not None and st["phase"] == "Degraded" and st["lastGoodVersion"] == 6
    assert "(latest went back from v7 to none)" in st["storeReset"]["message"]
    assert ModelStore(r, "test", "fraud").pointers(rev).lastGood == 6
    assert r.hget(keys.control(rev), "start") == b"after:7"
    # the learner publishes v8 (after v7, as told): served again, the reset is over
    ModelStore(r, "test", "fraud").publish(rev, 8, make_learner(m["spec"]["model"]))
    clock.now += 1
    st = turn(setup, body)
    assert st is not None and st["phase"] == "Healthy" and st["servedVersion"] == 8
    assert (_events(events, "StoreReset"), _events(events, "Proven")) == (1, 0)


def _durable(st: dict | None) -> tuple[str, str]:
    [c] = [c for c in (st or {}).get("conditions", []) if c["type"] == "StoreDurable"]
    return c["status"], c["reason"]


def test_redis_settings_are_read_once_a_resync_and_warned_of_in_a_condition(setup, r) -> None:
    rec, kube, clock, events, mem = setup
    body = as_applied(manifest("fraud", rollout=CANARY_ROLLOUT))
    st = turn(setup, body)
    assert _durable(st) == ("False", "NotPersistent"), "the test server saves nothing"
    assert st is not None and st["phase"] != "Degraded", "a warning, not Degraded"
    try:
        r.config_set("maxmemory-policy", "allkeys-lru")
        clock.now += 1
        assert _durable(mem.status) == ("False", "NotPersistent"), "not read every turn"
        turn(setup, body)
        assert _durable(mem.status) == ("False", "NotPersistent")
        clock.now += rec.resync
        assert _durable(turn(setup, body)) == ("False", "EvictionPolicy")
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("save", "3600 1")
        clock.now += rec.resync
        assert _durable(turn(setup, body)) == ("True", "Durable")
    finally:
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("save", "")


def test_a_redis_that_refuses_config_leaves_durability_unknown_without_an_error(r) -> None:
    port = r.connection_pool.connection_kwargs["port"]
    r.execute_command("ACL", "SETUSER", "managed", "on", ">pw", "~*", "&*", "+@all", "-config")
    try:
        kube, clock = FakeKube(), Clock()
        url = f"redis://managed:pw@127.0.0.1:{port}/0"
        rec = Reconciler(kube, OperatorConfig(image="img:1", redis_url=url), clock=clock)  # type: ignore[arg-type]
        events: list = []
        st = turn((rec, kube, clock, events, ModelMemory()), as_applied(manifest("fraud")))
        assert _durable(st) == ("Unknown", "ConfigNotReadable")
        assert [why for _, why, _ in events] == ["Deployed"]
    finally:
        r.execute_command("ACL", "DELUSER", "managed")


def test_a_canary_whose_servers_fail_is_aborted_on_errors(setup, r) -> None:
    """The monitor windows the servers' counters, the analysis judges the canary's errors before
    any label (it answers nothing to label), and failureLimit failures abort it."""
    from tideline.pods.monitor import Monitor

    rec, kube, clock, events, _ = setup
    rollout = {"steps": [{"setWeight": 20}, {"pause": "10m"}],
               "analysis": {"interval": "5s", "minSamples": 100, "failureLimit": 2}}  # fmt: skip
    m = manifest("fraud", rollout=rollout)
    turn(setup, as_applied(m))
    m2 = copy.deepcopy(m)
    m2["spec"]["model"]["params"] = {"optimizer": "adagrad"}
    new = parse(m2).revision
    st = turn(setup, as_applied(m2, generation=2))
    assert st is not None and st["canaryRevision"] == new
    mon = Monitor(parse(m), r, clock=clock)
    keys = Keys("test", "fraud")

    def report(stable: int, canary: int) -> None:
        """One server's totals: every stable answer fine, every canary answer a 5xx."""
        tracks = {"stable": {"requests": stable, "errors": 0},
                  "canary": {"requests": canary, "errors": canary}}  # fmt: skip
        r.hset(keys.servers, "server-a", orjson.dumps({"ts": clock.now, "tracks": tracks}))

    report(10_000, 0)  # what the server counted before the monitor started: not the window's
    mon.write()
    aborted = None
    for i in range(1, 5):
        clock.now += 5
        report(10_000 + 800 * i, 200 * i)
        mon.write()
        st = turn(setup, as_applied(m2, generation=2)) or st
        if st.get("aborted"):
            aborted = i
            break
    assert aborted == 2, f"aborted after {aborted} analyses, failureLimit is 2: {st}"
    assert "errorRate" in st["aborted"]["reason"] and st["phase"] == "Degraded"
    assert [reason for _, reason, _ in events].count("RolloutAborted") == 1
    assert st["stableRevision"] != new and r.hget(keys.routing, "weight") == b"0"


def test_a_redis_that_refuses_writes_for_want_of_memory_is_named_in_an_event(setup, r) -> None:
    """A full Redis under noeviction refuses labels and stops the learner and the monitor: the
    model says so (StoreFull, Degraded) instead of going quiet, and says when it is over."""
    from tideline_operator import reconcile

    rec, kube, clock, events, _ = setup
    body = as_applied(manifest("fraud", rollout=CANARY_ROLLOUT))
    turn(setup, body)
    clock.now += 5
    turn(setup, body)
    assert "StoreFull" not in [reason for _, reason, _ in events]
    used = int(r.info("memory")["used_memory"])
    policy = r.config_get("maxmemory-policy")["maxmemory-policy"]
    try:
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", str(used + 64 * 1024))
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            r.set("a label that does not fit", b"x" * (1 << 20))
        clock.now += reconcile.FULL_READ
        st = turn(setup, body)
        assert st is not None and st["phase"] == "Degraded", st
        full = next(c for c in st["conditions"] if c["type"] == "StoreFull")
        assert (full["status"], full["reason"]) == ("True", "OutOfMemory")
        assert "refuses writes for want of memory" in full["message"], full
        assert [reason for _, reason, _ in events].count("StoreFull") == 1
    finally:
        r.config_set("maxmemory", "0")
        r.config_set("maxmemory-policy", policy)
    clock.now += reconcile.FULL_HOLD + reconcile.FULL_READ
    st = turn(setup, body)
    assert st is not None and st["phase"] == "Healthy", st
    full = next(c for c in st["conditions"] if c["type"] == "StoreFull")
    assert (full["status"], full["reason"]) == ("False", "Accepting")
    assert [reason for _, reason, _ in events].count("StoreAccepting") == 1


def test_a_model_its_pods_cannot_load_is_a_condition_an_event_and_for_a_canary_an_abort(
    setup, r
) -> None:
    """The pods write what they cannot load (tideline.pods.faults); a turn reads it: the
    stable revision Degraded with ModelLoaded False until the fault goes, a canary aborted."""
    from tideline.algorithms.external import ModelLoadError
    from tideline.pods import faults

    rec, kube, clock, events, _ = setup
    m = manifest("fraud", rollout=CANARY_ROLLOUT)
    rev = parse(m).revision
    keys = Keys("test", "fraud")
    turn(setup, as_applied(m))
    _publish(r, m, rev, 1)
    error = ModelLoadError("ImportFailed", "ModuleNotFoundError: No module named 'teams'")
    faults.report(r, keys, faults.fault_of(error, "monitor", rev, clock.now))
    clock.now += 1
    st = turn(setup, as_applied(m))
    assert st is not None and st["phase"] == "Degraded"
    loaded = next(c for c in st["conditions"] if c["type"] == "ModelLoaded")
    said = f"monitor of revision {rev}: ModuleNotFoundError: No module named 'teams'"
    assert (loaded["status"], loaded["reason"], loaded["message"]) == (
        "False",
        "ImportFailed",
        said,
    )
    assert ("Warning", "ImportFailed", said) in events
    faults.clear(r, keys, rev, "monitor")  # the monitor started again, and loaded it
    clock.now += 1
    st = turn(setup, as_applied(m))
    assert st is not None and st["phase"] == "Healthy"
    loaded = next(c for c in st["conditions"] if c["type"] == "ModelLoaded")
    assert (loaded["status"], loaded["reason"]) == ("True", "Loaded")

    m2 = copy.deepcopy(m)
    m2["spec"]["model"]["params"] = {"optimizer": "adagrad"}
    new = parse(m2).revision
    st = turn(setup, as_applied(m2, generation=2))
    assert st is not None and st["canaryRevision"] == new
    faults.report(r, keys, faults.fault_of(error, "learner", new, clock.now))
    clock.now += 1
    st = turn(setup, as_applied(m2, generation=2))
    assert st is not None and st["aborted"]["revision"] == new and st["phase"] == "Degraded"
    assert (
        "the model cannot be loaded (ImportFailed): learner of revision"
        in (st["aborted"]["reason"])
    )
    assert ("Deployment", f"fraud-learner-{new}") in kube.deleted
    assert r.hget(keys.routing, "weight") == b"0" and st["stableRevision"] == rev


def _signer(kube: FakeKube) -> Signer:
    secret = kube.objects[("Secret", "fraud-tideline-signing")]
    return Signer(base64.b64decode(secret["data"]["key"]), "test/fraud")


def _unreachable_once(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Redis refuses the adoption's first sweep (and only it); the calls made."""
    real, calls = reconcile.adopt_unsigned, []

    def adopt(*args: Any, **kw: Any) -> Any:
        calls.append("sweep")
        if len(calls) == 1:
            raise redis.ConnectionError("Error 111 connecting to redis:6379. Connection refused.")
        return real(*args, **kw)

    monkeypatch.setattr(reconcile, "adopt_unsigned", adopt)
    return calls


def test_redis_unreachable_when_the_key_is_made_holds_the_pods_back_until_the_store_is_adopted(
    setup, r, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rec, kube, clock, events, _ = setup
    monkeypatch.delenv(KEY_ENV, raising=False)
    m = manifest("fraud")
    rev = parse(m).revision
    _publish(r, m, rev, 3)  # a model that ran before it had a key
    calls = _unreachable_once(monkeypatch)
    body = as_applied(m)
    caplog.set_level(logging.INFO, logger="tideline.operator")
    turn(setup, body)
    assert kube.created == [("Secret", "fraud-tideline-signing")]
    assert not [k for k in kube.objects if k[0] == "Deployment"], "no pod gets the key yet"
    assert [m for m in caplog.messages if "Redis unavailable (Error 111" in m]
    assert r.get(Keys("test", "fraud").version(rev, 3)).startswith(b"TDL1")
    clock.now += 1
    turn(setup, body)  # Redis is back: the store is adopted, then the pods get the key
    assert calls == ["sweep", "sweep"]
    assert _signer(kube).open(r.get(Keys("test", "fraud").version(rev, 3)), "version")
    assert len([k for k in kube.objects if k[0] == "Deployment"]) == 3


def test_an_operator_restarted_before_the_store_was_adopted_adopts_with_the_key_it_finds(
    setup, r, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, kube, clock, events, mem = setup
    monkeypatch.delenv(KEY_ENV, raising=False)
    m = manifest("fraud")
    rev = parse(m).revision
    _publish(r, m, rev, 3)
    _unreachable_once(monkeypatch)
    body = as_applied(m)
    turn(setup, body)  # the key made, the pods held back; then the operator stops
    assert not [k for k in kube.objects if k[0] == "Deployment"]
    restarted = Reconciler(kube, rec.settings, clock=clock)  # type: ignore[arg-type]
    clock.now += 1
    restarted.turn(body, ModelMemory(), kube.children(), lambda *e: None)
    # no pod read the key it found: the store's blobs are still those from before it
    assert _signer(kube).open(r.get(Keys("test", "fraud").version(rev, 3)), "version")
    assert len([k for k in kube.objects if k[0] == "Deployment"]) == 3
    assert kube.created == [("Secret", "fraud-tideline-signing")], "the key is the one made"
