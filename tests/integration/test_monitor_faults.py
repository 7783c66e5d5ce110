"""The monitor when things go wrong (issue 30): a store that fails every turn, padded bodies
in the log, Redis full - against a real redis-server."""

from __future__ import annotations

import os
import threading
import time

import orjson
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.helpers import FRAUD_FEATURES, LoggedRequest, manifest
from tideline import health, predlog
from tideline.algorithms import make_learner
from tideline.contracts import Keys
from tideline.demo.embedded import free_port
from tideline.demo.simulate import SyntheticStream
from tideline.pods.liveness import Liveness
from tideline.pods.monitor import Monitor
from tideline.spec import parse
from tideline.store import ModelStore

pytestmark = pytest.mark.integration


def _model(**spec):
    spec.setdefault("rollout", {"analysis": {"interval": "100ms"}})
    return parse(manifest(name="fraud", **spec))


def _running(mon: Monitor, stop: threading.Event) -> tuple[threading.Thread, list[bool]]:
    """``mon.run(stop)`` in a thread; its return value lands in the list."""
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(mon.run(stop)), daemon=True)
    t.start()
    return t, result


def _step_errors(mon: Monitor) -> float:
    return mon.metrics.step_errors._value.get()  # type: ignore[attr-defined,no-any-return]


# -- no quiet death -------------------------------------------------------------------------
def test_a_monitor_whose_store_refuses_every_connection_stops_after_max_failures_turns() -> None:
    # a port nothing listens on, and no retries inside the client: each turn fails at once
    client = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0), socket_timeout=1)
    live = Liveness(max_failures=3)
    mon = Monitor(_model(), client, liveness=live)
    stop = threading.Event()
    t, result = _running(mon, stop)
    t.join(20)
    stop.set()  # (if it did not stop on its own, the asserts below say so)
    assert result == [False], "the monitor went on after every turn failed"
    assert live.failures == 3 and _step_errors(mon) == 3
    assert "ConnectionError" in live.check()[1]


def test_a_failing_health_write_is_a_failed_turn_and_stops_the_monitor(r) -> None:
    model = _model()
    mon = Monitor(model, r, liveness=Liveness(max_failures=3))
    mon.start()
    # reads answer, the health write is refused: the summary never reaches the operator
    refuse = redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")

    def refused(*_: object, **__: object) -> None:
        raise refuse

    mon.write = refused  # type: ignore[method-assign,assignment]
    t, result = _running(mon, threading.Event())
    t.join(20)
    assert result == [False] and mon.liveness.failures == 3
    assert r.get(Keys(model.namespace, model.name).health) is None


def test_a_monitor_that_works_stays_alive_and_a_poison_turn_costs_only_that_turn(r) -> None:
    model = _model()
    live = Liveness(max_failures=3)
    mon = Monitor(model, r, liveness=live)
    mon.start()
    step, turns = mon.step, [0]

    def every_other_turn_poisoned(block_ms: int = 200) -> None:
        turns[0] += 1
        if turns[0] % 2:
            raise ValueError("an entry no code path expected")
        step(block_ms=20)

    mon.step = every_other_turn_poisoned  # type: ignore[method-assign]
    stop = threading.Event()
    t, result = _running(mon, stop)
    deadline = time.monotonic() + 20
    while turns[0] < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    t.join(10)
    assert result == [True], "a monitor whose failures never came three in a row stopped"
    assert turns[0] >= 12 and _step_errors(mon) >= 6
    assert live.check()[0] and live.failures <= 1
    written = orjson.loads(r.get(Keys(model.namespace, model.name).health))
    assert written["ts"] > time.time() - 10  # it went on writing health between the poisons


