"""The monitor against a real redis-server: quality per track, drift, health, and no stolen entries."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from tests.helpers import (
    FRAUD_FEATURES,
    LoggedRequest,
    manifest,
    monitor_for,
    push_samples,
    summary_of,
)
from tideline import health as health_summary
from tideline.algorithms import make_learner
from tideline.contracts import Keys
from tideline.demo.simulate import SyntheticStream
from tideline.pods.learner import LearnerProcess
from tideline.pods.monitor import Monitor
from tideline.spec import parse
from tideline.store import ModelStore, Reference

pytestmark = pytest.mark.integration


def _model(**spec):
    spec.setdefault("rollout", {"analysis": {"interval": "100ms"}})
    return parse(manifest(name="fraud", **spec))


def _trained(model, rows, y):
    m = make_learner(model.spec.model.to_dict())
    m.learn_many(m.schema.encode(rows), y)
    return m


def _log(r, model, track, revision, version, ids, rows, scores):
    """A request of len(ids) rows, logged as a server logs it (with the client's own ids)."""
    scores = [float(x) for x in scores]
    LoggedRequest(rows, ids=ids, scores=scores, track=track, revision=revision, version=version
                  ).write(r, keys(model))  # fmt: skip


def keys(model) -> Keys:
    return Keys(model.namespace, model.name)


def test_learner_only_models_are_watched_from_labelled_samples(r) -> None:
    model = _model()
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=1).take(3000)
    ModelStore(r, "test", "fraud").publish(model.revision, 0, _trained(model, rows, y))
    mon = monitor_for(model, r)
    mon.start()
    test_rows, test_y = SyntheticStream(FRAUD_FEATURES, "binary", seed=1).take(1000)
    push_samples(r, keys(model).samples, test_rows, test_y)
    for _ in range(5):
        mon.step(block_ms=50)
    health = summary_of(mon)
    stable = health["tracks"]["stable"]
    assert stable["labelled"] == 1000 and stable["version"] == 0
    served, _ = ModelStore(r, "test", "fraud").load(model.revision, 0)
    expected = np.mean((served.predict_many(served.schema.encode(test_rows)) >= 0.5) == test_y)
    assert stable["accuracy"] == pytest.approx(expected)
    assert orjson.loads(r.get(keys(model).health))["tracks"]["stable"]["labelled"] == 1000


def test_feedback_gives_each_track_its_own_accuracy(r) -> None:
    model = _model()
    mon = monitor_for(model, r)
    mon.start()
    k = keys(model)
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.5).astype(float)
    # the stable track is right 90 % of the time, the canary 60 %
    for track, right in (("stable", 0.9), ("canary", 0.6)):
        ids = [f"{track}-{i}" for i in range(400)]
        good = rng.random(400) < right
        scores = np.where(good, labels, 1 - labels) * 0.8 + 0.1
        _log(r, model, track, model.revision if track == "stable" else "canaryrev", 0, ids,
             [{"amount": 1.0}] * 400, scores.tolist())  # fmt: skip
        pipe = r.pipeline()
        for i, label in zip(ids, labels.tolist(), strict=True):
            pipe.xadd(k.feedback, {"data": orjson.dumps({"id": i, "label": label})})
        pipe.execute()
    for _ in range(5):
        mon.step(block_ms=50)
    h = summary_of(mon)
    assert h["tracks"]["stable"]["labelled"] == 400 and h["tracks"]["canary"]["labelled"] == 400
    assert h["tracks"]["stable"]["accuracy"] > 0.85 and h["tracks"]["canary"]["accuracy"] < 0.7
    assert "canaryrev:0" in h["versions"]
    assert h["labelLag"]["p50"] >= 0


def test_concept_drift_is_flagged_when_the_errors_rise(r) -> None:
    # the flag holds for 10 analysis intervals: 20 s, longer than this test on a busy machine
    model = _model(rollout={"analysis": {"interval": "2s"}})
    mon = monitor_for(model, r)
    mon.start()
    before = []
    _errors_then(r, model, mon, 0.1, 0.4,
                 at_half=lambda: before.append(summary_of(mon)["drift"]["concept"]["detected"]))  # fmt: skip
    assert before == [False]
    h = summary_of(mon)
    assert h["drift"]["concept"]["detected"] is True
    assert h["drift"]["concept"]["last"]["version"] == 0
    kinds = [orjson.loads(e[1][b"data"])["kind"] for e in r.xrange(keys(model).driftlog)]
    assert "concept" in kinds


