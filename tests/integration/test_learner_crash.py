"""kill -9 the learner process again and again: nothing lost, nothing learned twice, whether
its samples and labels come from Redis streams or Kafka topics."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
import yaml

from tests.helpers import FRAUD_FEATURES, LoggedRequest, manifest, produce
from tideline.contracts import Keys
from tideline.demo.simulate import SyntheticStream
from tideline.spec import parse

pytestmark = pytest.mark.integration

RUNTIME = str(Path(__file__).parents[2] / "runtime")


def _start(config: Path, url: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": RUNTIME}
    return subprocess.Popen(
        [sys.executable, "-m", "tideline.cli", "--log-level", "WARNING", "learner",
         "--config", str(config), "--redis", url],
        env=env,
    )  # fmt: skip


def _status(r, keys: Keys, revision: str) -> dict[str, float]:
    raw = r.hgetall(keys.learner(revision))
    return {k.decode(): float(v) for k, v in raw.items() if k != b"quality"}


def _kill_9_run(r, url: str, doc: dict, tmp_path: Path, send) -> tuple[dict, list[float]]:
    """20,000 labelled samples and labels, in 40 chunks, the learner killed -9 after six of
    them: ``send(samples, feedback)`` writes a chunk (one-row and packed samples, labels of
    predictions logged to Redis, a second label for one in five: never learned). The
    learner's status at the end, and the labels."""
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
    try:
        for chunk in range(40):
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
            for i in range(chunk * 500 + 1, (chunk + 1) * 500, 2):
                # a logged prediction (a generated id, or the client's), and its label
                given = [uuid.uuid4().hex] if i % 4 == 1 else None
                [pid] = LoggedRequest([rows[i]], ids=given).write(pipe, keys).ids
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
                proc = _start(config, url)
        deadline = time.monotonic() + 120
        while _status(r, keys, model.revision).get("samples", 0) < len(y):
            assert proc.poll() is None, "the learner died"
            assert time.monotonic() < deadline, str(_status(r, keys, model.revision))
            time.sleep(0.2)
        time.sleep(1.5)  # had anything been queued twice, it would show by now
        status = _status(r, keys, model.revision)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert kills == 6
    reasons = [e[1][b"reason"] for e in r.xrange(keys.deadletter)]
    assert duplicates == 2000 and reasons == [b"duplicate"] * duplicates
    # v0, then one version per 2,000 updates, or a gate rejection in its place
    assert status["next_version"] + status["gate_rejections"] >= 10, status
    return status, labels


LEARNING = {"publishEvery": 2000, "maxBatchDelay": "50ms"}


def test_kill_9_at_random_moments_loses_and_repeats_nothing(backend, tmp_path: Path) -> None:
    r = backend.client()
    r.flushall()
    doc = manifest(learning=LEARNING)
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

    status, labels = _kill_9_run(r, backend.url, doc, tmp_path, send)
    assert status["samples"] == len(labels) and status["label_sum"] == sum(labels)
    assert r.xpending(keys.samples, keys.learner_group(model.revision))["pending"] == 0
    assert r.xpending(keys.feedback, keys.learner_group(model.revision))["pending"] == 0


def test_kill_9_with_kafka_topics_loses_and_repeats_nothing(
    redis_server, kafka_broker, tmp_path: Path
) -> None:
    r = redis_server.client()
    r.flushall()
    topics = {
        "samples": f"crash-{uuid.uuid4().hex[:8]}",
        "feedback": f"crash-labels-{uuid.uuid4().hex[:8]}",
    }
    for t in topics.values():
        kafka_broker.create_topic(t, 3)
    doc = manifest(learning=LEARNING, source={"kafka": {
        "bootstrapServers": kafka_broker.bootstrap, "topics": topics, "startFrom": "earliest"}})  # fmt: skip

    def send(samples: list, feedback: list) -> None:
        produce(kafka_broker.bootstrap, topics["samples"], samples, partitions=3)
        produce(kafka_broker.bootstrap, topics["feedback"], feedback, partitions=3)

    status, labels = _kill_9_run(r, redis_server.url, doc, tmp_path, send)
    assert status["samples"] == len(labels) and status["label_sum"] == sum(labels)