# -- a version just served is judged at once ----------------------------------------------------
def test_a_version_served_after_a_write_is_judged_at_once_not_an_interval_later(r) -> None:
    # an interval far longer than the test: only the new version can make it write
    model = _model(rollout={"analysis": {"interval": "60s", "minSamples": 200}})
    keys = Keys(model.namespace, model.name)
    stream = SyntheticStream(FRAUD_FEATURES, "binary", seed=1)
    rows, y = stream.take(3000)
    store = ModelStore(r, model.namespace, model.name)
    for version, labels in ((1, y), (2, 1.0 - y)):  # v2 learned every label flipped (poisoned)
        learner = make_learner(model.spec.model.to_dict())
        learner.learn_many(learner.schema.encode(rows), labels)
        store.publish(model.revision, version, learner)
    for pointer in ("served", "lastGood", "latest"):
        store.set_pointer(model.revision, pointer, 1)
    mon = Monitor(model, r)
    mon.list_logs_every = 0.0
    mon.start()
    test_rows, test_y = stream.take(1000)
    ids = [f"q{i}" for i in range(1000)]
    LoggedRequest(test_rows, ids=ids, scores=[0.5] * 1000, revision=model.revision, version=1
                  ).write(r, keys)  # fmt: skip
    pipe = r.pipeline()
    for i, label in zip(ids, test_y.tolist(), strict=True):
        pipe.xadd(keys.feedback, {"data": orjson.dumps({"id": i, "label": label})})
    pipe.execute()
    for _ in range(3):
        mon.step(block_ms=20)
    first = health.decode(r.get(keys.health))
    assert first is not None and first.quality is not None and first.quality.window == 1000
    time.sleep(0.3)
    for _ in range(3):  # the same versions: nothing to write before the interval
        mon.step(block_ms=20)
    unchanged = health.decode(r.get(keys.health))
    assert unchanged is not None and unchanged.ts == first.ts
    store.set_pointer(model.revision, "served", 2)  # the learner published a poisoned version
    store.set_pointer(model.revision, "latest", 2)
    time.sleep(0.3)
    mon.step(block_ms=20)
    judged = health.decode(r.get(keys.health))
    assert judged is not None and judged.ts > first.ts and judged.quality is not None
    served, good = judged.quality.get("served"), judged.quality.get("lastGood")
    assert served is not None and served.version == 2
    assert good is not None and good.vs_served is not None and good.vs_served.lower > 0.2


def test_the_served_version_is_shown_as_soon_as_it_was_served_on_min_samples_labels(r) -> None:
    # what a proof waits for: shown at once, not an interval later (by then a learner
    # publishing every few seconds serves another version, and none is ever proven)
    model = _model(rollout={"analysis": {"interval": "60s", "minSamples": 200}})
    keys = Keys(model.namespace, model.name)
    stream = SyntheticStream(FRAUD_FEATURES, "binary", seed=1)
    rows, y = stream.take(3000)
    learner = make_learner(model.spec.model.to_dict())
    learner.learn_many(learner.schema.encode(rows), y)
    store = ModelStore(r, model.namespace, model.name)
    store.publish(model.revision, 1, learner)
    store.set_pointer(model.revision, "served", 1)
    mon = Monitor(model, r)
    mon.list_logs_every = 0.0
    mon.start()
    mon.step(block_ms=20)
    first = health.decode(r.get(keys.health))
    assert first is not None and first.quality is not None
    assert (served := first.quality.get("served")) is not None and served.served_labelled == 0
    test_rows, test_y = stream.take(300)
    ids = [f"q{i}" for i in range(300)]
    LoggedRequest(test_rows, ids=ids, scores=[0.5] * 300, revision=model.revision, version=1
                  ).write(r, keys)  # fmt: skip
    for n in (150, 300):  # fewer than minSamples labels first: nothing to show yet
        pipe = r.pipeline()
        for i in range(n - 150, n):
            pipe.xadd(
                keys.feedback, {"data": orjson.dumps({"id": ids[i], "label": float(test_y[i])})}
            )
        pipe.execute()
        for _ in range(3):
            mon.step(block_ms=20)
        written = health.decode(r.get(keys.health))
        assert written is not None and written.quality is not None
        if n == 150:
            assert written.ts == first.ts
    assert written.ts > first.ts
    assert (served := written.quality.get("served")) is not None and served.served_labelled == 300
    for _ in range(3):  # shown once: not again at every turn
        mon.step(block_ms=20)
    again = health.decode(r.get(keys.health))
    assert again is not None and again.ts == written.ts