def _errors_then(r, model, mon, before: float, after: float, n: int = 8000, at_half=None) -> None:
    """Log n stable predictions wrong at rate ``before`` then ``after``, with their labels;
    ``at_half()`` is called once the first half is in."""
    k = keys(model)
    rng = np.random.default_rng(3)
    labels = (rng.random(n) < 0.5).astype(float)
    wrong = np.concatenate([rng.random(n // 2) < before, rng.random(n // 2) < after])
    scores = np.where(wrong, 1 - labels, labels) * 0.8 + 0.1
    ids = [f"p{i}" for i in range(n)]
    for i in range(0, n, 500):
        _log(r, model, "stable", model.revision, 0, ids[i : i + 500], [{"amount": 1.0}] * 500,
             scores[i : i + 500].tolist())  # fmt: skip
        pipe = r.pipeline()
        for j in range(i, i + 500):
            pipe.xadd(k.feedback, {"data": orjson.dumps({"id": ids[j], "label": float(labels[j])})})
        pipe.execute()
        mon.step(block_ms=20)
        if at_half is not None and i == n // 2 - 500:
            at_half()


def test_concept_drift_is_one_event_when_it_starts_and_one_when_it_clears(r) -> None:
    now = [1000.0]
    model = _model(rollout={"analysis": {"interval": "2s"}})
    mon = monitor_for(model, r, clock=lambda: now[0])
    mon.start()
    _errors_then(r, model, mon, 0.1, 0.4)
    assert summary_of(mon)["drift"]["concept"]["detected"] is True
    now[0] += 5.0  # still within 10 intervals of the last firing
    assert summary_of(mon)["drift"]["concept"]["detected"] is True
    now[0] += 20.0
    assert summary_of(mon)["drift"]["concept"]["detected"] is False
    log = [orjson.loads(e[1][b"data"]) for e in r.xrange(keys(model).driftlog)]
    assert [(e["kind"], e["state"]) for e in log] == [
        ("concept", "detected"),
        ("concept", "cleared"),
    ]
    assert mon.metrics.drift_events.labels(kind="concept").metrics[0]._value.get() == 1


def test_a_model_whose_error_falls_is_no_concept_drift(r) -> None:
    model = _model(rollout={"analysis": {"interval": "2s"}})
    mon = monitor_for(model, r)
    mon.start()
    _errors_then(r, model, mon, 0.4, 0.1)
    assert summary_of(mon)["drift"]["concept"]["detected"] is False
    assert r.xlen(keys(model).driftlog) == 0


def _answered(r, model, wrong: np.ndarray, versions: np.ndarray, start: float) -> dict:
    """Requests of 100 rows, one every 0.25 s from ``start`` (seconds ago), wrong where
    ``wrong`` says, each answered by the version ``versions`` names; their labels by id."""
    now = time.time()
    rng = np.random.default_rng(5)
    labels = (rng.random(len(wrong)) < 0.5).astype(float)
    scores = np.where(wrong, 1 - labels, labels) * 0.8 + 0.1
    ids = [f"p{i}" for i in range(len(wrong))]
    for k, i in enumerate(range(0, len(wrong), 100)):
        LoggedRequest([{"amount": 1.0}] * 100, ts=now - start + 0.25 * k, ids=ids[i : i + 100],
                      scores=scores[i : i + 100].tolist(), revision=model.revision,
                      version=int(versions[i])).write(r, keys(model))  # fmt: skip
    return dict(zip(ids, labels.tolist(), strict=True))


def _send_labels(r, model, mon, labels: dict, ids: list[str]) -> dict:
    """The labels of ``ids``, in that order; the monitor reads them all; its summary."""
    pipe = r.pipeline()
    for i in ids:
        pipe.xadd(keys(model).feedback, {"data": orjson.dumps({"id": i, "label": labels[i]})})
    pipe.execute()
    for _ in range(20):
        mon.step(block_ms=20)
        h = summary_of(mon)
        if h["tracks"]["stable"]["labelled"] == len(ids):
            return h
    raise AssertionError(f"{h['tracks']['stable']['labelled']} of {len(ids)} labels read")


@pytest.mark.parametrize(
    ("v0", "v1", "drift"), [(0.5, 0.1, False), (0.1, 0.5, True)], ids=["better", "worse"]
)
def test_the_late_labels_of_an_older_version_are_no_rise_of_the_error(r, v0, v1, drift) -> None:
    # v0 (wrong at rate v0) answered 4,000 rows, then v1 (at rate v1) 4,000; the labels of
    # v0's last 1,000 come after all of v1's (in arrival order: v0, v1, v0 again)
    model = _model(rollout={"analysis": {"interval": "2s"}})
    mon = monitor_for(model, r)
    mon.start()
    rng = np.random.default_rng(4)
    wrong = np.concatenate([rng.random(4000) < v0, rng.random(4000) < v1])
    labels = _answered(r, model, wrong, np.repeat([0, 1], 4000), start=30)
    ids = list(labels)
    h = _send_labels(r, model, mon, labels, ids[:3000] + ids[4000:] + ids[3000:4000])
    concept = h["drift"]["concept"]
    assert concept["detected"] is drift, concept
    if drift:
        assert concept["last"]["version"] == 1


def test_a_rise_of_the_error_is_found_when_its_labels_come_out_of_order(r) -> None:
    model = _model(rollout={"analysis": {"interval": "2s"}})
    mon = monitor_for(model, r)
    mon.start()
    rng = np.random.default_rng(6)
    wrong = np.concatenate([rng.random(4000) < 0.1, rng.random(4000) < 0.4])
    labels = _answered(r, model, wrong, np.zeros(8000, dtype=int), start=30)
    ids = list(labels)
    # each label 0 to 5 s after its prediction (20 requests): arrival order is that time
    arrival = np.arange(8000) // 100 * 0.25 + rng.uniform(0, 5, 8000)
    h = _send_labels(r, model, mon, labels, [ids[i] for i in np.argsort(arrival)])
    assert h["drift"]["concept"]["detected"] is True


def _versions(r, model):
    """v1 learned the truth, v2 learned it with every label flipped (a poisoned update);
    the stream they learned from goes on (the same concept)."""
    stream = SyntheticStream(FRAUD_FEATURES, "binary", seed=1)
    rows, y = stream.take(3000)
    store = ModelStore(r, model.namespace, model.name)
    store.publish(model.revision, 1, _trained(model, rows, y))
    store.publish(model.revision, 2, _trained(model, rows, 1.0 - y))
    store.set_pointer(model.revision, "lastGood", 1)
    return store, stream


def test_versions_are_compared_on_the_same_feedback_labels(r) -> None:
    model = _model(rollout={"analysis": {"interval": "100ms", "minSamples": 200}})
    store, stream = _versions(r, model)
    served, _ = store.load(model.revision, 2)
    mon = monitor_for(model, r)
    mon.start()
    test_rows, test_y = stream.take(1500)
    ids = [f"q{i}" for i in range(1500)]
    scores = served.predict_many(served.schema.encode(test_rows)).tolist()
    _log(r, model, "stable", model.revision, 2, ids, test_rows, scores)
    pipe = r.pipeline()
    for i, label in zip(ids, test_y.tolist(), strict=True):
        pipe.xadd(keys(model).feedback, {"data": orjson.dumps({"id": i, "label": label})})
    pipe.execute()
    mon.step(block_ms=50)
    mon.write()  # loads the candidates: served v2, lastGood v1, the best constant
    # a producer gone wrong teaches flipped labels through samples: they do not judge versions
    push_samples(r, keys(model).samples, test_rows[:500], 1.0 - test_y[:500])
    mon.step(block_ms=50)
    written = summary_of(mon)
    q = written["quality"]
    assert q["window"] == 1500 and q["source"] == "feedback"
    assert written["tracks"]["stable"]["labelled"] == 1500, "the flipped samples judge nothing"
    c = q["candidates"]
    assert (c["served"]["version"], c["lastGood"]["version"]) == (2, 1)
    # its feedback; the samples beside it are training data
    assert c["served"]["servedLabelled"] == 1500
    good = c["lastGood"]["vsServed"]
    # the same 1500 samples, both versions scored on them; lastGood surely better
    assert good["samples"] == 1500 and good["lower"] > 0.2
    v1, _ = store.load(model.revision, 1)
    acc1 = np.mean((v1.predict_many(v1.schema.encode(test_rows)) >= 0.5) == test_y)
    acc2 = np.mean((np.array(scores) >= 0.5) == test_y)
    assert c["lastGood"]["accuracy"] == pytest.approx(acc1)
    assert good["difference"] == pytest.approx(acc1 - acc2)
    assert c["constant"]["vsServed"]["samples"] == 1500


def test_a_learner_only_model_is_judged_on_its_labelled_samples(r) -> None:
    model = _model(rollout={"analysis": {"interval": "100ms", "minSamples": 200}})
    _, stream = _versions(r, model)
    mon = monitor_for(model, r)
    mon.start()
    mon.write()
    test_rows, test_y = stream.take(800)
    push_samples(r, keys(model).samples, test_rows, test_y)
    mon.step(block_ms=50)
    q = summary_of(mon)["quality"]
    assert q["window"] == 800 and q["source"] == "samples"
    assert q["candidates"]["lastGood"]["vsServed"]["lower"] > 0.2


def test_feature_drift_names_the_feature(r) -> None:
    model = _model(drift={"features": {"method": "psi", "window": 1000}})
    mon = monitor_for(model, r)
    mon.start()
    rng = np.random.default_rng(5)
    for i in range(8):
        shift = 2.0 if i >= 4 else 0.0
        rows = [
            {"amount": float(a + shift), "hour": float(h)} for a, h in rng.normal(size=(500, 2))
        ]
        _log(
            r,
            model,
            "stable",
            model.revision,
            0,
            [f"{i}-{j}" for j in range(500)],
            rows,
            [0.5] * 500,
        )
        mon.step(block_ms=10)
    h = summary_of(mon)
    assert h["drift"]["features"]["detected"] == ["amount"]
    assert h["drift"]["features"]["scores"]["hour"] < 0.2


def _log_shifted(r, model, mon, batches: int, shift: float, seed: int, version: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(batches):
        rows = [
            {"amount": float(a + shift), "hour": float(h)} for a, h in rng.normal(size=(250, 2))
        ]
        ids = [f"{seed}-{i}-{j}" for j in range(250)]
        _log(r, model, "stable", model.revision, version, ids, rows, [0.5] * 250)
        mon.step(block_ms=10)


@pytest.mark.parametrize("baseline", [True, False], ids=["baseline reference", "none"])
def test_a_baseline_reference_shows_drift_in_the_first_window(r, baseline: bool) -> None:
    model = _model(drift={"features": {"method": "ks", "threshold": 0.2, "window": 1000}})
    if baseline:
        ref = np.random.default_rng(1).normal(size=(1000, 2))
        ModelStore(r, "test", "fraud").save_reference(
            model.revision, Reference(["amount", "hour"], ref, None, "baseline")
        )
    mon = monitor_for(model, r)
    mon.start()
    mon.write()  # the stable revision, and its reference
    _log_shifted(r, model, mon, batches=6, shift=1.5, seed=2)  # traffic shifted from the start
    h = summary_of(mon)
    # against the baseline the shift shows; without one, the shifted traffic is the reference
    assert h["drift"]["features"]["detected"] == (["amount"] if baseline else [])


def test_the_first_window_is_stored_and_outlives_new_versions(r) -> None:
    model = _model(drift={"features": {"method": "psi", "window": 1000}})
    store = ModelStore(r, "test", "fraud")
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=1).take(500)
    store.publish(model.revision, 0, _trained(model, rows, y))
    mon = monitor_for(model, r)
    mon.start()
    mon.write()
    _log_shifted(r, model, mon, batches=4, shift=0.0, seed=3)
    stored = store.reference(model.revision)
    assert stored is not None and stored.source == "the monitor's first window"
    assert stored.features.shape == (1000, 2)
    # a new served version: prediction and concept detectors restart, the feature reference stays
    store.publish(model.revision, 1, _trained(model, rows, y))
    assert mon._served_model() is not None and mon._served_key == (model.revision, 1)
    np.testing.assert_array_equal(mon.feature_drift.reference, stored.features)
    _log_shifted(r, model, mon, batches=6, shift=2.0, seed=4, version=1)
    assert summary_of(mon)["drift"]["features"]["detected"] == ["amount"]


def test_the_monitor_takes_nothing_from_the_learner(r) -> None:
    model = _model(learning={"maxBatchDelay": "20ms"})
    learner = LearnerProcess(model, r, checkpoint_seconds=0.0)
    learner.start()
    mon = monitor_for(model, r)
    mon.start()
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=2).take(500)
    push_samples(r, keys(model).samples, rows, y)
    for _ in range(5):
        mon.step(block_ms=20)
    deadline = time.monotonic() + 10
    while learner.counters["samples"] < 500:
        assert time.monotonic() < deadline
        learner.step(block_ms=10)
    learner.flush()
    assert learner.counters["samples"] == 500
    assert mon.tracks["stable"].labelled == 500


def test_the_log_s_needs_in_redis_are_measured_and_compared_with_maxmemory(r) -> None:
    """rate x window x bytes per prediction, against what the Redis in use can hold."""
    from tideline_operator.rollout import log_capacity_condition

    model = _model(learning={"labelWindow": "30m"})
    mon = monitor_for(model, r)
    mon.start()
    rows, _ = SyntheticStream(FRAUD_FEATURES, "binary", seed=2).take(64)
    for i in range(80):
        _log(r, model, "stable", model.revision, 0, [f"p{i}-{j}" for j in range(64)], rows,
             [0.5] * 64)  # fmt: skip
    limit = r.config_get("maxmemory")["maxmemory"]
    try:
        r.config_set("maxmemory", r.info("memory")["used_memory"] + (64 << 20))
        mon.step(block_ms=5)
        cap = mon.write().log
        assert cap is not None and cap.limit_source == "maxmemory"
        assert cap.window == 1980.0  # 30 min and a grace of 3 min
        assert 20 < cap.bytes_per_prediction < 400  # an entry of 64 rows of three features
        assert cap.need == pytest.approx(cap.rate * cap.window * cap.bytes_per_prediction, rel=0.01)
        assert cap.rate > 0 and cap.fits is False  # thousands a second for 33 min: no
        ok, reason, message = log_capacity_condition(_decoded(mon))
        assert (ok, reason) == (False, "Insufficient") and "predictions/s x 1,980 s" in message
    finally:
        r.config_set("maxmemory", limit)


def _decoded(mon: Monitor) -> health_summary.Health:
    """The summary as the operator reads it from Redis."""
    h = health_summary.decode(mon.r.get(mon.keys.health))
    assert h is not None
    return h


def test_copies_of_a_label_are_scored_once_across_monitor_restarts(r) -> None:
    """10 copies of one wrong label must not count as 10 labelled predictions (nor after a restart)."""
    model = _model()
    mon = monitor_for(model, r)
    mon.start()
    k = keys(model)
    req = LoggedRequest([{"amount": 1.0}, {"amount": 2.0}], scores=[0.9, 0.9],
                        revision=model.revision).write(r, k)  # fmt: skip
    for _ in range(10):
        r.xadd(k.feedback, {"data": orjson.dumps({"id": req.ids[0], "label": 0.0})})
    for _ in range(3):
        mon.step(block_ms=20)
    assert summary_of(mon)["tracks"]["stable"]["labelled"] == 1
    again = monitor_for(model, r)  # a new monitor process: the marks are in Redis
    again.start()
    for pid in (req.ids[0], req.ids[1]):
        r.xadd(k.feedback, {"data": orjson.dumps({"id": pid, "label": 1.0})})
    for _ in range(3):
        again.step(block_ms=20)
    assert summary_of(again)["tracks"]["stable"]["labelled"] == 1  # only the second row's


def test_a_busy_log_is_read_on_without_waiting_for_labels(r) -> None:
    from tideline.pods.monitor import LOG_READ

    model = _model()
    mon = monitor_for(model, r)
    mon.start()
    waits: list[int] = []
    read = mon.labels.read
    mon.labels.read = lambda count, block_ms: waits.append(block_ms) or read(count, block_ms)
    time.sleep(0.01)  # (the monitor follows the log from after the millisecond it started)
    pipe = r.pipeline(transaction=False)
    for _ in range(LOG_READ + 10):
        LoggedRequest([{"amount": 1.0}], revision=model.revision).write(pipe, keys(model))
    pipe.execute()
    mon.step(block_ms=50)  # a full read: more may be waiting, labels are only looked at
    mon.step(block_ms=50)  # nothing more: labels are waited for
    assert waits == [0, 50]
    assert mon.tracks["stable"].predictions == LOG_READ + 10


@pytest.mark.parametrize("rate", [1.0, 0.1])
def test_drift_reads_the_sample_rate_s_share_of_requests_and_counts_them_all(r, rate) -> None:
    model = _model(drift={"sampleRate": rate})
    mon = monitor_for(model, r)
    mon.start()
    fed: list[int] = []
    mon._feature_drift = lambda X: fed.append(len(X))  # type: ignore[method-assign]
    rows = [{"amount": float(i), "hour": 3.0} for i in range(5)]
    time.sleep(0.01)  # (the monitor follows the log from after the millisecond it started)
    pipe = r.pipeline(transaction=False)
    for _ in range(400):  # 400 requests of 5 rows
        LoggedRequest(rows, revision=model.revision).write(pipe, keys(model))
    pipe.execute()
    deadline = time.monotonic() + 20
    while mon.tracks.get("stable") is None or mon.tracks["stable"].predictions < 2000:
        assert time.monotonic() < deadline
        mon.step(block_ms=10)
    mon.step(block_ms=10)
    assert mon.tracks["stable"].predictions == 2000  # every request counted
    assert sum(fed) % 5 == 0  # whole requests (the detectors take a read's rows at once)
    requests = sum(fed) // 5
    if rate == 1.0:
        assert requests == 400
    else:
        assert 20 <= requests <= 65, requests  # ~40 of 400


def test_drift_reads_a_logged_body_typed_or_row_by_row_to_the_same_values(r) -> None:
    """Objects of numbers are decoded straight to columns; arrays, a value of another type,
    a missing one take the general path: the detectors get the same numbers in order."""
    model = _model()  # numeric features: amount (default 0) and hour (default 12)
    mon = monitor_for(model, r)
    mon.start()
    fed: list[np.ndarray] = []
    mon._feature_drift = lambda X: fed.append(X)  # type: ignore[method-assign]
    time.sleep(0.01)
    typed = [{"amount": 1.0, "hour": 3, "merchant": "m1"}, {"amount": 2.5}]
    odd = [{"amount": True, "hour": "9"}, {"amount": None, "hour": 4.0}]
    req = LoggedRequest(typed, revision=model.revision)
    arrays = LoggedRequest([[7.0, 5.0, "m2"]], revision=model.revision)
    arrays.meta.names = ["amount", "hour", "merchant"]
    pipe = r.pipeline(transaction=False)
    for logged in (req, LoggedRequest(odd, revision=model.revision), arrays):
        logged.write(pipe, keys(model))
    pipe.execute()
    while mon.tracks.get("stable") is None or mon.tracks["stable"].predictions < 5:
        mon.step(block_ms=10)
    rows = np.concatenate(fed)
    got = sorted(map(tuple, rows.tolist()))  # (logs of three servers: read in any order)
    assert got == sorted([(1.0, 3.0), (2.5, 12.0), (1.0, 12.0), (0.0, 4.0), (7.0, 5.0)])
