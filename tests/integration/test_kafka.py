"""Kafka topics as the source (spec.source.kafka), against a real broker the suite starts."""

from __future__ import annotations

import functools
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest
import yaml

from tests.helpers import (
    FRAUD_FEATURES,
    LoggedRequest,
    learn_until,
    learned_in_thread,
    manifest,
    produce,
    wait_until,
)
from tideline.contracts import Keys
from tideline.demo.simulate import SyntheticStream
from tideline.pods.learner import LearnerProcess
from tideline.spec import parse

pytestmark = pytest.mark.integration


def _doc(kafka_broker, topics: dict, **kafka) -> dict:
    return manifest(
        learning={"publishEvery": 2000, "maxBatchDelay": "20ms"},
        source={"kafka": {"bootstrapServers": kafka_broker.bootstrap, "topics": topics,
                          "startFrom": "earliest", **kafka}},
    )  # fmt: skip


def _topics(kafka_broker, partitions: int = 3) -> dict:
    name = uuid.uuid4().hex[:8]
    topics = {"samples": f"samples-{name}", "feedback": f"feedback-{name}"}
    for t in topics.values():
        kafka_broker.create_topic(t, partitions)
    return topics


def _samples(n: int, seed: int = 0) -> tuple[list, list]:
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=seed).take(n)
    return rows, y.tolist()


def _one_row(rows: list, labels: list) -> list:
    return [{"features": x, "label": y} for x, y in zip(rows, labels, strict=True)]


_run_until = functools.partial(learn_until, timeout=30.0, block_ms=20)


def _committed(kafka_broker, group: str, topic: str, partitions: int) -> list[int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, i) for i in range(partitions)], timeout=10)
        return [tp.offset for tp in got]
    finally:
        c.close()


def test_samples_are_learned_over_mutual_tls_with_the_cluster_s_own_ca(
    r, kafka_broker, kafka_certs, monkeypatch
) -> None:
    """A broker whose certificate comes from its cluster's own CA (Strimzi's, say) and that
    takes only clients with a certificate: the CA, certificate and key reach the learner
    as the operator passes them, from Secrets through the environment."""
    topics = _topics(kafka_broker, partitions=1)
    refs = {"caSecretRef": {"name": "cluster-ca-cert"}, "certSecretRef": {"name": "learner"},
            "keySecretRef": {"name": "learner"}}  # fmt: skip
    doc = _doc(kafka_broker, topics, securityProtocol="SSL", tls=refs)
    doc["spec"]["source"]["kafka"]["bootstrapServers"] = kafka_broker.bootstrap_tls
    model = parse(doc)
    for env, name in (("TIDELINE_KAFKA_CA", "ca.crt"), ("TIDELINE_KAFKA_CERT", "client.crt"),
                      ("TIDELINE_KAFKA_KEY", "client.key")):  # fmt: skip
        monkeypatch.setenv(env, kafka_certs[name].read_text())
    rows, labels = _samples(500)
    produce(kafka_broker.bootstrap, topics["samples"], _one_row(rows, labels))
    p = LearnerProcess(model, r)
    p.start()
    _run_until(p, lambda: p.counters["samples"] == 500)
    assert p.counters["label_sum"] == sum(labels)
    p.source.close()
    monkeypatch.delenv("TIDELINE_KAFKA_KEY")  # a Secret not mounted: the field is named
    with pytest.raises(RuntimeError, match=r"tls\.keySecretRef: TIDELINE_KAFKA_KEY is not set"):
        LearnerProcess(model, r, revision="again").start()


class _Counting:
    """A consumer whose commits are counted."""

    def __init__(self, inner, calls: list) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.calls = inner, calls

    def commit(self, *a, **k):  # type: ignore[no-untyped-def]
        self.calls.append(time.monotonic())
        return self.inner.commit(*a, **k)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)


def _counted(f, calls: list):  # type: ignore[no-untyped-def]
    def counted(*a, **k):  # type: ignore[no-untyped-def]
        calls.append(1)
        return f(*a, **k)

    return counted


