"""kill -9 the learner process again and again: nothing lost, nothing learned twice, whether
its samples and labels come from Redis streams or Kafka topics, and whether it learns a
built-in, a team's own class or a River pipeline: for the last two, the model's own state,
as the next learner resumes it, holds every sample exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from tests.helpers import FRAUD_FEATURES, LoggedRequest, manifest, produce, wait_until
from tests.models.teams import Tally
from tideline.algorithms import Learner, make_learner
from tideline.contracts import Keys
from tideline.demo.simulate import SyntheticStream
from tideline.pods.learner import LearnerProcess
from tideline.signing import KEY_ENV
from tideline.spec import parse

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
PYTHONPATH = f"{ROOT / 'runtime'}:{ROOT}"  # (the team's classes: tests.models.teams)
KEY = "a-signing-key-for-the-crash-tests"  # (a model that is not a built-in is signed)


def _start(config: Path, url: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    return subprocess.Popen(
        [sys.executable, "-m", "tideline.cli", "--log-level", "WARNING", "learner",
         "--config", str(config), "--redis", url],
        env=env,
    )  # fmt: skip


def _status(r, keys: Keys, revision: str) -> dict[str, float]:
    """The learner's status fields that are numbers (its counters among them)."""
    out = {}
    for k, v in r.hgetall(keys.learner(revision)).items():
        try:
            out[k.decode()] = float(v)
        except ValueError:  # (quality, and a field it leaves empty: memoryLimitBytes)
            continue
    return out


def _kill_9_run(
    r, url: str, doc: dict, tmp_path: Path, send, clicks_only: bool = False, late: bool = False
) -> tuple[dict, list, list[float], int]:
    """20,000 labelled samples and labels, in 40 chunks, the learner killed -9 after six of
    them: ``send(samples, feedback)`` writes a chunk (one-row and packed samples, labels of
    predictions logged to Redis, a second label for one in five: never learned). The
    learner's status at the end, the rows and their labels. ``clicks_only``: labels are
    sent for the positive predictions alone (the others are learned with the manifest's
    ``labelDefault``, 0), a prediction's log entry its own or shared by a few; ``late``:
    one click in five comes past 'after' (its prediction logged 'after' and a second before
    the chunk, by a fourth server), sent once everything else is learned - its default
    learned - in three parts, the learner killed -9 after the first (``lateLabel:
    correct``). Also returns how many clicks came late.

    Each learner killed has learned and checkpointed rows of its own first, and is killed at
    a random moment after the next chunk is sent (while it reads, learns or checkpoints it):
    a learner killed while it starts (importing a team's model takes a second or two, more
    than a chunk) would prove nothing."""
    config = tmp_path / "model.yaml"
    config.write_text(yaml.safe_dump(doc))
    model = parse(doc)
    keys = Keys(model.namespace, model.name)
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=11).take(20_000)
    labels = y.tolist()
    rnd = random.Random(5)
    kill_at = sorted(rnd.sample(range(1, 40), 6))  # chunk numbers after which we kill -9
    proc = _start(config, url)
    kills = duplicates = 0
    servers = [uuid.uuid4().hex[:12] for _ in range(4)]  # (clicks_only: the logs they write)
    after = float(doc["spec"]["learning"].get("labelDefault", {}).get("after", "0s")[:-1])
    late_feedback: list[dict] = []
    learned = [0.0]  # samples checkpointed when each learner started, and at the end

    def samples_learned() -> float:
        assert proc.poll() is None, "the learner died"
        return _status(r, keys, model.revision).get("samples", 0.0)

    def learned_since_start() -> None:
        wait_until(lambda: samples_learned() > learned[-1], timeout=60,
                   message="the learner to learn something")  # fmt: skip

    try:
        for chunk in range(40):
            if chunk in kill_at:
                learned_since_start()
            samples, feedback = [], []
            # labelled samples: one-row entries and packed ones (1 to 64 rows, as :learn writes)
            even = list(range(chunk * 500, (chunk + 1) * 500, 2))
            while even:
                n = rnd.choice([1, 1, 7, 64])
                take, even = even[:n], even[n:]
                if len(take) == 1:
                    samples.append({"features": rows[take[0]], "label": labels[take[0]]})
                else:
                    samples.append({"instances": [rows[i] for i in take],
                                    "labels": [labels[i] for i in take]})  # fmt: skip
            pipe = r.pipeline(transaction=False)
            now = time.time()
            for i in range(chunk * 500 + 1, (chunk + 1) * 500, 2):
                # a logged prediction (a generated id, or the client's), and its label
                given = [uuid.uuid4().hex] if i % 4 == 1 else None
                clicked_late = late and labels[i] == 1.0 and i % 10 == 7
                if clicked_late:  # its default is due at once, its click sent at the end
                    logged = LoggedRequest([rows[i]], ids=given, ts=now - after - 1.0,
                                           instance=servers[3], seq=i)  # fmt: skip
                elif clicks_only:  # one entry a prediction, in the logs of three servers
                    logged = LoggedRequest([rows[i]], ids=given, ts=now,
                                           instance=servers[i % 3], seq=i)  # fmt: skip
                else:
                    logged = LoggedRequest([rows[i]], ids=given)
                [pid] = logged.write(pipe, keys).ids
                if clicks_only and labels[i] == 0:
                    continue  # no click: learned with the default label
                if clicked_late:
                    late_feedback.append({"id": pid, "label": labels[i]})
                    continue
                feedback.append({"id": pid, "label": labels[i]})
                if i % 10 == 3:  # and a second label, the other way: never learned
                    duplicates += 1
                    feedback.append({"id": pid, "label": 1 - labels[i]})
            pipe.execute()
            send(samples, feedback)
            time.sleep(rnd.uniform(0.0, 0.15))
            if chunk in kill_at:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                learned.append(_status(r, keys, model.revision).get("samples", 0.0))
                proc = _start(config, url)
        wait_until(lambda: samples_learned() >= len(y), timeout=120, interval=0.2,
                   message=lambda: f"every sample learned; {_status(r, keys, model.revision)}")  # fmt: skip
        lates = len(late_feedback)
        for part in range(3 if late_feedback else 0):  # the late clicks correct defaults
            send([], late_feedback[part::3])
            if part == 0:
                learned_since_start()
                time.sleep(rnd.uniform(0.0, 0.15))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                learned.append(_status(r, keys, model.revision).get("samples", 0.0))
                proc = _start(config, url)
        wait_until(lambda: samples_learned() >= len(y) + lates, timeout=120, interval=0.2,
                   message=lambda: f"every late click learned; {_status(r, keys, model.revision)}")  # fmt: skip
        time.sleep(1.5)  # had anything been queued twice, it would show by now
        status = _status(r, keys, model.revision)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert kills == 6 + late and learned == sorted(set(learned)), learned  # (each learned some)
    reasons = [e[1][b"reason"] for e in r.xrange(keys.deadletter)]
    assert duplicates >= (300 if clicks_only else 2000) and reasons == [b"duplicate"] * duplicates
    # v0, then one version per 2,000 updates, or a gate rejection in its place
    assert status["next_version"] + status["gate_rejections"] >= 10, status
    return status, rows, labels, lates


