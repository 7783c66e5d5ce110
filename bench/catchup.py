"""A new revision's catch-up on labelled history against the learner's own packed ingestion.

On an embedded redis-server, in this process (the learner's own class), examples/fraud.yaml's
model: ``--n`` (200,000) labelled rows written twice - as the monitor keeps them in the
``history`` stream (a logged request's 64 joined rows an entry, served by the stable
track: a version of it every ``--publish-every`` rows, 5,000 as the example publishes; 0,
one version throughout), and as ``:learn`` writes them to the ``samples`` stream (packed
entries of 64) - then, taking turns over ``--rounds``:

* **catch-up**: a learner with no checkpoint and ``spec.learning.history``, from its start
  to its first version (:mod:`tideline.pods.catchup`: read, decode, learn prequentially,
  compare with stable on the backtest's window, mark), rows a second;
* **packed ingestion**: the same model's learner on the samples stream, from its start to
  the last row learned, rows a second.

The goal (issue 35): catch-up at least the learner's packed ingestion rate. Run with
``python bench/catchup.py``; ``PYTHONPATH=<other checkout>/runtime`` measures another version.
"""

from __future__ import annotations

import argparse
import copy
import gc
import time
from pathlib import Path

import orjson
import yaml

from tideline.contracts import Keys
from tideline.demo.embedded import EmbeddedRedis
from tideline.demo.simulate import SyntheticStream
from tideline.pods import history
from tideline.pods.learner import LearnerProcess
from tideline.spec import parse

ROOT = Path(__file__).resolve().parents[1]
ROWS = 64  # a logged request's rows, and a packed entry's


def manifest(name: str) -> dict:
    doc = yaml.safe_load((ROOT / "examples" / "fraud.yaml").read_text())
    doc = copy.deepcopy(doc)
    doc["metadata"] = {"name": name, "namespace": "bench"}
    doc["spec"]["learning"].update({"history": "24h", "publishEvery": 10_000_000})
    return doc


def fill(r, keys: Keys, rows: list, labels: list, hours: float = 1.0,  # type: ignore[no-untyped-def]
         publish_every: int = 0) -> None:  # fmt: skip
    """The rows as history records and as packed samples, over the last ``hours``; stable's
    served version the next every ``publish_every`` rows (0: one throughout)."""
    now = time.time()
    pipe = r.pipeline(transaction=False)
    for k, at in enumerate(range(0, len(rows), ROWS)):
        part, y = rows[at : at + ROWS], labels[at : at + ROWS]
        ts = now - 3600 * hours * (1 - at / len(rows))
        rec = history.Record(ts=ts, rows=part, labels=y, received=[ts + 1.0] * len(part),
                             marks=[f"srv {int(ts * 1000)}-{k} 0 {i}" for i in range(len(part))],
                             scores=[0.5] * len(part), tracks=["stable"] * len(part),
                             models={"stable": ("old", 1 + (at // publish_every
                                                            if publish_every else 0))})  # fmt: skip
        history.append(pipe, keys, [rec], keep=86400.0, now=now)
        pipe.xadd(keys.samples, {"data": orjson.dumps({"instances": part, "labels": y})})
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()


def catch_up(r, doc: dict, n: int) -> float:  # type: ignore[no-untyped-def]
    """Rows a second from a fresh learner's start to its first version (the catch-up; a
    revision of its own each time)."""
    p = LearnerProcess(parse(doc), r, revision=f"c{time.time_ns()}", checkpoint_seconds=1.0)
    start = time.perf_counter()
    p.start()
    seconds = time.perf_counter() - start
    assert p.counters["samples"] == n, p.counters
    p.source.close()
    return n / seconds


def ingest(r, doc: dict, n: int) -> float:  # type: ignore[no-untyped-def]
    """Rows a second of a learner reading the packed samples stream (no history to learn)."""
    doc = copy.deepcopy(doc)
    doc["spec"]["learning"]["history"] = "0s"
    p = LearnerProcess(parse(doc), r, revision=f"i{time.time_ns()}", checkpoint_seconds=1.0)
    start = time.perf_counter()
    p.start()
    while p.counters["samples"] < n:
        p.step(block_ms=5)
    seconds = time.perf_counter() - start
    p.source.close()
    return n / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=2)
    # (a catch-up marks taken the rows whose prediction is still in the log - labelWindow,
    # 30m here: half of an hour's history, a fiftieth of a day's)
    ap.add_argument("--hours", type=float, default=1.0, help="the span of the history")
    ap.add_argument(
        "--publish-every",
        type=int,
        default=5000,
        help="rows between stable's served versions in the history (0: one)",
    )
    args = ap.parse_args()
    redis = EmbeddedRedis().start()
    try:
        r = redis.client()
        doc = manifest("fraud")
        model = parse(doc)
        rows, y = SyntheticStream(model.spec.model.to_dict()["features"], "binary",
                                  seed=1).take(args.n)  # fmt: skip
        fill(r, Keys(model.namespace, model.name), rows, y.tolist(), args.hours, args.publish_every)
        # (the rows made here are in Redis now: the learners measured do not walk them at
        # every full garbage collection, as a learner's pod would not hold them)
        del rows, y
        gc.collect()
        rates: dict[str, list[float]] = {"catch-up": [], "packed ingestion": []}
        for i in range(args.rounds):  # taking turns: a machine that drifts drifts for both
            order = ("catch-up", "packed ingestion") if i % 2 == 0 else ("packed ingestion",
                                                                          "catch-up")  # fmt: skip
            for what in order:
                run = catch_up if what == "catch-up" else ingest
                rates[what].append(run(r, doc, args.n))
        print(f"{args.n:,} rows over {args.hours:g} h, {ROWS} a history entry and a packed "
              f"sample, examples/fraud.yaml, stable's version every {args.publish_every:,} "
              f"rows, {args.rounds} rounds taking turns\n")  # fmt: skip
        print("| path | rows/s (each round) | median |")
        print("|---|---|---|")
        for what, got in rates.items():
            each = ", ".join(f"{v:,.0f}" for v in got)
            print(f"| {what} | {each} | {sorted(got)[len(got) // 2]:,.0f} |")
        ratio = sorted(rates["catch-up"])[args.rounds // 2] / sorted(
            rates["packed ingestion"])[args.rounds // 2]  # fmt: skip
        print(f"\ncatch-up / packed ingestion: {ratio:.2f}")
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