def test_samples_and_feedback_are_learned_from_topics_and_the_group_sees_the_offsets(
    r, kafka_broker
) -> None:
    topics = _topics(kafka_broker)
    model = parse(_doc(kafka_broker, topics))
    keys = Keys(model.namespace, model.name)
    rows, labels = _samples(3000)
    # one-row and packed messages on the samples topic
    packed = [{"instances": rows[i : i + 50], "labels": labels[i : i + 50]}
              for i in range(1000, 2000, 50)]  # fmt: skip
    produce(kafka_broker.bootstrap, topics["samples"],
            _one_row(rows[:1000], labels[:1000]) + packed, partitions=3)  # fmt: skip
    # predictions logged by a server (to Redis), their labels on the feedback topic
    pipe = r.pipeline(transaction=False)
    ids = [LoggedRequest([row]).write(pipe, keys).ids[0] for row in rows[2000:]]
    pipe.execute()
    produce(kafka_broker.bootstrap, topics["feedback"],
            [{"id": i, "label": y} for i, y in zip(ids, labels[2000:], strict=True)],
            partitions=3)  # fmt: skip

    p = LearnerProcess(model, r, checkpoint_seconds=0.0)
    p.start()
    commits: list[float] = []
    checkpoints: list[int] = []
    p.source._consumer = _Counting(p.source.consumer, commits)
    p._checkpoint = _counted(p._checkpoint, checkpoints)  # type: ignore[method-assign]
    started = time.monotonic()
    _run_until(p, lambda: p.counters["samples"] == 3000)
    assert p.counters["label_sum"] == sum(labels)
    assert p.store.pointers(p.revision).latest >= 1
    # the position is in the checkpoint; the consumer group is told too (lag tools),
    # asynchronously, after a checkpoint at most once a second
    assert len(commits) <= time.monotonic() - started + 2 < len(checkpoints), (commits, checkpoints)
    p.source._consumer = p.source._consumer.inner
    group = f"tideline.test.m.learner.{p.revision}"
    want = {"samples": 1000 + len(packed), "feedback": 1000}
    deadline = time.monotonic() + 20
    while (got := {k: sum(_committed(kafka_broker, group, topics[k], 3)) for k in want}) != want:
        assert time.monotonic() < deadline, got
        p.source.committed()
        p.source.consumer.poll(0.1)  # (serves the commit's result)


def test_the_first_learner_starts_at_the_end_of_the_topics_and_a_restart_resumes(
    r, kafka_broker
) -> None:
    topics = _topics(kafka_broker, partitions=2)
    model = parse(_doc(kafka_broker, topics, startFrom="latest"))
    rows, labels = _samples(600)
    produce(kafka_broker.bootstrap, topics["samples"], _one_row(rows[:100], labels[:100]), 2)

    p = LearnerProcess(model, r, checkpoint_seconds=0.0)
    p.start()  # before it: not this model's to learn
    produce(kafka_broker.bootstrap, topics["samples"], _one_row(rows[100:300], labels[100:300]), 2)
    _run_until(p, lambda: p.counters["samples"] == 200)
    p.run(stop=_set())  # a clean stop: flushed, closed

    produce(kafka_broker.bootstrap, topics["samples"], _one_row(rows[300:], labels[300:]), 2)
    again = LearnerProcess(model, r, checkpoint_seconds=0.0)
    again.start()
    _run_until(again, lambda: again.counters["samples"] == 500)
    time.sleep(0.5)
    again.step(block_ms=50)
    assert again.counters["samples"] == 500
    assert again.counters["label_sum"] == sum(labels[100:])


def _set() -> threading.Event:
    stop = threading.Event()
    stop.set()
    return stop


def test_bad_messages_go_to_the_dead_letters_naming_where_they_were(r, kafka_broker) -> None:
    topics = _topics(kafka_broker, partitions=1)
    model = parse(_doc(kafka_broker, topics))
    keys = Keys(model.namespace, model.name)
    rows, labels = _samples(10)
    values = [*_one_row(rows[:5], labels[:5]), b"not json", {"features": rows[5], "label": 7},
              {"features": rows[6]}, *_one_row(rows[7:], labels[7:])]  # fmt: skip
    produce(kafka_broker.bootstrap, topics["samples"], values)
    produce(kafka_broker.bootstrap, topics["feedback"], [{"label": 1}])
    p = LearnerProcess(model, r, checkpoint_seconds=0.0)
    p.start()
    _run_until(p, lambda: p.counters["samples"] == 8 and r.xlen(keys.deadletter) == 4)
    dead = [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange(keys.deadletter)]
    where = sorted((d["stream"], d["entry"].split("-", 1)[1]) for d in dead)
    assert where == [(topics["feedback"], "0.0"), (topics["samples"], "0.5"),
                     (topics["samples"], "0.6"), (topics["samples"], "0.7")]  # fmt: skip
    assert all(d["reason"].startswith("invalid") for d in dead), dead
    assert p.counters["label_sum"] == sum(labels[:5]) + sum(labels[7:])


