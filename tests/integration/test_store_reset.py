"""The learner (and the monitor's stream reader) through a store that loses keys, refuses
writes or comes back from its AOF: real redis-servers, restarted, flushed, full (issue 30)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import redis

from tests.helpers import FRAUD_FEATURES, learn_until, manifest, push_samples, wait_until
from tideline.algorithms import make_learner
from tideline.contracts import AWAIT_START_ENV, Keys, Pointers, StartWord
from tideline.demo.embedded import EmbeddedRedis
from tideline.demo.simulate import SyntheticStream
from tideline.pods.learner import LearnerProcess
from tideline.pods.liveness import Liveness
from tideline.pods.sources import RedisFollower, RedisStreams
from tideline.spec import parse
from tideline.store import learner_to_blob

pytestmark = pytest.mark.integration

LEARNING = {"publishEvery": 500, "maxBatchDelay": "20ms"}


def _learner(client: redis.Redis, **spec: object) -> LearnerProcess:
    spec.setdefault("learning", LEARNING)
    return LearnerProcess(parse(manifest(**spec)), client, checkpoint_seconds=0.0)


def _samples(n: int, seed: int) -> tuple[list[dict], np.ndarray]:
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=seed).take(n)
    return rows, y


@contextmanager
def _running(p: LearnerProcess) -> Iterator[threading.Thread]:
    """``p.run`` in a thread for the block; stopped (and checked to have stopped) after."""
    stop = threading.Event()
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(p.run(stop)), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(30)
    assert result == [True], "run() ended as if its turns kept failing"


def _status(client: redis.Redis, p: LearnerProcess) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(p.keys.learner(p.revision)).items()}


def _checkpointed(client: redis.Redis, p: LearnerProcess, samples: int) -> Callable[[], bool]:
    """True once the learner's checkpoint (its status, written in the same transaction) says
    ``samples`` and nothing it read waits for an acknowledgement."""

    def done() -> bool:
        return (
            _status(client, p).get("samples") == str(samples)
            and client.xpending(p.keys.samples, p.group)["pending"] == 0
        )

    return done


@pytest.mark.parametrize("fault", ["flushall", "restart empty"],
                         ids=["the store flushed", "the store restarted empty"])  # fmt: skip
def test_a_learner_alive_through_a_store_reset_puts_its_versions_back_and_numbers_on(
    fault: str,
) -> None:
    with EmbeddedRedis() as server:
        r = server.client()
        p = _learner(server.client())
        p.start()
        rows, y = _samples(3000, seed=0)
        with _running(p) as thread:
            push_samples(r, p.keys.samples, rows[:2000], y[:2000])
            wait_until(
                _checkpointed(r, p, 2000), timeout=30.0, message="2,000 samples checkpointed"
            )
            before = p.store.pointers(p.revision)
            assert before.served is not None and before.served >= 3
            served_blob = r.get(p.keys.version(p.revision, before.served))
            # the operator proves the served version: the learner keeps a copy as lastGood
            r.hset(p.keys.pointers(p.revision), "lastGood", before.served)
            wait_until(
                lambda: p.held.pointers.lastGood == before.served,
                timeout=30.0,
                message="lastGood read",
            )
            if fault == "flushall":
                r.flushall()
            else:
                server.stop(keep=False)  # (a new directory: nothing comes back)
                time.sleep(1.0)
                server.start()
                r = server.client()
            push_samples(r, p.keys.samples, rows[2000:], y[2000:])
            wait_until(
                lambda: p.counters["samples"] == 3000,
                timeout=30.0,
                message="the samples after the reset learned",
            )
            wait_until(lambda: (p.store.pointers(p.revision).latest or 0) > before.latest + 1, timeout=30.0, message="two versions after the reset")  # fmt: skip
            assert thread.is_alive()
        status = _status(r, p)
        assert "storeResetAt" in status
        restored = sorted(int(v[1:]) for v in status["restored"].split(","))
        assert before.served in restored
        # the served version back under its number, the very blob it was
        assert r.get(p.keys.version(p.revision, before.served)) == served_blob
        after = p.store.pointers(p.revision)
        assert after.latest is not None and after.lastGood == before.served
        # no cold v0: what was put back, then the numbers after the last version before
        assert p.store.versions(p.revision) == sorted(
            {*restored, *range(before.latest + 1, after.latest + 1)}
        )
        assert not r.exists(p.keys.version(p.revision, 0))
        assert p.counters["label_sum"] == y.sum()  # nothing lost, nothing learned twice


def test_a_learner_whose_checkpoint_alone_was_evicted_resumes_from_the_served_version(r) -> None:
    p = _learner(r)
    p.start()
    rows, y = _samples(1800, seed=1)
    push_samples(r, p.keys.samples, rows[:1200], y[:1200])
    learn_until(p, lambda: p.counters["samples"] == 1200)
    ptr = p.store.pointers(p.revision)
    assert ptr.served is not None and ptr.served >= 2
    served, _ = p.store.load(p.revision, ptr.served)
    r.delete(p.keys.checkpoint(p.revision))
    again = _learner(r)
    again.start()
    assert p.store.pointers(p.revision) == ptr  # nothing published: no v0 over v2
    for k, v in served.get_state().items():
        np.testing.assert_array_equal(again.learner.get_state()[k], v, err_msg=k)
    assert _status(r, again)["resumedFrom"] == f"v{ptr.served}"
    assert r.exists(p.keys.checkpoint(p.revision))  # written at once
    start = again.counters["samples"]  # (as many as the served version had learned)
    push_samples(r, p.keys.samples, rows[1200:], y[1200:])
    learn_until(again, lambda: again.counters["samples"] == start + 600)
    assert p.store.pointers(p.revision).latest == ptr.latest + 1


def _baseline(tmp_path: Path) -> dict:
    """A spec.model with a warm-start snapshot (a batch-trained baseline, proven offline)."""
    base = make_learner({"task": "binary", "algorithm": "sgd", "features": FRAUD_FEATURES})
    rows, y = _samples(2000, seed=2)
    base.learn_many(base.schema.encode(rows), y)
    path = tmp_path / "baseline.tdl"
    path.write_bytes(learner_to_blob(base))
    return {"task": "binary", "algorithm": "sgd", "features": FRAUD_FEATURES,
            "warmStart": {"file": str(path)}}  # fmt: skip


@pytest.mark.parametrize(
    "word, warm, expected",
    [
        ("fresh", False, Pointers(latest=0, served=0)),
        ("after:20", False, Pointers(latest=21, pinned=True)),
        ("after:20", True, Pointers(latest=21, served=21, lastGood=21)),
    ],
    ids=[
        "fresh: a first deploy publishes v0 as ever",
        "after a reset a cold model is v21, latest only and pinned: nothing serves it",
        "after a reset a warm-start snapshot is v21, served and lastGood as a baseline is",
    ],
)
def test_a_learner_with_nothing_stored_waits_for_the_operator_s_word(
    r, monkeypatch, tmp_path: Path, word: str, warm: bool, expected: Pointers
) -> None:
    monkeypatch.setenv(AWAIT_START_ENV, "1")
    p = _learner(r, **({"model": _baseline(tmp_path)} if warm else {}))
    stop = threading.Event()
    starting = threading.Thread(target=p.start, args=(stop,), daemon=True)
    starting.start()
    try:
        time.sleep(1.2)  # (two polls and more)
        assert starting.is_alive() and p.liveness.check()[0]  # waiting, and alive
        assert p.store.versions(p.revision) == [] and not r.exists(p.keys.pointers(p.revision))
        r.hset(p.keys.control(p.revision), StartWord.FIELD, word)
        starting.join(10)
        assert not starting.is_alive()
    finally:
        stop.set()
        starting.join(10)
    assert p.store.pointers(p.revision) == expected
    assert p.store.versions(p.revision) == [expected.latest]
    if expected.pinned:  # the next versions too stay latest only, numbered on
        rows, y = _samples(600, seed=3)
        push_samples(r, p.keys.samples, rows, y)
        learn_until(p, lambda: p.counters["samples"] == 600)
        assert p.store.pointers(p.revision) == Pointers(latest=22, pinned=True)


def test_a_waiting_learner_resumes_from_a_version_put_back_meanwhile(r, monkeypatch) -> None:
    monkeypatch.setenv(AWAIT_START_ENV, "1")
    model = parse(manifest(learning=LEARNING))
    trained = make_learner(model.spec.model.to_dict())
    rows, y = _samples(500, seed=4)
    trained.learn_many(trained.schema.encode(rows), y)
    p = LearnerProcess(model, r, checkpoint_seconds=0.0)
    stop = threading.Event()
    starting = threading.Thread(target=p.start, args=(stop,), daemon=True)
    starting.start()
    try:
        time.sleep(0.7)
        # a server that held v7 through the reset puts it back
        blob = learner_to_blob(trained, {"version": 7, "samples": 500})
        p.store.restore(p.revision, 7, blob, {"version": 7, "samples": 500},
                        {"latest": 7, "served": 7})  # fmt: skip
        starting.join(10)
        assert not starting.is_alive()
    finally:
        stop.set()
        starting.join(10)
    assert p.counters["next_version"] == 8 and p.counters["samples"] == 500
    assert _status(r, p)["resumedFrom"] == "v7"
    assert p.store.versions(p.revision) == [7]


def test_consumer_groups_deleted_under_traffic_are_made_again_and_nothing_is_lost(r) -> None:
    p = _learner(r)
    p.start()
    rows, y = _samples(6000, seed=5)
    with _running(p):
        for i in range(0, 6000, 1000):
            push_samples(r, p.keys.samples, rows[i : i + 1000], y[i : i + 1000])
            time.sleep(0.1)
            if i in (1000, 3000):
                for stream in (p.keys.samples, p.keys.feedback):
                    r.xgroup_destroy(stream, p.group)
        wait_until(_checkpointed(r, p, 6000), timeout=30.0, message="6,000 samples checkpointed")
    assert p.counters["samples"] == 6000 and p.counters["label_sum"] == y.sum()
    assert "storeResetAt" not in _status(r, p)  # the groups alone: nothing to put back


def test_an_out_of_memory_store_is_waited_out_and_nothing_is_lost_or_learned_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tideline.learner")
    with EmbeddedRedis() as server:
        r = server.client()
        r.config_set("maxmemory-policy", "noeviction")
        p = _learner(server.client())
        p.start()
        rows, y = _samples(1500, seed=6)
        control = p.keys.control(p.revision)
        with _running(p) as thread:
            push_samples(r, p.keys.samples, rows[:500], y[:500])
            wait_until(_checkpointed(r, p, 500), timeout=30.0, message="500 samples checkpointed")
            r.hset(control, "paused", "1")
            wait_until(lambda: p.paused, timeout=30.0, message="the learner paused")
            push_samples(r, p.keys.samples, rows[500:1200], y[500:1200])
            r.config_set("maxmemory", "1")  # full: every write refused
            try:
                r.hdel(control, "paused")  # (a delete frees memory: taken when full)
                wait_until(
                    lambda: p.counters["samples"] == 1200, timeout=30.0, message="learned in memory"
                )
                time.sleep(1.0)  # checkpoints refused meanwhile
                assert thread.is_alive()
                assert _status(r, p)["samples"] == "500"  # no checkpoint landed...
                assert r.xpending(p.keys.samples, p.group)["pending"] == 700  # ...nor an ack
            finally:
                r.config_set("maxmemory", "0")
            wait_until(
                _checkpointed(r, p, 1200),
                timeout=30.0,
                message="1,200 samples checkpointed once Redis takes writes",
            )
            push_samples(r, p.keys.samples, rows[1200:], y[1200:])
            wait_until(_checkpointed(r, p, 1500), timeout=30.0, message="all 1,500 checkpointed")
        assert p.counters["label_sum"] == y.sum()
        # the version due while Redis was full (at 1,000) was published once it took writes,
        # under its number: no gap
        latest = p.store.pointers(p.revision).latest
        assert latest is not None and latest >= 2
        assert p.store.versions(p.revision) == list(range(latest + 1))
        full = [m for m in caplog.messages if "out of memory" in m]
        assert len(full) == 1 and "maxmemory" in full[0]


def test_a_learner_resumes_with_its_versions_after_an_aof_store_restarts() -> None:
    with EmbeddedRedis(appendonly=True) as server:
        r = server.client()
        p = _learner(server.client())
        p.start()
        rows, y = _samples(1800, seed=7)
        with _running(p) as thread:
            push_samples(r, p.keys.samples, rows[:1200], y[:1200])
            wait_until(
                _checkpointed(r, p, 1200), timeout=30.0, message="1,200 samples checkpointed"
            )
            before = p.store.pointers(p.revision)
            versions = p.store.versions(p.revision)
            server.restart()  # the same port and directory: back from its AOF
            r = server.client()
            push_samples(r, p.keys.samples, rows[1200:], y[1200:])
            wait_until(
                _checkpointed(r, p, 1800), timeout=30.0, message="1,800 samples checkpointed"
            )
            assert thread.is_alive()
        assert "storeResetAt" not in _status(r, p)  # nothing was lost: nothing put back
        assert p.store.versions(p.revision) == [*versions, before.latest + 1]
        again = _learner(r)  # a new process resumes from the checkpoint, not from a version
        again.start()
        assert again.counters["samples"] == 1800 and "resumedFrom" not in _status(r, again)
        assert again.counters["label_sum"] == y.sum()


def test_a_monitor_reader_killed_before_its_ack_does_not_hold_back_the_trim(r) -> None:
    keys = Keys("test", "m")
    killed = RedisFollower(r, keys, "monitor")
    killed.start()
    rows, y = _samples(600, seed=8)
    push_samples(r, keys.samples, rows, y)
    [(_, read)] = killed.read(150, 0)  # read, and killed (-9) before acknowledging
    assert len(read) == 150
    trimmer = RedisStreams(r, keys, "no-learner", None)
    trimmer.trim()
    assert r.xlen(keys.samples) == 600  # its oldest pending entry holds the stream
    again = RedisFollower(r, keys, "monitor")  # the monitor restarted
    again.start()
    got = []
    for _ in range(3):  # as the monitor does: read, handle, acknowledge
        got.append(dict(again.read(1000, 0)).get(keys.samples, []))
        pipe = r.pipeline(transaction=True)
        again.ack(pipe)
        pipe.execute()
        again.acked()
    # first what it had read before it was killed, then the rest, then nothing
    assert [eid for eid, _ in got[0]] == [eid for eid, _ in read]
    assert (len(got[1]), got[2]) == (450, [])
    assert r.xpending(keys.samples, "monitor")["pending"] == 0
    trimmer.trim()
    assert r.xlen(keys.samples) < 150  # (whole nodes of 100 entries: the last one stays)


def test_a_monitor_reader_makes_its_group_again_where_it_read_to(r) -> None:
    keys = Keys("test", "m")
    follower = RedisFollower(r, keys, "monitor")
    follower.start()
    assert follower.read(100, 0) == []  # (its pending entries: none)
    rows, y = _samples(30, seed=9)
    push_samples(r, keys.samples, rows[:10], y[:10])
    [(_, read)] = follower.read(100, 0)
    r.xgroup_destroy(keys.samples, "monitor")  # evicted, or the store flushed
    push_samples(r, keys.samples, rows[10:], y[10:])
    assert follower.read(100, 0) == []  # the reply said NOGROUP: made again
    [(_, after)] = follower.read(100, 0)
    assert len(read) == 10 and len(after) == 20  # from where it had read: nothing twice


@pytest.mark.parametrize(
    "error",
    [RuntimeError("a bug every turn hits"), redis.ConnectionError("refused")],
    ids=["a turn that raises", "a store that never answers"],
)
def test_a_learner_whose_every_turn_fails_stops_after_max_failures(
    r, monkeypatch, error: Exception
) -> None:
    p = LearnerProcess(parse(manifest(learning=LEARNING)), r, checkpoint_seconds=0.0,
                       liveness=Liveness(max_failures=3))  # fmt: skip
    p.start()
    turns = []

    def broken(block_ms: int) -> None:
        turns.append(block_ms)
        raise error

    monkeypatch.setattr(p, "_read", broken)
    done: list[bool] = []
    runner = threading.Thread(target=lambda: done.append(p.run(threading.Event())), daemon=True)
    runner.start()
    runner.join(10)
    assert done == [False] and len(turns) == 3 and p.liveness.failures == 3
    assert "3 failed since" in p.liveness.check()[1]  # (the probe says why)
