"""Clicks only: what ``spec.learning.labelDefault`` buys, and what it costs.

On an embedded redis-server, in this process (the learner's own class, no HTTP):

* **calibration**: ``--n`` (100,000) predictions logged as servers log them (64 rows an
  entry, three servers) from a stream with a known click-through rate (``--ctr``: 1, 3
  and 5 %: a logistic model of 8 numeric features, its bias set for the rate), and a
  click sent for each positive after a log-normal delay (its median an eighth of
  ``after``); nothing for the rest. One learner with ``labelDefault: {value: 0, after:
  2s}``, one without (what the same stream gives without it: the clicks alone), and one
  that is sent every label (the non-clicks too): what the learner makes of the stream
  with nothing missing. Side by side, ``ftrl`` (the ads example's; ``--algorithm``),
  batches of 64. Reported: each learner's mean predicted probability on 20,000 fresh rows
  as the stream ends, against the true rate there, and the relative error.
* **late clicks** (``lateLabel``): the same with the clicks' median delay at ``after``
  (half of them come past it), ``labelDefault`` with ``lateLabel: ignore`` (the late
  clicks dead-lettered) and with ``correct`` (learned beside their defaults, weighted:
  :mod:`tideline.correction`), beside the learner sent every label.
* **cost**: the defaults issued a second - :meth:`DefaultLabels.issue` alone over the same
  log (read, marks asked, rows given the default; nothing learned) - next to the rate the
  same log was written at here (``predlog.encode`` and a pipelined ``XADD``: what a
  server's log writer sends).

``--rates`` measures the issue's check instead, "defaults issued per second >= one server
worker's logging rate", side by side in one run: ``--rounds`` (3) rounds, each of

* **one server worker logging**: the ``tideline server`` process (one worker, started with
  the CLI) answering requests of ``--rows`` (64) rows for ``--seconds`` (5; wrk, 64
  connections, as bench/ingest.py drives it), every one logged through its own log writer; its rate is the
  rows in its log over the time its entries span;
* **DefaultLabels.issue over that log**: the round's rows given the default, once every one
  is ``after`` old (nothing learned, nothing marked);
* **the learner over that log**: a ``LearnerProcess`` with ``labelDefault`` (this process;
  no label is ever sent), from its first turn to the round's last default learned (issuing,
  learning, marks and cursors checkpointed every second),

and each round's ratios to the logging rate; the rounds' median and range.

Run with ``python bench/defaults.py`` (about a minute) or ``python bench/defaults.py
--rates`` (wrk installed); ``PYTHONPATH=<other checkout>/runtime`` measures another version.
"""

from __future__ import annotations

import argparse
import heapq
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from tideline import predlog
from tideline.contracts import Keys
from tideline.demo.embedded import EmbeddedRedis
from tideline.pods.defaults import CLOCK_SLACK, DefaultLabels
from tideline.pods.join import LogJoin
from tideline.pods.learner import LearnerProcess
from tideline.spec import parse

FEATURES = [f"x{i}" for i in range(8)]
AFTER = 2.0
HOLDOUT = 20_000
SERVERS = [os.urandom(predlog.INSTANCE_HEX // 2).hex() for _ in range(3)]


def manifest(name: str, default: bool, algorithm: str = "ftrl", late: str = "ignore") -> dict:
    learning: dict = {"batchSize": 64, "maxBatchDelay": "20ms", "publishEvery": 1_000_000,
                      "labelWindow": "10m", "replay": {"size": 0, "fraction": 0.0}}  # fmt: skip
    if default:
        learning["labelDefault"] = {"value": 0, "after": f"{AFTER}s"}
        learning["lateLabel"] = late
    return {
        "apiVersion": "tideline.dev/v1alpha1",
        "kind": "OnlineModel",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {
            "model": {
                "task": "binary",
                "algorithm": algorithm,
                "features": [{"name": f, "type": "numeric"} for f in FEATURES],
            },  # fmt: skip
            "learning": learning,
        },
    }


class Stream:
    """Rows of a logistic model whose positives are ``ctr`` of the rows, as near as a bias
    makes them."""

    def __init__(self, ctr: float, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.w = self.rng.normal(0, 0.8, len(FEATURES))
        z = self.rng.normal(size=(50_000, len(FEATURES))) @ self.w
        lo, hi = -20.0, 5.0  # the bias whose mean probability is ctr (bisection)
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(z + mid)))) < ctr else (lo, mid)
        self.b = (lo + hi) / 2

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X = self.rng.normal(size=(n, len(FEATURES)))
        p = 1 / (1 + np.exp(-(X @ self.w + self.b)))
        return X, p, (self.rng.random(n) < p).astype(float)