def test_a_broker_restart_mid_stream_loses_and_repeats_nothing(r, kafka_broker) -> None:
    topics = _topics(kafka_broker, partitions=2)
    model = parse(_doc(kafka_broker, topics))
    rows, labels = _samples(6000, seed=3)
    p = LearnerProcess(model, r, checkpoint_seconds=0.0)
    p.start()
    stop = threading.Event()
    runner = threading.Thread(target=p.run, args=(stop,))
    runner.start()
    try:
        produce(kafka_broker.bootstrap, topics["samples"], _one_row(rows[:3000], labels[:3000]), 2)
        kafka_broker.restart()
        produce(kafka_broker.bootstrap, topics["samples"], _one_row(rows[3000:], labels[3000:]), 2)
        wait_until(lambda: learned_in_thread(runner, p, 6000), timeout=60, interval=0.1,
                   message=lambda: f"6000 samples learned; counters {p.counters}")  # fmt: skip
        time.sleep(1.0)  # anything read twice would show by now
    finally:
        stop.set()
        runner.join(30)
    assert p.counters["samples"] == 6000 and p.counters["label_sum"] == sum(labels)


def test_the_monitor_judges_the_served_predictions_on_the_feedback_topic(r, kafka_broker) -> None:
    from tideline.pods.monitor import Monitor

    topics = _topics(kafka_broker, partitions=2)
    model = parse(_doc(kafka_broker, topics))
    keys = Keys(model.namespace, model.name)
    rows, labels = _samples(400, seed=4)
    before = LoggedRequest(rows[:100]).write(r, keys).ids
    produce(kafka_broker.bootstrap, topics["feedback"],  # before the monitor: not its to judge
            [{"id": i, "label": y} for i, y in zip(before, labels[:100], strict=True)], 2)  # fmt: skip
    mon = Monitor(model, r)
    mon.list_logs_every = 0.0
    mon.start()
    # right for 3 of 4 predictions
    scores = [y if i % 4 else 1.0 - y for i, y in enumerate(labels[100:])]
    ids = LoggedRequest(rows[100:], scores=scores, revision=model.revision).write(r, keys).ids
    produce(kafka_broker.bootstrap, topics["feedback"],
            [{"id": i, "label": y} for i, y in zip(ids, labels[100:], strict=True)], 2)  # fmt: skip
    deadline = time.monotonic() + 20
    while mon.tracks.get("stable") is None or mon.tracks["stable"].labelled < 300:
        assert time.monotonic() < deadline, mon.tracks
        mon.step(block_ms=50)
    for _ in range(3):
        mon.step(block_ms=50)
    stable = mon.tracks["stable"]
    assert stable.labelled == 300
    assert stable.quality.report()["accuracy"] == pytest.approx(0.75)
    mon.labels.close()


def test_the_servers_feedback_and_learn_are_produced_and_learned_and_an_outage_is_a_503(
    r, redis_server, kafka_broker
) -> None:
    from tests.helpers import Served, fraud_model
    from tideline.store import ModelStore

    topics = _topics(kafka_broker, partitions=2)
    doc = _doc(kafka_broker, topics)
    doc["metadata"]["name"] = "fraud"
    s = Served(redis_server.url, doc)
    ModelStore(r, "test", "fraud").publish(s.model.revision, 0, fraud_model())
    rows, labels = _samples(60, seed=9)
    with s.client as c:
        wait_until(lambda: s.dp.ready)
        ids = c.post("/v1/models/fraud:predict", json={"instances": rows[:40]}).json()["ids"]
        feedback = [{"id": i, "label": y} for i, y in zip(ids, labels[:40], strict=True)]
        got = c.post("/v1/models/fraud/feedback", json={"feedback": feedback})
        assert got.status_code == 202 and got.json() == {"accepted": 40}
        learn = {"instances": rows[40:50], "labels": labels[40:50]}
        assert c.post("/v1/models/fraud:learn", json=learn).status_code == 202

        kafka_broker.stop(keep=True)  # the brokers away: answered 503 within the timeout
        try:
            late = {"instances": rows[50:], "labels": labels[50:]}
            t0 = time.monotonic()
            away = c.post("/v1/models/fraud:learn", json=late)
            assert away.status_code == 503 and "retry" in away.json()["error"], away.text
            assert time.monotonic() - t0 < 15
        finally:
            kafka_broker.start()
        assert c.post("/v1/models/fraud:learn", json=late).status_code == 202  # the retry

    learner = LearnerProcess(s.model, r, checkpoint_seconds=0.0)
    learner.start()
    _run_until(learner, lambda: learner.counters["samples"] >= 60)
    learner.step(block_ms=200)
    assert learner.counters["samples"] == 60 and learner.counters["label_sum"] == sum(labels)
    learner.source.close()


