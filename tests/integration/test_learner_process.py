"""The learner process, in this test process, against a real redis-server."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.helpers import (
    FRAUD_FEATURES,
    LoggedRequest,
    learn_until,
    learned_in_thread,
    manifest,
    on_one_redis_and_a_cluster,
    push_samples,
    wait_until,
)
from tideline.algorithms import make_learner
from tideline.contracts import Pointers
from tideline.demo.simulate import SyntheticStream
from tideline.evaluate import prequential, scores
from tideline.pods.learner import LearnerProcess
from tideline.pods.storage import WarmStartFailed
from tideline.predlog import entry_order
from tideline.spec import SpecError, parse
from tideline.store import ModelStore, Reference, learner_to_blob

pytestmark = pytest.mark.integration


def _proc(r, **spec) -> LearnerProcess:
    spec.setdefault("learning", {"publishEvery": 500, "maxBatchDelay": "20ms"})
    p = LearnerProcess(parse(manifest(**spec)), r, checkpoint_seconds=0.0)
    p.start()
    return p


def _push_samples(r, p: LearnerProcess, n: int, seed: int = 0, drift_at: int | None = None):
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=seed, drift_at=drift_at).take(n)
    push_samples(r, p.keys.samples, rows, y)
    return rows, y


def test_publishes_version_zero_at_start_and_a_cold_v0_is_no_last_good(r) -> None:
    p = _proc(r)
    assert p.store.pointers(p.revision) == Pointers(latest=0, served=0)
    assert p.store.load(p.revision, 0)[0].n_seen == 0


@on_one_redis_and_a_cluster
def test_learns_every_sample_acks_them_and_publishes_versions(r) -> None:
    p = _proc(r)
    rows, y = _push_samples(r, p, 2000)
    learn_until(p, lambda: p.counters["samples"] == 2000)
    assert p.counters["label_sum"] == y.sum()
    assert r.xpending(p.keys.samples, p.group)["pending"] == 0
    assert p.store.pointers(p.revision).latest >= 3  # v0 + one per 500 updates
    # As accurate, test-then-train, as the same learner fed directly (replay aside).
    direct = make_learner(p.spec.model.to_dict())
    expected = scores("binary", prequential(direct, direct.schema.encode(rows), y), y)["accuracy"]
    assert p.training.quality.report()["accuracy"] > expected - 0.02
    assert expected > max(y.mean(), 1 - y.mean())
    status = r.hgetall(p.keys.learner(p.revision))
    assert int(status[b"samples"]) == 2000


@on_one_redis_and_a_cluster
@pytest.mark.parametrize("client_ids", [False, True], ids=["generated ids", "the client's ids"])
def test_feedback_is_joined_with_the_prediction_log_in_any_order(r, client_ids) -> None:
    p = _proc(r)
    k = p.keys
    first = LoggedRequest([{"amount": 5.0}], ids=["p1"] if client_ids else None)
    second = LoggedRequest([{"amount": 1.0}], ids=["p2"] if client_ids else None)
    # label before its prediction is logged (but after it was answered), and the other way round
    first.answered(r, k)
    r.xadd(k.feedback, {"data": orjson.dumps({"id": first.ids[0], "label": 1})})
    for _ in range(3):
        p.step(block_ms=5)
    assert p.join.waiting == 1 and p.counters["unmatched"] == 0
    first.write(r, k)
    second.write(r, k)
    r.xadd(k.feedback, {"data": orjson.dumps({"id": second.ids[0], "label": 0})})
    learn_until(p, lambda: p.counters["samples"] == 2)
    assert p.counters["label_sum"] == 1.0
    assert r.xpending(k.feedback, p.group)["pending"] == 0


def test_a_label_is_joined_at_any_age_within_the_window_whatever_came_in_between(r) -> None:
    """Nothing per prediction in the learner: a label finds a prediction 10 minutes and
    100,000 predictions back (logged as 64-row requests), and one past the window is late."""
    p = _proc(r, learning={"labelWindow": "15m", "maxBatchDelay": "20ms"})
    k = p.keys
    now = time.time()
    old = LoggedRequest([{"amount": 3.0, "hour": 1.0}], ts=now - 600).write(r, k)
    too_old = LoggedRequest([{"amount": 4.0}], ts=now - 901).write(r, k)
    pipe = r.pipeline(transaction=False)
    for i in range(100_000 // 64):
        LoggedRequest([{"amount": float(i)}] * 64, ts=now - 600 + i * 0.3).write(pipe, k)
    pipe.execute()
    for pid in (old.ids[0], too_old.ids[0]):
        r.xadd(k.feedback, {"data": orjson.dumps({"id": pid, "label": 1})})
    learn_until(p, lambda: p.counters["samples"] + p.counters["late"] == 2)
    assert (p.counters["samples"], p.counters["late"]) == (1, 1)
    [dead] = r.xrange(k.deadletter)
    assert (
        dead[1][b"reason"] == b"late" and orjson.loads(dead[1][b"fields"])["id"] == too_old.ids[0]
    )
    assert p.join.lookups <= 2 and p.join.waiting == 0  # one read of one entry, no scan


def test_a_prediction_takes_one_label_across_restarts(r) -> None:
    """The first label wins; a second, even after the learner restarted, is a duplicate."""
    p = _proc(r)
    k = p.keys
    req = LoggedRequest([{"amount": 1.0}, {"amount": 2.0}]).write(r, k)
    for label in (1, 0):
        r.xadd(k.feedback, {"data": orjson.dumps({"id": req.ids[0], "label": label})})
    learn_until(p, lambda: p.counters["samples"] + p.counters["duplicate"] == 2)
    again = _proc(r)  # a new process: nothing in memory
    assert again.counters["samples"] == 1
    r.xadd(k.feedback, {"data": orjson.dumps({"id": req.ids[0], "label": 0})})
    r.xadd(k.feedback, {"data": orjson.dumps({"id": req.ids[1], "label": 0})})
    learn_until(again, lambda: again.counters["samples"] + again.counters["duplicate"] == 4)
    assert (again.counters["samples"], again.counters["duplicate"]) == (2, 2)
    assert again.counters["label_sum"] == 1.0  # the first label of the first row, and 0


def test_a_packed_feedback_entry_is_acknowledged_when_its_last_label_is_done_and_a_restart_learns_only_the_rest(
    r,
) -> None:
    p = _proc(r)
    k = p.keys
    now = LoggedRequest([{"amount": 1.0}, {"amount": 2.0}]).write(r, k)
    later = LoggedRequest([{"amount": 3.0}]).answered(r, k)  # its label comes before its entry
    labels = [{"id": now.ids[0], "label": 1}, {"id": "x"}, {"id": later.ids[0], "label": 1},
              {"id": now.ids[1], "label": 0}]  # fmt: skip
    eid = r.xadd(k.feedback, {"data": orjson.dumps({"feedback": labels})}).decode()
    learn_until(p, lambda: p.counters["samples"] == 2 and p.counters["invalid"] == 1)
    p.flush()
    [dead] = r.xrange(k.deadletter)
    assert dead[1][b"entry"].decode() == f"{eid}/1" and b"has no 'label'" in dead[1][b"reason"]
    assert orjson.loads(orjson.loads(dead[1][b"fields"])["data"]) == {"id": "x"}
    assert r.xpending(k.feedback, p.group)["pending"] == 1  # a label still waits
    between = _proc(r)  # restarted, and checkpointed before it read the entry again
    between._checkpoint()
    again = _proc(r)  # as after a crash: the entry is read again
    later.write(r, k)
    learn_until(again, lambda: again.counters["samples"] == 3)
    again.flush()
    assert again.counters["label_sum"] == 2.0 and again.counters["invalid"] == 1
    assert r.xlen(k.deadletter) == 1 and again.counters["duplicate"] == 0  # nothing twice
    assert r.xpending(k.feedback, again.group)["pending"] == 0


def test_a_made_up_id_is_unmatched_without_waiting(r) -> None:
    """An id of the generated form whose server logged past it, or whose secret is wrong."""
    p = _proc(r)
    k = p.keys
    real = LoggedRequest([{"amount": 1.0}]).write(r, k)
    instance, entry, secret, _ = real.instance, real.entry, real.secret, real.ids[0]
    ms = int(entry.split("-")[0])
    forged = [
        f"{instance}-{ms}-0-0-{'0' * 16}-0",  # the wrong secret
        f"{instance}-{ms - 5}-0-0-{secret}-0",  # before the last entry: it would be there
        f"{instance}-{ms}-0-0-{secret}-7",  # no such row
        f"{instance}-{ms}-0-3-{secret}-0",  # no such request in the entry
    ]
    for pid in forged:
        r.xadd(k.feedback, {"data": orjson.dumps({"id": pid, "label": 1})})
    for _ in range(3):
        p.step(block_ms=5)
    assert p.counters["unmatched"] == 4 and p.join.waiting == 0 and p.counters["samples"] == 0


@on_one_redis_and_a_cluster
def test_packed_entries_are_learned_whole_and_a_bad_row_in_one_is_dead_lettered_alone(r) -> None:
    p = _proc(r)
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=3).take(640)
    for at in range(0, 640, 64):  # ten entries of 64 rows, as :learn writes them
        labels = y[at : at + 64].tolist()
        if at == 128:
            labels[5] = 2  # not 0/1
        data = {"instances": rows[at : at + 64], "labels": labels}
        r.xadd(p.keys.samples, {"data": orjson.dumps(data)})
    learn_until(p, lambda: p.counters["samples"] == 639)
    assert p.counters["label_sum"] == y.sum() - y[128 + 5]
    assert r.xpending(p.keys.samples, p.group)["pending"] == 0
    [(_, dead)] = r.xrange(p.keys.deadletter)
    assert dead[b"reason"].startswith(b"invalid label: binary labels must be 0 or 1 (got 2)")
    assert orjson.loads(orjson.loads(dead[b"fields"])["row"])["features"] == rows[133]


@on_one_redis_and_a_cluster
def test_late_unmatched_and_invalid_entries_go_to_the_dead_letter_stream(r) -> None:
    p = _proc(r, learning={"labelWindow": "1s", "maxBatchDelay": "20ms"})
    k = p.keys
    old = LoggedRequest([{}], ts=time.time() - 5).write(r, k)
    r.xadd(k.feedback, {"data": orjson.dumps({"id": old.ids[0], "label": 1})})  # 5 s after: late
    r.xadd(k.feedback, {"data": orjson.dumps({"id": "never-logged", "label": 1})})
    r.xadd(k.samples, {"data": orjson.dumps({"features": {"amount": 1}, "label": 3})})  # not 0/1
    r.xadd(k.samples, {"data": b"{not json"})
    r.xadd(k.samples, {"other": b"x"})
    deadline = time.monotonic() + 10
    while r.xlen(k.deadletter) < 5:
        assert time.monotonic() < deadline, p.counters
        p.step(block_ms=50)
    reasons = sorted(e[1][b"reason"].decode().split(":")[0] for e in r.xrange(k.deadletter))
    assert reasons == ["invalid", "invalid", "invalid label", "late", "unmatched"]
    assert p.counters["samples"] == 0
    assert r.xpending(k.samples, p.group)["pending"] == 0
    assert r.xpending(k.feedback, p.group)["pending"] == 0


def test_the_gate_holds_back_a_version_that_is_worse_than_the_served_one(r) -> None:
    # A learning rate this large makes the live model oscillate: its loss on the
    # holdout is far above the untrained v0's log(2).
    p = _proc(
        r,
        model={
            "task": "binary",
            "algorithm": "sgd",
            "features": FRAUD_FEATURES,
            "params": {"optimizer": "sgd", "learningRate": 500.0},
        },
        learning={"publishEvery": 300, "gate": {"holdout": 300, "maxLossIncrease": 0.0}},
    )
    _push_samples(r, p, 1500)
    learn_until(p, lambda: p.counters["samples"] == 1500)
    assert p.counters["gate_rejections"] >= 3
    assert p.store.pointers(p.revision).latest == 0


def test_the_gate_judges_against_the_version_served_as_stored(r) -> None:
    """The learner's served model (the gate's yardstick) is the served version as the store
    holds it: a copy of its own when it published that one, a load when another is served."""
    p = _proc(r)
    _push_samples(r, p, 1600)
    learn_until(p, lambda: p.counters["samples"] == 1600)
    p.step(block_ms=5)  # (the pointers are read a step after the publish)
    latest = p.store.pointers(p.revision).served
    assert latest is not None and latest >= 3 and p.served_version == latest
    for v in (latest, 1):  # then pinned back to an older one (a rollback)
        p.store.set_pointer(p.revision, "served", v, pin=True)
        p.step(block_ms=5)
        stored, _ = p.store.load(p.revision, v)
        assert p.served_version == v and p.training.served is not p.learner
        for k, a in stored.get_state().items():
            np.testing.assert_array_equal(p.training.served.get_state()[k], a, err_msg=k)


@on_one_redis_and_a_cluster
def test_pause_and_reset_by_control_hash(r) -> None:
    p = _proc(r)
    _push_samples(r, p, 600)
    learn_until(p, lambda: p.counters["samples"] == 600)
    control = p.keys.control(p.revision)
    r.hset(control, "paused", "1")
    _push_samples(r, p, 100, seed=1)
    for _ in range(5):
        p.step(block_ms=5)
    assert p.counters["samples"] == 600
    r.hset(control, mapping={"paused": "0", "resetTo": "0"})
    p._control()
    assert p.learner.n_seen == 0  # back to v0's state
    assert not r.hexists(control, "resetTo")
    learn_until(p, lambda: p.counters["samples"] == 700)


def _baseline(tmp_path: Path):
    """A batch-trained learner, the file it is written to, and a model warm-started from it."""
    base = make_learner({"task": "binary", "algorithm": "sgd", "features": FRAUD_FEATURES})
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=0).take(3000)
    base.learn_many(base.schema.encode(rows), y)
    path = tmp_path / "baseline.tdl"
    model = {
        "task": "binary",
        "algorithm": "sgd",
        "features": FRAUD_FEATURES,
        "warmStart": {"file": str(path)},
    }
    return base, rows, path, model


def test_warm_start_from_a_baseline_file(r, tmp_path: Path) -> None:
    base, rows, path, model = _baseline(tmp_path)
    path.write_bytes(learner_to_blob(base))
    p = _proc(r, model=model)
    v0, meta = p.store.load(p.revision, 0)
    X = base.schema.encode(rows[:50])
    np.testing.assert_array_equal(v0.predict_many(X), base.predict_many(X))
    # a snapshot given in the spec was proven offline: a rollback target from the start
    assert p.store.pointers(p.revision).lastGood == 0 and meta["warmStart"] == str(path)


def test_a_baseline_reference_becomes_the_revision_s_and_a_warm_started_revision_s(
    r, tmp_path: Path
) -> None:
    base, rows, path, model = _baseline(tmp_path)
    X = base.schema.encode(rows)
    ref = Reference(["amount", "hour"], X[:, :2], base.predict_many(X), "batch job 2026-11-01")
    path.write_bytes(learner_to_blob(base, reference=ref))
    p = _proc(r, model=model)
    got = p.store.reference(p.revision)
    assert got is not None and got.names == ["amount", "hour"] and got.source == str(path)
    np.testing.assert_array_equal(got.features, ref.features)
    np.testing.assert_array_equal(got.scores, ref.scores)
    # a canary revision warm-started from this one inherits it
    other = parse(manifest(model={**model, "params": {"l2": 0.1}}))
    assert other.revision != p.revision
    canary = LearnerProcess(other, r, checkpoint_seconds=0.0, warm_start_revision=p.revision)
    canary.start()
    # a copy of another revision's served version proves itself again here
    assert canary.store.pointers(other.revision).lastGood is None
    inherited = canary.store.reference(other.revision)
    assert inherited is not None
    np.testing.assert_array_equal(inherited.features, ref.features)
    # a baseline without one leaves the revision without one
    path.write_bytes(learner_to_blob(base))
    plain = parse(manifest(name="plain", model=model))
    LearnerProcess(plain, r, checkpoint_seconds=0.0).start()
    assert ModelStore(r, plain.namespace, plain.name).reference(plain.revision) is None


def test_warm_start_from_an_incompatible_baseline_names_the_field(r, tmp_path: Path) -> None:
    other = make_learner({"task": "binary", "algorithm": "sgd", "features": [{"name": "z"}]})
    path = tmp_path / "baseline.tdl"
    path.write_bytes(learner_to_blob(other))
    model = {
        "task": "binary",
        "algorithm": "sgd",
        "features": FRAUD_FEATURES,
        "warmStart": {"file": str(path)},
    }
    with pytest.raises(
        SpecError, match="spec.model.warmStart: .* another task, algorithm or feature list"
    ):
        _proc(r, model=model)
    # bytes that are no snapshot: the manifest is right, so a fault of the model, which the
    # operator's ModelLoaded condition says (tideline.pods.storage)
    path.write_bytes(b"garbage")
    with pytest.raises(WarmStartFailed, match=f"{path}: is not a tideline snapshot"):
        _proc(r, model=model)


def test_a_restart_resumes_from_the_checkpoint(r) -> None:
    p = _proc(r)
    _push_samples(r, p, 700)
    learn_until(p, lambda: p.counters["samples"] == 700)
    state = p.learner.get_state()
    again = _proc(r)
    assert again.counters["samples"] == 700
    for k, v in state.items():
        np.testing.assert_array_equal(again.learner.get_state()[k], v, err_msg=k)


def test_the_replay_buffer_is_saved_once_a_checkpoint_period_and_at_a_clean_stop(r) -> None:
    from tideline import codec

    model = parse(manifest(learning={"publishEvery": 100, "maxBatchDelay": "20ms"}))
    p = LearnerProcess(model, r, checkpoint_seconds=3600.0)
    p.start()  # (its first checkpoint saves the empty buffer)
    _push_samples(r, p, 700)
    deadline = time.monotonic() + 20.0
    while p.counters["samples"] < 700 and time.monotonic() < deadline:
        p.step(block_ms=5)  # (learn_until flushes: a clean stop)
    assert p.store.pointers(p.revision).latest >= 3  # a checkpoint with each version...
    saved, _ = codec.decode(r.get(p.keys.replay(p.revision)))
    assert len(saved["replay.y"]) == 0  # ...and the buffer not with them, within the period
    p.flush()  # a clean stop
    again = LearnerProcess(model, r)
    again.start()
    assert (
        again.counters["samples"] == 700
        and again.training.replay.filled == p.training.replay.filled == 700
    )
    np.testing.assert_array_equal(
        again.training.replay.get_state()["replay.X"], p.training.replay.X[:700]
    )
    # a checkpoint written with the buffer inside it (as before it had a key of its own)
    arrays, meta = codec.decode(r.get(p.keys.checkpoint(p.revision)))
    arrays.update(p.training.replay.get_state())
    r.set(p.keys.checkpoint(p.revision), codec.encode(arrays, meta))
    r.delete(p.keys.replay(p.revision))
    again = LearnerProcess(model, r)
    again.start()
    assert again.training.replay.filled == 700


def test_keys_of_the_layout_before_hash_tags_are_moved_and_learning_resumes(r) -> None:
    p = _proc(r)
    _push_samples(r, p, 700)
    learn_until(p, lambda: p.counters["samples"] == 700)
    state = p.learner.get_state()
    new, old = p.keys.prefix + ":", p.keys.legacy_prefix + ":"
    for key in list(r.scan_iter(match="tideline:{*", count=1000)):  # as an old release left them
        r.rename(key, old + key.decode()[len(new) :])
    assert not list(r.scan_iter(match="tideline:{*")) and r.exists(old + "samples")
    r.xadd(old + "samples", {"data": orjson.dumps({"features": {"amount": 1.0}, "label": 1})})
    again = _proc(r)  # moves them, resumes from the checkpoint, learns what was pending
    assert again.counters["samples"] == 700 and not list(r.scan_iter(match=old + "*"))
    for k, v in state.items():
        np.testing.assert_array_equal(again.learner.get_state()[k], v, err_msg=k)
    learn_until(again, lambda: again.counters["samples"] == 701)
    assert again.store.pointers(again.revision).latest >= 1


def _dead_letters(r, p: LearnerProcess) -> list[dict]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange(p.keys.deadletter)]


def test_huge_values_are_learned_finitely_and_every_later_sample_is_learned(r) -> None:
    p = _proc(r)
    _push_samples(r, p, 500, seed=1)
    hostile = [{"amount": 1e308, "hour": 3, "merchant": "m-1"},
               {"amount": -1e200, "hour": 1e300, "merchant": "m-2"}]  # fmt: skip
    push_samples(r, p.keys.samples, hostile, [1.0, 0.0])
    rows, y = _push_samples(r, p, 1500, seed=2)
    learn_until(p, lambda: p.counters["samples"] + p.counters.get("nonfinite", 0) == 2002)
    assert r.xpending(p.keys.samples, p.group)["pending"] == 0
    assert p.counters["samples"] == 2002, "the huge rows were clipped and learned, not refused"
    assert np.isfinite(p.learner.predict_many(p.schema.encode(rows + hostile))).all()
    assert p.store.pointers(p.revision).latest >= 3  # checkpoints and versions went on
    v, _ = p.store.load(p.revision, "latest")
    assert np.isfinite(v.predict_many(v.schema.encode(rows))).all()


def test_a_row_whose_learning_raises_is_dead_lettered_and_the_rest_of_its_batch_learned(
    r, monkeypatch
) -> None:
    p = _proc(r)

    def fragile(learn):  # a bug one row's content reaches
        def update(X, y, *rest):
            if (X[:, 0] == 13.0).any():
                raise RuntimeError("cannot learn 13")
            return learn(X, y, *rest)

        return update

    # _update: what learn_many and learn_predict_many run; and the block's path
    monkeypatch.setattr(p.learner, "_update", fragile(p.learner._update))
    monkeypatch.setattr(
        p.learner, "learn_predict_batches", fragile(p.learner.learn_predict_batches)
    )
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=3).take(300)
    rows[150]["amount"] = 13.0
    push_samples(r, p.keys.samples, rows, y)
    learn_until(p, lambda: p.counters["samples"] == 299)
    dead = _dead_letters(r, p)
    assert len(dead) == 1 and dead[0]["reason"].startswith("poison: RuntimeError: cannot learn 13")
    assert r.xpending(p.keys.samples, p.group)["pending"] == 0
    assert p.counters["label_sum"] == pytest.approx(float(y.sum() - y[150]))


def test_an_entry_that_killed_every_learner_that_read_it_is_dead_lettered_at_start(r) -> None:
    m = parse(manifest(learning={"publishEvery": 500, "maxBatchDelay": "20ms"}))
    first = LearnerProcess(m, r, checkpoint_seconds=0.0)
    first.start()
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=4).take(50)
    push_samples(r, first.keys.samples, rows, y)
    # the learners that read the entries died before acknowledging them: each start reads
    # the pending entries again
    r.xreadgroup(first.group, "learner", {first.keys.samples: ">"}, count=1)
    for _ in range(9):
        r.xreadgroup(first.group, "learner", {first.keys.samples: "0"}, count=1)
    p = LearnerProcess(m, r, checkpoint_seconds=0.0)
    p.start()
    learn_until(p, lambda: p.counters["samples"] == 49)
    dead = _dead_letters(r, p)
    assert len(dead) == 1 and dead[0]["reason"].startswith("poison: delivered 1")  # 10, +1 claimed
    assert r.xpending(p.keys.samples, p.group)["pending"] == 0


@pytest.mark.parametrize(
    "path", ["/dev/zero", "/tmp"], ids=["a device read forever", "a directory"]
)
def test_a_warm_start_file_that_is_no_regular_file_is_refused_at_once(r, path: str) -> None:
    model = {
        "task": "binary",
        "algorithm": "sgd",
        "features": FRAUD_FEATURES,
        "warmStart": {"file": path},
    }
    start = time.monotonic()
    with pytest.raises(SpecError, match="is not a regular file"):
        _proc(r, model=model)
    assert time.monotonic() - start < 5


@on_one_redis_and_a_cluster
def test_the_label_streams_lose_only_what_every_consumer_group_acknowledged(r) -> None:
    p = _proc(r)
    k = p.keys
    r.xgroup_create(k.samples, "slow", id="0")  # a reader that is behind (a stopped monitor)
    _push_samples(r, p, 25_000)
    learn_until(p, lambda: p.counters["samples"] == 25_000)
    p.source.trim()
    assert r.xlen(k.samples) == 25_000  # the slow group has read nothing yet
    [(_, entries)] = r.xreadgroup("slow", "c", {k.samples: ">"}, count=22_000)
    ids = [entry_id for entry_id, _ in entries]
    r.xack(k.samples, "slow", *ids[:20_000])  # 20,000 acknowledged, 2,000 read and pending
    p.source.trim()  # more than an approximate trim's default LIMIT (10,000) at once
    oldest = r.xrange(k.samples, count=1)[0][0]
    assert 5000 <= r.xlen(k.samples) <= 5100  # trimmed by whole nodes of 100 entries

    def key(entry_id: bytes) -> tuple[int, int]:
        return entry_order(entry_id.decode())

    # the slow group's oldest pending entry is kept
    assert key(ids[19_899]) <= key(oldest) <= key(ids[20_000])


def test_the_learner_reports_how_many_entries_it_is_behind(r) -> None:
    p = _proc(r)
    _push_samples(r, p, 200)
    assert p.measure_lag() == 200 and p.status()["lag"] == "200"  # none read yet
    learn_until(p, lambda: p.counters["samples"] == 200)
    assert p.measure_lag() == 0

    # (Redis < 7, as here, does not count a group's lag: it is counted by reading the
    # entries when the group read part of what the stream holds; when it read none of it,
    # it is the stream's length, and none when it read the newest)
    stream = p.keys.samples
    ids = [entry_id.decode() for entry_id, _ in r.xrange(stream)]
    assert len(ids) == r.xlen(stream) > 50
    undelivered = p.source._undelivered  # type: ignore[attr-defined]
    assert undelivered(stream, ids[49]) == len(ids) - 50
    assert undelivered(stream, "0-0") == len(ids)
    assert undelivered(stream, ids[-1]) == 0
    r.xtrim(stream, minid=ids[60], approximate=False)  # (the oldest gone: it read before)
    assert undelivered(stream, ids[49]) == len(ids) - 60
    r.xadd(stream, {"data": b"{}"})
    assert undelivered(stream, ids[-1]) == 1


def test_connections_cut_while_a_read_is_in_flight_lose_and_repeat_nothing(r) -> None:
    import threading

    p = _proc(r)
    stop = threading.Event()
    runner = threading.Thread(target=p.run, args=(stop,))
    runner.start()
    try:
        rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=5).take(6000)
        for i in range(0, 6000, 1000):
            push_samples(r, p.keys.samples, rows[i : i + 1000], y[i : i + 1000])
            time.sleep(0.05)
            r.client_kill_filter(_type="normal", skipme=True)  # the learner's, reads in flight
        wait_until(lambda: learned_in_thread(runner, p, 6000), timeout=30, interval=0.05,
                   message=lambda: f"6000 samples learned; counters {p.counters}")  # fmt: skip
        time.sleep(0.5)
    finally:
        stop.set()
        runner.join(20)
    assert p.counters["samples"] == 6000 and p.counters["label_sum"] == y.sum()