LEARNING = {"publishEvery": 2000, "maxBatchDelay": "50ms"}
# A team's own models (besides the manifest's built-in, sgd), whose state counts exactly what
# they learned (tests.models.teams): they learn without replay (replayed rows are learned
# again, by design), so their state must hold each sample of the stream once.
OWN_MODELS = {
    "custom": {"algorithm": "custom",
               "custom": {"class": "tests.models.teams:Tally", "params": {"feature": "merchant"}}},
    "river": {"algorithm": "river", "river": {"pipeline": "tests.models.teams:target_counts"}},
}  # fmt: skip


def _doc(algorithm: str, monkeypatch: pytest.MonkeyPatch, **spec: Any) -> dict:
    """The crash tests' manifest for ``sgd`` or a model of ``OWN_MODELS`` (and the key that one
    needs, in this process's environment and so the learners')."""
    if algorithm == "sgd":
        return manifest(learning=LEARNING, **spec)
    doc = manifest(learning={**LEARNING, "replay": {"size": 0, "fraction": 0.0}}, **spec)
    doc["spec"]["model"].update(OWN_MODELS[algorithm])
    monkeypatch.setenv(KEY_ENV, KEY)
    return doc


def _counts(learner: Learner) -> tuple[int, object]:
    """What a team's model says it learned, from its own state: how many samples, and its
    exact counts (a :class:`Tally`'s, or those of the River pipeline's ``target_counts``:
    per merchant, the samples and positive labels; its regression's updates)."""
    model = learner.model  # type: ignore[attr-defined]
    if isinstance(model, Tally):
        return sum(model.n), (model.n, model.positives, model.fingerprint)
    positives, n = model.estimator["TransformerUnion"].transformers.values()
    # (TargetAgg's groups: a defaultdict, in which a prediction for a value not learned yet
    # leaves a count of 0)
    per_value = {k: (positives._groups[k].get(), c.get()) for k, c in n._groups.items() if c.get()}
    learned = model.estimator["LogisticRegression"].optimizer.n_iterations
    return learned, (learned, per_value)