def test_the_learner_reports_how_many_records_it_is_behind(r, kafka_broker) -> None:
    topics = _topics(kafka_broker, partitions=2)
    model = parse(_doc(kafka_broker, topics))
    rows, labels = _samples(800)
    produce(kafka_broker.bootstrap, topics["samples"], _one_row(rows[:500], labels[:500]), 2)
    p = LearnerProcess(model, r, checkpoint_seconds=0.0)
    p.start()
    _run_until(p, lambda: p.counters["samples"] == 500)
    assert p.measure_lag() == 0
    produce(kafka_broker.bootstrap, topics["samples"], _one_row(rows[500:], labels[500:]), 2)
    # the partitions' ends as the consumer's fetches see them
    wait_until(lambda: p.measure_lag() == 300, timeout=10, interval=0.1,
               message=lambda: f"a lag of 300; it is {p.measure_lag()}")  # fmt: skip
    assert p.status()["lag"] == "300" and p.metrics.lag_records._value.get() == 300
    _run_until(p, lambda: p.counters["samples"] == 800)
    assert p.measure_lag() == 0 and p.status()["lag"] == "0"


@pytest.mark.timeout(180)
def test_tideline_run_with_source_kafka_learns_the_labels_through_the_topics() -> None:
    import io

    from tideline.demo.local import run_local

    doc = yaml.safe_load((Path(__file__).parents[2] / "examples" / "fraud.yaml").read_text())
    summary = run_local(doc, duration=12, rate=800, source="kafka", out=io.StringIO())
    assert summary["source"] == "kafka"  # (a learner of a Kafka model reads no Redis stream)
    assert summary["request_errors"] == 0 and summary["labels_sent"] > 5000
    # the servers produced them, the learner consumed them (its lag: well under a second)
    assert summary["samples_learned"] >= 0.9 * summary["labels_sent"], summary


def test_a_message_that_killed_every_learner_that_read_it_is_dead_lettered(
    r, kafka_broker, monkeypatch
) -> None:
    from tideline.pods.sources import MAX_DELIVERIES

    topics = _topics(kafka_broker, partitions=1)
    model = parse(_doc(kafka_broker, topics))
    keys = Keys(model.namespace, model.name)
    rows, labels = _samples(6)
    produce(kafka_broker.bootstrap, topics["samples"], _one_row(rows, labels))
    with monkeypatch.context() as m:  # learners that die on the first message, unlearned
        m.setattr(LearnerProcess, "_learn_pending", lambda self, force: None)
        for _ in range(MAX_DELIVERIES):
            dying = LearnerProcess(model, r, checkpoint_seconds=0.0)
            dying.start()
            deadline = time.monotonic() + 10
            while len(dying.training.pending) < 6:
                assert time.monotonic() < deadline, len(dying.training.pending)
                dying.step(block_ms=50)
            dying.source.close()
    p = LearnerProcess(model, r, checkpoint_seconds=0.0)
    p.start()
    _run_until(p, lambda: p.counters["samples"] == 5)
    [(_, dead)] = r.xrange(keys.deadletter)
    assert dead[b"stream"].decode() == topics["samples"] and dead[b"entry"].endswith(b"-0.0")
    assert dead[b"reason"].startswith(b"poison: read by 10 learners")
    assert orjson.loads(orjson.loads(dead[b"fields"])["data"])["features"] == rows[0]
    assert p.counters["label_sum"] == sum(labels[1:])