def log(r, keys: Keys, X: np.ndarray, now: float | None = None, seq: int = 0):  # type: ignore[no-untyped-def]  # fmt: skip
    """The rows logged as three servers log them, 64 an entry, at ``now``: their ids, and
    the seconds it took (encoding and XADD)."""
    now = time.time() if now is None else now
    ids: list[str] = []
    start = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for k, at in enumerate(range(0, len(X), 64), start=seq):
        rows = [dict(zip(FEATURES, x, strict=True)) for x in X[at : at + 64].tolist()]
        instance, entry = SERVERS[k % 3], f"{int(now * 1000)}-{k}"
        secret = os.urandom(predlog.SECRET_HEX // 2).hex()
        meta = predlog.Meta(secret=secret, models={"stable": ("bench", 0)})
        fields = predlog.encode([meta], [orjson.dumps([0.5] * len(rows))],
                                [orjson.dumps({"instances": rows})])  # fmt: skip
        pipe.xadd(keys.log(instance), fields, id=entry)
        pipe.zadd(keys.logs, {instance: now})
        prefix = predlog.id_prefix(instance, entry, 0, secret)
        ids += [f"{prefix}{i}" for i in range(len(rows))]
        if k % 100 == 99:
            pipe.execute()
    pipe.execute()
    return ids, time.perf_counter() - start


def run(r, name: str, stream: Stream, n: int, rate: float, algorithm: str,  # type: ignore[no-untyped-def]
        arms: tuple[str | None, str | None] = ("ignore", None), median: float = AFTER / 8):  # fmt: skip
    """The stream at ``rate`` predictions/s, its clicks after a log-normal delay (its median
    ``median``), to two learners of one model's logs and labels (``arms``: with the default
    and that ``lateLabel``, or without it: None); and to a third, of another model's copy of
    the logs, that gets every label (the non-clicks too, with the same delays): what the
    learner makes of the stream with nothing missing. Each learner when the stream ends (a
    live model), and the seconds the log's writing took."""
    learners = [
        LearnerProcess(
            parse(manifest(name, late is not None, algorithm, late or "ignore")),
            r,
            checkpoint_seconds=1.0,
        )  # fmt: skip
        for late in arms
    ]
    every = LearnerProcess(parse(manifest(f"{name}-all", False, algorithm)), r,
                           checkpoint_seconds=1.0)  # fmt: skip
    learners.append(every)
    for p in learners:
        p.start()
    keys = learners[0].keys
    rng = np.random.default_rng(1)
    due: list[tuple[float, str]] = []
    sent = seq = 0
    wrote = 0.0
    start = time.time()
    while sent < n:
        now = time.time()
        k = min(n - sent, int((now - start) * rate) - sent)
        if k >= 64 or 0 < k == n - sent:  # (the stream's last rows may be fewer than 64)
            X, _, y = stream.take(k)
            ids, took = log(r, keys, X, now, seq)
            copies, _ = log(r, every.keys, X, now, seq)
            wrote += took
            seq += len(ids) // 64 + 1
            sent += k
            for pid, copy, label in zip(ids, copies, y.tolist(), strict=True):
                at = now + median * float(rng.lognormal())
                if label:
                    heapq.heappush(due, (at, keys.feedback, pid, 1))
                heapq.heappush(due, (at, every.keys.feedback, copy, int(label)))
        pipe = r.pipeline(transaction=False)
        while due and due[0][0] <= now:
            _, stream_key, pid, label = heapq.heappop(due)
            pipe.xadd(stream_key, {"data": orjson.dumps({"id": pid, "label": label})})
        pipe.execute()
        for p in learners:
            p.step(block_ms=1)
    for p in learners:
        p.flush()
    return learners, wrote


def calibration(stream: Stream, learners: tuple[LearnerProcess, ...]) -> list[str]:
    """The true rate on fresh rows of the stream, then each learner's mean predicted rate on
    them and its relative error (its source closed: the run is over)."""
    Xh, ph, _ = stream.take(HOLDOUT)
    truth = float(ph.mean())
    row = [f"{truth:.4f}"]
    for p in learners:
        predicted = float(np.mean(p.learner.predict_many(Xh)))
        row += [f"{predicted:.4f}", f"{(predicted - truth) / truth:+.1%}"]
        p.source.close()
    return row


def issue_alone(r, n: int) -> float:  # type: ignore[no-untyped-def]
    """Defaults/s of :meth:`DefaultLabels.issue` over a log of ``n`` rows, nothing learned."""
    model = parse(manifest("issue", True))
    keys = Keys(model.namespace, model.name)
    log(r, keys, np.random.default_rng(0).normal(size=(n, len(FEATURES))))
    join = LogJoin(r, keys, 600.0, "bench", default_after=AFTER)
    d = DefaultLabels(r, keys, join, 0.0, AFTER)
    d.start(None)
    until = time.time() + AFTER + 1
    start = time.perf_counter()
    while d.issued < n:
        d.issue(until)
    return n / (time.perf_counter() - start)


def issue_round(r, keys: Keys, since: str) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """:meth:`DefaultLabels.issue` over the log from ``since`` on (every row of it ``after``
    old): the rows given the default, and how many a second."""
    join = LogJoin(r, keys, 600.0, "bench-rates", default_after=AFTER)
    d = DefaultLabels(r, keys, join, 0.0, AFTER)
    d.start(None, fresh=since)
    until = time.time()
    start = time.perf_counter()
    while d.issue(until):
        pass
    return d.issued, d.issued / (time.perf_counter() - start)


def learner_round(p: LearnerProcess, rows: int) -> float:
    """Defaults a second of the learner ``p`` (idle since its last round) from its first
    turn to the ``rows`` defaults of the round learned."""
    before = p.counters.get("defaults", 0)
    start = time.perf_counter()
    while p.counters.get("defaults", 0) - before < rows:
        p.step(block_ms=1)
        if time.perf_counter() - start > 300:
            raise RuntimeError(f"{p.counters.get('defaults', 0) - before:,} of {rows:,} learned")
    return rows / (time.perf_counter() - start)


def logged_span(r, keys: Keys, since: str) -> float:  # type: ignore[no-untyped-def]
    """The seconds the entries of every log from ``since`` on span (their ids' times)."""
    first, last = float("inf"), 0.0
    for instance in r.zrange(keys.logs, 0, -1):
        stream = keys.log(instance.decode())
        head, tail = r.xrange(stream, since, "+", count=1), r.xrevrange(stream, "+", since, count=1)
        if head:
            first = min(first, predlog.entry_seconds(head[0][0].decode()))
            last = max(last, predlog.entry_seconds(tail[0][0].decode()))
    return last - first


def rates(args: argparse.Namespace) -> None:
    """``--rates``: one server worker's logging rate against the defaults issued over its log,
    round after round (see the module)."""
    from labels import Loop  # the processes, started with the CLI
    from serve import wrk  # the load generator bench/serve.py drives the servers with

    doc = manifest("rates", True, args.algorithm)
    with tempfile.TemporaryDirectory(prefix="tideline-bench-defaults-") as d:
        loop = Loop(doc, Path(d))
        try:
            learner = LearnerProcess(parse(doc), loop.r, checkpoint_seconds=1.0)
            learner.start()  # v0 published: what the server serves
            loop.server()
            X = Stream(0.03, args.seed).take(args.rows)[0]
            body = Path(d) / f"rows{args.rows}.json"
            body.write_bytes(orjson.dumps({"instances": [dict(zip(FEATURES, x, strict=True))
                                                         for x in X.tolist()]}))  # fmt: skip
            url = f"http://127.0.0.1:{loop.port}/v1/models/{loop.model.name}:predict"
            print(f"one tideline server worker, {args.rows}-row requests for {args.seconds} s (wrk, 64 "
                  f"connections); labelDefault after {AFTER:g}s, {args.algorithm}\n")  # fmt: skip
            print("| round | rows logged | logged rows/s | DefaultLabels.issue defaults/s | ratio "
                  "| learner defaults/s | ratio |")  # fmt: skip
            print("|---|---|---|---|---|---|---|")
            ratios: dict[str, list[float]] = {"issue": [], "learner": []}
            for k in range(args.rounds):
                since = f"{int(time.time() * 1000)}-0"
                wrk(url, body, 64, args.seconds, Path(d), cpu=None)
                time.sleep(AFTER + CLOCK_SLACK + 1.0)  # the last writes; every row 'after' old
                rows, issued = issue_round(loop.r, learner.keys, since)
                logged_rate = rows / logged_span(loop.r, learner.keys, since)
                learned = learner_round(learner, rows)
                ratios["issue"].append(issued / logged_rate)
                ratios["learner"].append(learned / logged_rate)
                print(f"| {k + 1} | {rows:,} | {logged_rate:,.0f} | {issued:,.0f} | "
                      f"{ratios['issue'][-1]:.2f} | {learned:,.0f} | "
                      f"{ratios['learner'][-1]:.2f} |", flush=True)  # fmt: skip
            for name, r in ratios.items():
                print(f"{name} / logging: median {statistics.median(r):.2f} "
                      f"[{min(r):.2f}, {max(r):.2f}] over {len(r)} rounds")  # fmt: skip
            learner.source.close()
        finally:
            loop.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--ctr", type=float, nargs="+", default=[0.01, 0.03, 0.05])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rate", type=float, default=5000.0, help="predictions a second")
    ap.add_argument("--algorithm", default="ftrl", help="the learners' (the ads example's)")
    ap.add_argument(
        "--rates",
        action="store_true",
        help="one server worker's logging rate against the defaults issued",
    )
    ap.add_argument("--rounds", type=int, default=3, help="--rates: rounds")
    ap.add_argument("--seconds", type=int, default=5, help="--rates: seconds of requests a round")
    ap.add_argument("--rows", type=int, default=64, help="--rates: rows a request")
    args = ap.parse_args()
    if args.rates:
        rates(args)
        return
    redis = EmbeddedRedis().start()
    try:
        r = redis.client()
        print(f"clicks only, {args.n:,} predictions at {args.rate:,.0f}/s, {args.algorithm}, "
              f"labelDefault after {AFTER:g}s; each learner as the stream ends\n")  # fmt: skip
        print("| true CTR | every label sent: predicted | error | clicks + labelDefault: "
              "predicted | error | clicks alone: predicted | error | defaults learned "
              "| log written rows/s |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        for i, ctr in enumerate(args.ctr):
            stream = Stream(ctr, args.seed + i)
            (with_default, clicks_alone, every), wrote = run(r, f"m{i}", stream, args.n,
                                                             args.rate, args.algorithm)  # fmt: skip
            row = calibration(stream, (every, with_default, clicks_alone))
            row += [f"{with_default.counters.get('defaults', 0):,}", f"{args.n / wrote:,.0f}"]
            print("| " + " | ".join(row) + " |", flush=True)
        print(f"\nlate clicks: their median delay {AFTER:g}s, the time of the default\n")
        print(
            "| true CTR | every label sent: predicted | error | lateLabel ignore: predicted "
            "| error | lateLabel correct: predicted | error | corrected | after-default |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for i, ctr in enumerate(args.ctr):
            stream = Stream(ctr, args.seed + i)
            (ignore, correct, every), _ = run(
                r,
                f"late{i}",
                stream,
                args.n,
                args.rate,
                args.algorithm,
                ("ignore", "correct"),
                AFTER,
            )
            row = calibration(stream, (every, ignore, correct))
            row += [f"{correct.counters.get('corrected', 0):,}",
                    f"{ignore.counters.get('after-default', 0):,}"]  # fmt: skip
            print("| " + " | ".join(row) + " |", flush=True)
        print(f"\nDefaultLabels.issue alone (nothing learned): {issue_alone(r, args.n):,.0f} "
              "defaults/s")  # fmt: skip
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
