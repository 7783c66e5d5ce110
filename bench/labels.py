"""Late labels at a steady rate: what the label join holds, and how fast it joins.

Two measurements of examples/fraud.yaml, through the real processes (``tideline
server``, ``learner`` and ``monitor``, started with the CLI) on an embedded
redis-server:

* **soak**: ``--minutes`` (5) at ``--rate`` (3,000) predictions/s over HTTP,
  requests of 8 rows, every label sent through ``/feedback`` ``--delay`` (60 to
  100 s) after its prediction, with ``labelWindow`` at ``--window`` (2 min), so
  the window fills within the run. Every 15 s: the resident memory of the
  learner, the monitor and the server, Redis's used memory and the bytes of
  the prediction log (its keys' ``MEMORY USAGE``), labels learned. Reported:
  each process's memory when the first labels are joined and at the end, Redis's
  growth over the last two minutes (the window full), bytes of Redis per
  logged prediction.
* **join rate**: ``--join`` (200,000) rows predicted twice through the server (64
  rows a request; a prediction takes one label), labels put on the feedback stream, then a learner
  started: labels joined and learned a second, from its start to the last one,
  and steady (from the first learned to 90 %, polled every 20 ms): labels one an
  entry, and packed 64 an entry (what a server writes for a ``/feedback``
  request of 64), next to the same learner learning as many labelled samples
  (``samples`` stream, one entry each) in the same run.

The script speaks only HTTP, the CLI and Redis (with the keys of the tideline it
imports), so it measures any version of tideline: ``PYTHONPATH=<other checkout>/runtime python bench/labels.py``.
Run with ``make bench`` or ``python bench/labels.py --minutes 2``.
"""

from __future__ import annotations

import argparse
import heapq
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import yaml

import tideline
from tideline.contracts import Keys
from tideline.demo.embedded import EmbeddedRedis, free_port
from tideline.demo.simulate import SyntheticStream
from tideline.spec import parse

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = str(Path(tideline.__file__).resolve().parents[1])  # the tideline under test