def _check_learned(client, doc: dict, rows: list, labels: list[float]) -> None:  # type: ignore[no-untyped-def]
    """The model's own state holds each sample once: as a learner resumes it from the
    checkpoint (verified with the key), it is that of the model learning the stream alone;
    and each version published holds as many samples as the learner had counted then."""
    model = parse(doc)
    if model.spec.model.algorithm not in OWN_MODELS:
        return  # (a built-in: its replay learns rows again; the counters say it all)
    p = LearnerProcess(model, client)
    p.start()  # as the next learner would
    p.source.close()
    alone = make_learner(model.spec.model.to_dict())
    alone.learn_many(alone.schema.encode(rows), np.array(labels))
    assert p.learner.n_seen == len(labels) and p.counters["samples"] == len(labels)
    assert _counts(p.learner) == _counts(alone)
    versions = p.store.versions(p.revision)
    assert len(versions) >= 5, versions
    for v in versions:
        learner, meta = p.store.load(p.revision, v)
        assert _counts(learner)[0] == learner.n_seen == meta["samples"], v


# clicks only: a prediction no label came for within 3 s is learned with 0
CLICKS = {"labelDefault": {"value": 0, "after": "3s"}}


@pytest.mark.parametrize(
    ("redis_kind", "algorithm", "clicks_only", "late"),
    [
        pytest.param("one redis", "sgd", False, False, id="a built-in model on one redis"),
        pytest.param(
            "redis cluster", "sgd", False, False, id="a built-in model on a redis cluster"
        ),  # fmt: skip
        # (a team's model on one Redis only: what a cluster changes - where the keys live - is
        # the same for every model, and each case takes 15-20 s on two cores)
        pytest.param("one redis", "custom", False, False, id="a team's own class on one redis"),
        pytest.param("one redis", "river", False, False, id="a River pipeline on one redis"),
        pytest.param("one redis", "sgd", True, False, id="clicks only, the rest default labels"),
        pytest.param("one redis", "custom", True, False, id="clicks only, a team's own class"),
        pytest.param("one redis", "sgd", True, True, id="clicks only, late ones corrected"),
    ],
    indirect=["redis_kind"],
)
def test_kill_9_at_random_moments_loses_and_repeats_nothing(
    redis_under_test, algorithm: str, clicks_only: bool, late: bool, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    r = redis_under_test.client()
    r.flushall()
    doc = _doc(algorithm, monkeypatch)
    if clicks_only:
        doc["spec"]["learning"].update(CLICKS, lateLabel="correct" if late else "ignore")
    model = parse(doc)
    keys = Keys(model.namespace, model.name)

    rnd = random.Random(9)

    def send(samples: list, feedback: list) -> None:
        # labels one an entry, and packed ones (1 to 64, as the server's /feedback writes):
        # a packed entry's labels are learned across checkpoints, so kills fall between them
        packed = []
        while feedback:
            n = rnd.choice([1, 1, 7, 64])
            take, feedback = feedback[:n], feedback[n:]
            packed.append(take[0] if n == 1 else {"feedback": take})
        pipe = r.pipeline(transaction=False)
        for stream, values in ((keys.samples, samples), (keys.feedback, packed)):
            for v in values:
                pipe.xadd(stream, {"data": orjson.dumps(v)})
        pipe.execute()

    status, rows, labels, lates = _kill_9_run(r, redis_under_test.url, doc, tmp_path, send,
                                              clicks_only, late)  # fmt: skip
    assert (lates > 100) == late
    # every sample once; a late click beside its default, each once
    assert status["samples"] == len(labels) + lates and status["label_sum"] == sum(labels)
    # every prediction with no click learned with the default, once (a late click's too)
    assert status.get("defaults", 0) == (labels[1::2].count(0.0) + lates if clicks_only else 0)
    assert status.get("corrected", 0) == lates
    assert r.xpending(keys.samples, keys.learner_group(model.revision))["pending"] == 0
    assert r.xpending(keys.feedback, keys.learner_group(model.revision))["pending"] == 0
    _check_learned(r, doc, rows, labels)


@pytest.mark.parametrize(
    "algorithm",
    [pytest.param("sgd", id="a built-in model"), pytest.param("custom", id="a team's own class")],
)
def test_kill_9_with_kafka_topics_loses_and_repeats_nothing(
    redis_server, kafka_broker, algorithm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = redis_server.client()
    r.flushall()
    topics = {
        "samples": f"crash-{uuid.uuid4().hex[:8]}",
        "feedback": f"crash-labels-{uuid.uuid4().hex[:8]}",
    }
    for t in topics.values():
        kafka_broker.create_topic(t, 3)
    doc = _doc(algorithm, monkeypatch, source={"kafka": {
        "bootstrapServers": kafka_broker.bootstrap, "topics": topics, "startFrom": "earliest"}})  # fmt: skip

    def send(samples: list, feedback: list) -> None:
        produce(kafka_broker.bootstrap, topics["samples"], samples, partitions=3)
        produce(kafka_broker.bootstrap, topics["feedback"], feedback, partitions=3)

    status, rows, labels, _ = _kill_9_run(r, redis_server.url, doc, tmp_path, send)
    assert status["samples"] == len(labels) and status["label_sum"] == sum(labels)
    _check_learned(r, doc, rows, labels)