# -- the log's size, measured -----------------------------------------------------------------
def _log_requests(r: redis.Redis, keys: Keys, instance: str, n: int, pad: int = 0) -> None:
    """``n`` requests of 8 rows, each in its own entry of one server's log, their bodies
    padded with ``pad`` bytes of whitespace (JSON still: a server logs the body as it came)."""
    rows, _ = SyntheticStream(FRAUD_FEATURES, "binary", seed=5).take(8)
    body = orjson.dumps({"instances": rows}) + b" " * pad
    scores = orjson.dumps([0.5] * 8)
    pipe = r.pipeline(transaction=False)
    for _ in range(n):
        secret = os.urandom(predlog.SECRET_HEX // 2).hex()
        meta = predlog.Meta(secret=secret, track="stable", models={"stable": ("rev", 0)})
        pipe.xadd(keys.log(instance), predlog.encode([meta], [scores], [body]))
    pipe.zadd(keys.logs, {instance: time.time()})
    pipe.execute()


def test_the_log_s_bytes_are_measured_exactly_when_padded_bodies_follow_small_ones(r) -> None:
    model = _model()
    keys = Keys(model.namespace, model.name)
    mon = Monitor(model, r)
    mon.list_logs_every = 0.0
    mon.start()
    instance = os.urandom(predlog.INSTANCE_HEX // 2).hex()
    # small requests first, then a few padded to 256 KB: Redis's own sampling of a stream
    # (its first five nodes, times the node count) sees only the small ones
    _log_requests(r, keys, instance, 2000)
    _log_requests(r, keys, instance, 40, pad=256 << 10)
    for _ in range(20):
        mon.step(block_ms=5)
    cap = mon.write().log
    assert cap is not None and cap.bytes_per_prediction is not None
    exact = r.memory_usage(keys.log(instance), samples=0)
    sampled = r.memory_usage(keys.log(instance))
    assert exact > 10 << 20 and sampled < exact / 2  # (the test tells the two apart)
    assert cap.held == pytest.approx(exact, rel=0.2)
    assert cap.bytes_per_prediction == pytest.approx(exact / (2040 * 8), rel=0.2)


def test_a_full_redis_refuses_the_health_write_and_the_last_measurement_survives(r) -> None:
    model = _model()
    keys = Keys(model.namespace, model.name)
    mon = Monitor(model, r, liveness=Liveness(max_failures=1000))
    mon.list_logs_every = 0.0
    mon.start()
    _log_requests(r, keys, os.urandom(predlog.INSTANCE_HEX // 2).hex(), 500)
    for _ in range(5):
        mon.step(block_ms=5)
    measured = mon.write().log
    assert measured is not None and measured.bytes_per_prediction is not None
    limit, policy = r.config_get("maxmemory")["maxmemory"], r.config_get("maxmemory-policy")
    try:
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", max(1, r.info("memory")["used_memory"] - (1 << 20)))
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            mon.write()
        stop = threading.Event()
        t, result = _running(mon, stop)
        deadline = time.monotonic() + 20
        while mon.liveness.failures < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        t.join(10)
        assert result == [True] and mon.liveness.failures >= 3  # every turn failed (the write)
        kept = mon.summary().log
        assert kept is not None and kept.bytes_per_prediction == measured.bytes_per_prediction
        assert kept.need is not None and kept.limit is not None
    finally:
        r.config_set("maxmemory", limit)
        r.config_set("maxmemory-policy", policy["maxmemory-policy"])
    # Redis has room again: the next write carries the measurement to the operator
    written = mon.write()
    assert written.log is not None and written.log.bytes_per_prediction is not None
