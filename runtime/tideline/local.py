"""``tideline run``: the learning loop on one machine, without a cluster.

Starts a real Redis (:mod:`tideline.embedded`) and the learner as a child
process - the same ``tideline learner`` a pod runs - then plays traffic from
:class:`tideline.simulate.SyntheticStream`: half the events arrive as
labelled samples, half as logged predictions whose labels come back later
and out of order through the feedback stream, as chargebacks do. Progress
is printed once a second; a JSON summary is the last line.
"""

from __future__ import annotations

import heapq
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import numpy as np
import orjson

from tideline.embedded import EmbeddedRedis, free_port
from tideline.simulate import SyntheticStream
from tideline.spec import OnlineModel
from tideline.store import Keys, ModelStore

TICK = 0.05


def _learner_status(client: Any, keys: Keys, revision: str) -> dict[str, Any]:
    raw = client.hgetall(keys.rev(revision, "learner"))
    status = {k.decode(): v.decode() for k, v in raw.items()}
    quality = orjson.loads(status.pop("quality", "{}"))
    return {**status, "quality": quality}


def run_local(
    model: OnlineModel,
    config_path: str,
    *,
    duration: float,
    rate: float,
    drift_at: float | None = None,
    seed: int = 7,
    out: Any = None,
) -> dict[str, Any]:
    out = out or sys.stdout
    revision = model.revision
    keys = Keys(model.namespace, model.name)
    features = [f.to_dict() for f in model.spec.model.features]
    drift_sample = int(drift_at * rate) if drift_at is not None else None
    stream = SyntheticStream(features, model.spec.model.task, seed=seed, drift_at=drift_sample)
    rng = np.random.default_rng(seed)
    with EmbeddedRedis() as server:
        client = server.client()
        metrics_port = free_port()
        print(f"redis      {server.url}", file=out)
        print(f"learner    metrics on http://127.0.0.1:{metrics_port}/metrics", file=out)
        print(
            f"model      {model.namespace}/{model.name} revision {revision}", file=out, flush=True
        )
        learner = subprocess.Popen(
            [sys.executable, "-m", "tideline.cli", "--log-level", "WARNING", "learner",
             "--config", config_path, "--redis", server.url, "--port", str(metrics_port)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        store = ModelStore(client, model.namespace, model.name)
        sent = labels_sent = 0
        due: list[tuple[float, int, bytes]] = []  # (time, tiebreak, feedback json)
        start = time.monotonic()
        next_print = start + 1.0
        drift_printed = False
        try:
            while (now := time.monotonic()) - start < duration:
                if learner.poll() is not None:
                    raise RuntimeError(f"the learner exited with status {learner.returncode}")
                target = int((now - start) * rate)
                n = target - sent
                if n > 0:
                    rows, y = stream.take(n)
                    pipe = client.pipeline(transaction=False)
                    wall = time.time()
                    for row, label in zip(rows, y.tolist(), strict=True):
                        if rng.random() < 0.5:
                            pipe.xadd(
                                keys.samples,
                                {"data": orjson.dumps({"features": row, "label": label})},
                            )
                        else:
                            pid = uuid.uuid4().hex
                            pred = {"ts": wall, "track": "stable", "ids": [pid], "rows": [row]}
                            pipe.xadd(
                                keys.predictions, {"data": orjson.dumps(pred)}, maxlen=200_000
                            )
                            delay = float(rng.uniform(0.2, 2.0))
                            heapq.heappush(
                                due, (now + delay, sent, orjson.dumps({"id": pid, "label": label}))
                            )
                        sent += 1
                    pipe.execute()
                if due and due[0][0] <= now:
                    pipe = client.pipeline(transaction=False)
                    while due and due[0][0] <= now:
                        _, _, body = heapq.heappop(due)
                        pipe.xadd(keys.feedback, {"data": body})
                        labels_sent += 1
                    pipe.execute()
                if drift_at is not None and not drift_printed and now - start >= drift_at:
                    print(f"{now - start:6.1f}s  >>> concept drift injected", file=out, flush=True)
                    drift_printed = True
                if now >= next_print:
                    next_print += 1.0
                    st = _learner_status(client, keys, revision)
                    ptr = store.pointers(revision)
                    q = st.get("quality", {})
                    acc = q.get("accuracy", q.get("rmse", float("nan")))
                    print(
                        f"{now - start:6.1f}s  sent {sent:>8}  learned {st.get('samples', '0'):>8}  "
                        f"versions latest={ptr.get('latest', '-')} served={ptr.get('served', '-')} "
                        f"lastGood={ptr.get('lastGood', '-')}  "
                        f"{'accuracy' if 'accuracy' in q else 'rmse'} {acc:.3f}  "
                        f"gate-rejections {st.get('gate_rejections', '0')}",
                        file=out,
                        flush=True,
                    )
                time.sleep(TICK)
        finally:
            learner.send_signal(signal.SIGTERM)
            try:
                learner.wait(15)
            except subprocess.TimeoutExpired:
                learner.kill()
                learner.wait()
        st = _learner_status(client, keys, revision)
        ptr = store.pointers(revision)
        summary = {
            "model": f"{model.namespace}/{model.name}",
            "revision": revision,
            "events_sent": sent,
            "labels_sent_late": labels_sent,
            "samples_learned": int(st.get("samples", 0)),
            "versions_published": int(st.get("next_version", 0)),
            "gate_rejections": int(st.get("gate_rejections", 0)),
            "dead_letters": int(client.xlen(keys.deadletter)),
            "pointers": ptr,
            "quality": st.get("quality", {}),
        }
        print(
            f"\nlearned {summary['samples_learned']} of {sent} events "
            f"({labels_sent} through delayed feedback), published {summary['versions_published']} versions, "
            f"{summary['gate_rejections']} held back by the gate, {summary['dead_letters']} dead letters.",
            file=out,
        )
        print(orjson.dumps(summary).decode(), file=out, flush=True)
        return summary
