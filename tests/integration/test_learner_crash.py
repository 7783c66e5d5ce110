"""kill -9 the learner process again and again: nothing lost, nothing learned twice."""

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

from tests.helpers import FRAUD_FEATURES, LoggedRequest, manifest
from tideline.simulate import SyntheticStream
from tideline.spec import parse
from tideline.store import Keys

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
    raw = r.hgetall(keys.rev(revision, "learner"))
    return {k.decode(): float(v) for k, v in raw.items() if k != b"quality"}


def test_kill_9_at_random_moments_loses_and_repeats_nothing(backend, tmp_path: Path) -> None:
    r = backend.client()
    r.flushall()
    doc = manifest(learning={"checkpointEvery": 2000, "maxBatchDelay": "50ms"})
    config = tmp_path / "model.yaml"
    config.write_text(yaml.safe_dump(doc))
    model = parse(doc)
    keys = Keys(model.namespace, model.name)
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=11).take(20_000)
    labels = y.tolist()
    rnd = random.Random(5)
    kill_at = sorted(rnd.sample(range(1, 40), 6))  # chunk numbers after which we kill -9

    proc = _start(config, backend.url)
    kills = duplicates = 0
    try:
        for chunk in range(40):
            pipe = r.pipeline(transaction=False)
            # labelled samples: one-row entries and packed ones (1 to 64 rows, as :learn writes)
            even = list(range(chunk * 500, (chunk + 1) * 500, 2))
            while even:
                n = rnd.choice([1, 1, 7, 64])
                take, even = even[:n], even[n:]
                if len(take) == 1:
                    data = {"features": rows[take[0]], "label": labels[take[0]]}
                else:
                    data = {
                        "instances": [rows[i] for i in take],
                        "labels": [labels[i] for i in take],
                    }
                pipe.xadd(keys.samples, {"data": orjson.dumps(data)})
            for i in range(chunk * 500 + 1, (chunk + 1) * 500, 2):
                # a logged prediction (a generated id, or the client's), and its label
                given = [uuid.uuid4().hex] if i % 4 == 1 else None
                [pid] = LoggedRequest([rows[i]], ids=given).write(pipe, keys).ids
                label = {"id": pid, "label": labels[i]}
                pipe.xadd(keys.feedback, {"data": orjson.dumps(label)})
                if i % 10 == 3:  # and a second label, the other way: never learned
                    duplicates += 1
                    again = {"id": pid, "label": 1 - labels[i]}
                    pipe.xadd(keys.feedback, {"data": orjson.dumps(again)})
            pipe.execute()
            time.sleep(rnd.uniform(0.0, 0.15))
            if chunk in kill_at:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                proc = _start(config, backend.url)
        deadline = time.monotonic() + 90
        while _status(r, keys, model.revision).get("samples", 0) < len(y):
            assert proc.poll() is None, "the learner died"
            assert time.monotonic() < deadline, str(_status(r, keys, model.revision))
            time.sleep(0.2)
        time.sleep(1.5)  # had anything been queued twice, it would show by now
        status = _status(r, keys, model.revision)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert kills == 6
    assert status["samples"] == len(y)
    assert status["label_sum"] == y.sum()
    assert r.xpending(keys.samples, keys.learner_group(model.revision))["pending"] == 0
    assert r.xpending(keys.feedback, keys.learner_group(model.revision))["pending"] == 0
    reasons = [e[1][b"reason"] for e in r.xrange(keys.deadletter)]
    assert duplicates == 2000 and reasons == [b"duplicate"] * duplicates
    # v0, then one version per 2,000 updates, or a gate rejection in its place
    assert status["next_version"] + status["gate_rejections"] >= 10, status