def learned_total(port: int) -> int:
    """``tideline_learner_samples_total`` from the learner's /metrics (0 before it answers)."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return 0
    for line in body.decode().splitlines():
        if line.startswith("tideline_learner_samples_total "):
            return int(float(line.split()[1]))
    return 0


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Loop:
    """Redis, and the model's processes started with the CLI."""

    def __init__(self, manifest: dict[str, Any], workdir: Path) -> None:
        self.manifest = manifest
        self.redis = EmbeddedRedis().start()
        self.r = self.redis.client()
        self.config = workdir / "model.yaml"
        self.config.write_text(yaml.safe_dump(manifest))
        self.model = parse(manifest)
        self.keys = Keys(self.model.namespace, self.model.name)  # the version under test's
        self.port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.workdir = workdir
        self._conn: http.client.HTTPConnection | None = None

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": RUNTIME, "TIDELINE_REDIS_URL": self.redis.url}
        log = (self.workdir / f"{name}.log").open("wb")
        cmd = [sys.executable, "-m", "tideline.cli", "--log-level", "WARNING", name,
               "--config", str(self.config), *args]  # fmt: skip
        self.procs[name] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self.procs[name]

    def server(self) -> None:
        self.start("server", "--port", str(self.port))
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _ = self.post(f"/v2/models/{self.model.name}/ready", None, "GET")
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not get ready (is the learner running?)")
            time.sleep(0.2)

    def post(self, path: str, body: Any, method: str = "POST") -> tuple[int, Any]:
        conn = self._conn
        if conn is None:
            conn = self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        data = orjson.dumps(body) if body is not None else None
        try:
            conn.request(method, path, body=data, headers={"content-type": "application/json"})
            resp = conn.getresponse()
            return resp.status, orjson.loads(resp.read() or b"null")
        except (OSError, http.client.HTTPException):
            self._conn = None
            raise

    def learned(self) -> int:
        raw = self.r.hget(self.keys.learner(self.model.revision), "samples")
        return int(raw or 0)

    def log_bytes(self) -> int:
        """Bytes the prediction log holds: every key of it (streams, indexes), by MEMORY USAGE."""
        prefix = self.keys.prefix + ":"
        total = 0
        for pattern in ("log:*", "log-ids:*", "predictions"):
            for key in self.r.scan_iter(prefix + pattern, count=1000):
                total += self.r.memory_usage(key, samples=0) or 0
        return total

    def stop(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        self.redis.stop()


def soak(args: argparse.Namespace, manifest: dict[str, Any]) -> dict[str, Any]:
    m = json.loads(json.dumps(manifest))
    m["spec"]["learning"]["labelWindow"] = args.window
    with tempfile.TemporaryDirectory(prefix="tideline-bench-labels-") as d:
        loop = Loop(m, Path(d))
        try:
            loop.start("learner")
            loop.start("monitor")
            loop.server()
            return _soak(args, loop)
        finally:
            loop.stop()


def _soak(args: argparse.Namespace, loop: Loop) -> dict[str, Any]:
    features = [f.to_dict() for f in loop.model.spec.model.features]
    stream = SyntheticStream(features, "binary", seed=1)
    rng = random.Random(2)
    path = f"/v1/models/{loop.model.name}"
    due: list[tuple[float, int, dict[str, Any]]] = []
    n = sent = predictions = errors = 0
    samples: list[dict[str, Any]] = []
    start = time.monotonic()
    end = start + args.minutes * 60
    next_sample = start
    first_joined = None
    rows_per_request = 8
    while (now := time.monotonic()) < end:
        target = int((now - start) * args.rate)
        while predictions < target:
            rows, y = stream.take(rows_per_request)
            status, body = loop.post(f"{path}:predict", {"instances": rows})
            if status != 200:
                errors += 1
                continue
            predictions += rows_per_request
            for pid, label in zip(body["ids"], y.tolist(), strict=True):
                n += 1
                heapq.heappush(
                    due, (now + rng.uniform(*args.delay), n, {"id": pid, "label": label})
                )
        batch: list[dict[str, Any]] = []
        while due and due[0][0] <= now and len(batch) < 1000:
            batch.append(heapq.heappop(due)[2])
        if batch:
            status, _ = loop.post(f"{path}/feedback", {"feedback": batch})
            sent += len(batch) if status == 202 else 0
        if now >= next_sample:
            next_sample += 15
            learned = loop.learned()
            if first_joined is None and sent:
                first_joined = now - start
            samples.append({
                "t": round(now - start),
                "learner_mb": round(_rss_mb(loop.procs["learner"].pid), 1),
                "monitor_mb": round(_rss_mb(loop.procs["monitor"].pid), 1),
                "server_mb": round(_rss_mb(loop.procs["server"].pid), 1),
                "redis_mb": round(loop.r.info("memory")["used_memory"] / 2**20, 1),
                "log_mb": round(loop.log_bytes() / 2**20, 1),
                "predictions": predictions,
                "labels_sent": sent,
                "learned": learned,
            })  # fmt: skip
            print(json.dumps(samples[-1]), flush=True)
        time.sleep(0.001)
    deadline = time.monotonic() + 30
    while loop.learned() < sent and time.monotonic() < deadline:
        time.sleep(0.5)
    dead: dict[str, int] = {}
    key = loop.keys.deadletter
    for _, fields in loop.r.xrange(key):
        reason = fields[b"reason"].decode().split(":")[0]
        dead[reason] = dead.get(reason, 0) + 1
    return {"samples": samples, "labels_sent": sent, "learned": loop.learned(),
            "deadletters": dead, "errors": errors, "first_labels_at": first_joined,
            "redis_mb_by_key": _by_family(loop)}  # fmt: skip


def _by_family(loop: Loop) -> dict[str, float]:
    """Redis memory by kind of key (log, log-ids, taken, feedback, ...), MiB, at the end."""
    prefix = loop.keys.prefix + ":"
    out: dict[str, float] = {}
    for key in loop.r.scan_iter(prefix + "*", count=1000):
        family = key.decode()[len(prefix) :].split(":")[0]
        out[family] = out.get(family, 0.0) + (loop.r.memory_usage(key, samples=0) or 0) / 2**20
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def join_rate(args: argparse.Namespace, manifest: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tideline-bench-join-") as d:
        loop = Loop(manifest, Path(d))
        try:
            return _join_rate(args, loop)
        finally:
            loop.stop()


def _join_rate(args: argparse.Namespace, loop: Loop) -> dict[str, Any]:
    learner = loop.start("learner")
    loop.server()
    features = [f.to_dict() for f in loop.model.spec.model.features]
    rows, y = SyntheticStream(features, "binary", seed=3).take(args.join)
    labels = y.tolist()
    ids: list[str] = []  # the rows predicted twice: a prediction takes one label
    for _ in range(2):
        for i in range(0, args.join, 64):
            status, body = loop.post(f"/v1/models/{loop.model.name}:predict",
                                     {"instances": rows[i : i + 64]})  # fmt: skip
            assert status == 200, body
            ids += body["ids"]
    time.sleep(1.0)  # the server's log writes lag its answers by 20 ms
    learner.terminate()
    learner.wait(20)
    k = loop.keys.prefix
    out = {}
    for kind in ("samples", "feedback", "feedback packed"):
        stream = kind.split()[0]
        pipe = loop.r.pipeline(transaction=False)
        step = 64 if kind == "feedback packed" else 1
        at = args.join if step > 1 else 0  # the second predictions' ids
        for i in range(0, args.join, step):
            if kind == "samples":
                data: Any = {"features": rows[i], "label": labels[i]}
            elif step == 1:
                data = {"id": ids[at + i], "label": labels[i]}
            else:  # what the servers write for a /feedback request of 64 labels
                data = {"feedback": [{"id": ids[at + j], "label": labels[j]}
                                     for j in range(i, min(i + step, args.join))]}  # fmt: skip
            pipe.xadd(f"{k}:{stream}", {"data": orjson.dumps(data)})
            if len(pipe) >= 5000:
                pipe.execute()
        pipe.execute()
        t0 = time.monotonic()
        port = free_port()
        proc = loop.start("learner", "--port", str(port))
        deadline = t0 + 600
        first = steady = None  # (time, learned) at the first rows learned, and at 90 %
        # the learner's own counter, per mini-batch (its Redis hash moves once a checkpoint)
        while (n := learned_total(port)) < args.join:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{kind}: {n} of {args.join} learned")
            if n and first is None:
                first = (time.monotonic(), n)
            if n >= 0.9 * args.join and steady is None and first is not None:
                steady = (time.monotonic(), n)
            time.sleep(0.02)
        seconds = time.monotonic() - t0
        out[kind] = {"per_second": round(args.join / seconds), "seconds": round(seconds, 2)}
        if first is not None and steady is not None and steady[0] > first[0]:
            # without the start and the last partial mini-batch's wait
            out[kind]["steady_per_second"] = round((steady[1] - first[1]) / (steady[0] - first[0]))
        print(kind, json.dumps(out[kind]), flush=True)
        proc.terminate()
        proc.wait(20)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=3000.0)
    ap.add_argument("--window", default="2m")
    ap.add_argument("--delay", type=float, nargs=2, default=(60.0, 100.0))
    ap.add_argument("--join", type=int, default=200_000)
    ap.add_argument("--skip-soak", action="store_true")
    args = ap.parse_args()
    manifest = yaml.safe_load((ROOT / "examples" / "fraud.yaml").read_text())
    manifest["metadata"]["namespace"] = "bench"
    print(f"tideline from {RUNTIME}")
    report: dict[str, Any] = {"join": join_rate(args, manifest)}
    if not args.skip_soak:
        report["soak"] = soak(args, manifest)
        s = report["soak"]["samples"]
        warm = next((x for x in s if x["learned"] > 0), s[-1])
        last, full = s[-1], [x for x in s if x["t"] >= s[-1]["t"] - 120]
        report["summary"] = {
            "learner_mb": [warm["learner_mb"], last["learner_mb"]],
            "monitor_mb": [warm["monitor_mb"], last["monitor_mb"]],
            "server_mb": [warm["server_mb"], last["server_mb"]],
            "redis_mb_last_2_min": [full[0]["redis_mb"], last["redis_mb"]],
            # the log's growth per prediction while the window fills (nothing trimmed yet)
            "log_bytes_per_prediction": round(
                (s[4]["log_mb"] - s[1]["log_mb"])
                * 2**20
                / max(1, s[4]["predictions"] - s[1]["predictions"]),
                1,
            ),  # fmt: skip
            "redis_mb_by_key": report["soak"]["redis_mb_by_key"],
            "labels": {
                "sent": report["soak"]["labels_sent"],
                "learned": report["soak"]["learned"],
                "deadletters": report["soak"]["deadletters"],
            },  # fmt: skip
        }
    print(json.dumps({k: v for k, v in report.items() if k != "soak"}, indent=1))


if __name__ == "__main__":
    main()
