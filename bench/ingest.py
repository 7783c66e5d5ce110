"""The ingestion path: labelled samples from the ``samples`` stream into the learner.

examples/fraud.yaml (batchSize 64), ``--n`` (200,000) labelled rows already in
the stream, side by side in one run on an embedded redis-server:

* **redis-py**: XREADGROUP 1,000 + ``orjson.loads`` of every entry + XACK,
  nothing learned - with hiredis (a dependency; redis-py uses it when it is
  installed) and with redis-py's own Python parser;
* **tideline learner**: the ``tideline learner`` process, from the first
  sample learned to the last (its ``tideline_learner_samples_total``, polled
  every 50 ms), from one-row entries and from packed entries of 64 rows (what
  ``:learn`` writes; three times ``--n`` of them, so the run lasts seconds);
  and steady, from the first learned to 90 % (the last mini-batch of a finite
  stream waits up to ``maxBatchDelay``, 500 ms here, for rows that never come);
* **learn_many alone**: the model's update on encoded batches of 64 and 256;
* **the learner's decoder alone** (``SampleDecoder.decode``, no Redis): the same
  one-row samples with labels written 0/1 and true/false, in reads of the
  learner's largest (``MAX_READ_ENTRIES``) shaped as XREADGROUP returns them, and
  the ratio of the two (``--decode-only``: this alone);
* **Kafka** (``spec.source.kafka``, a broker of its own: the jars ``make
  kafka-bin`` resolves): confluent-kafka ``consume(num_messages=1000)`` +
  ``orjson.loads`` of every message, nothing learned; and the ``tideline
  learner`` of the same model with its samples on a topic of 3 partitions,
  one-row messages and packed ones of 64 rows;
* **the prediction log**: the ``tideline server`` process answering 64-row
  requests for ``--log-seconds`` (5; wrk, 64 connections), every one logged, and
  then the monitor reading that whole log alone, in full and at
  ``drift.sampleRate`` 0.1: the log's writer and its reader side by side (the
  learner reads the log only by id, one entry for a request's labels:
  bench/labels.py measures that join);
* **freshness**: ``--rate`` (10,000) one-row labels a second for ``--seconds``
  (10) to a running learner; for each label, the time from its entry in the
  stream to the first version published (and served: nothing pins it here)
  that learned it - p50 and p95.

Run with ``make bench`` or ``python bench/ingest.py``; ``PYTHONPATH=<other
checkout>/runtime`` measures another version.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis
import yaml
from labels import RUNTIME, Loop, learned_total  # the processes, started with the CLI
from redis._parsers import _RESP2Parser

from tideline.algorithms import make_learner
from tideline.contracts import Keys
from tideline.demo.embedded import free_port
from tideline.demo.simulate import SyntheticStream
from tideline.pods.learner import MAX_READ_ENTRIES
from tideline.samples import SampleDecoder

ROOT = Path(__file__).resolve().parents[1]


def _keys(loop: Loop) -> Keys:
    return Keys(loop.model.namespace, loop.model.name)


def _fill(r: redis.Redis, stream: str, rows: list[Any], y: np.ndarray, packed: int = 1) -> None:
    pipe = r.pipeline(transaction=False)
    labels = y.tolist()
    for i in range(0, len(rows), packed):
        if packed == 1:
            data = {"features": rows[i], "label": labels[i]}
        else:
            data = {"instances": rows[i : i + packed], "labels": labels[i : i + packed]}
        pipe.xadd(stream, {"data": orjson.dumps(data)})
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()


def raw_loop(loop: Loop, rows: list[Any], y: np.ndarray, hiredis: bool) -> float:
    """Entries a second through redis-py alone: read, parse, acknowledge."""
    stream = f"bench:raw:{int(hiredis)}"
    _fill(loop.r, stream, rows, y)
    extra = {} if hiredis else {"parser_class": _RESP2Parser}
    c = redis.Redis.from_url(loop.redis.url, **extra)
    c.xgroup_create(stream, "g", id="0")
    n, t0 = 0, time.perf_counter()
    while n < len(rows):
        resp = c.xreadgroup("g", "c", {stream: ">"}, count=1000)
        for _, entries in resp:
            for _, fields in entries:
                orjson.loads(fields[b"data"])
            c.xack(stream, "g", *[eid for eid, _ in entries])
            n += len(entries)
    seconds = time.perf_counter() - t0
    c.delete(stream)
    return n / seconds


def _values(rows: list[Any], y: np.ndarray, packed: int) -> list[bytes]:
    labels = y.tolist()
    if packed == 1:
        return [
            orjson.dumps({"features": x, "label": v}) for x, v in zip(rows, labels, strict=True)
        ]
    return [orjson.dumps({"instances": rows[i : i + packed], "labels": labels[i : i + packed]})
            for i in range(0, len(rows), packed)]  # fmt: skip


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20})
    for i, v in enumerate(values):
        while True:
            try:
                p.produce(topic, v)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(60) == 0


def kafka_raw(bootstrap: str, topic: str, n: int) -> float:
    """Messages a second through confluent-kafka alone: consume 1,000 at a time, parse."""
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-raw",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    c.subscribe([topic])
    got, t0 = 0, None
    while got < n:
        # (the last read asks for what is left: a read of 1,000 waits out its timeout when
        # fewer come)
        msgs = c.consume(num_messages=min(1000, n - got), timeout=1.0)
        if msgs and t0 is None:
            t0 = time.perf_counter()
        for m in msgs:
            orjson.loads(m.value())
        got += len(msgs)
    seconds = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
    return got / max(seconds, 1e-9)


def learner_rate(
    loop: Loop, rows: list[Any], y: np.ndarray, packed: int, fill: Any = None
) -> tuple[float, float]:
    """Samples a second through ``tideline learner``: first learned to last, and steady (first
    learned to 90 %: without the last mini-batch's wait of up to ``maxBatchDelay`` for rows
    that never come, at the end of a finite stream). ``fill`` puts the samples where the
    learner reads them: the model's stream, unless given."""
    if fill is None:
        _fill(loop.r, _keys(loop).samples, rows, y, packed)
    else:
        fill(_values(rows, y, packed))
    port = free_port()
    proc = loop.start("learner", "--port", str(port))
    first: tuple[float, int] | None = None
    steady: tuple[float, int] | None = None
    deadline = time.monotonic() + 600
    while True:
        # the learner's own counter, per mini-batch (its Redis hash moves once a checkpoint,
        # a second: too coarse for a run of a second or two)
        n = learned_total(port)
        now = time.perf_counter()
        if first is None and n > 0:
            first = (now, n)
        if steady is None and n >= 0.9 * len(rows):
            steady = (now, n)
        if n >= len(rows):
            break
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{n} of {len(rows)} learned")
        time.sleep(0.05)
    proc.terminate()
    proc.wait(20)
    assert first is not None and steady is not None
    return ((n - first[1]) / max(now - first[0], 1e-9),
            (steady[1] - first[1]) / max(steady[0] - first[0], 1e-9))  # fmt: skip


def learn_many_rate(manifest: dict[str, Any], rows: list[Any], y: np.ndarray, bs: int) -> float:
    learner = make_learner(manifest["spec"]["model"])
    X = learner.schema.encode(rows)
    t0 = time.perf_counter()
    for i in range(0, len(y), bs):
        learner.learn_many(X[i : i + bs], y[i : i + bs])
    return len(y) / (time.perf_counter() - t0)


def decode_rates(
    manifest: dict[str, Any], rows: list[Any], y: np.ndarray, repeat: int = 5
) -> dict[str, float]:
    """Rows a second through the learner's ``SampleDecoder`` alone, best of ``repeat``: the
    same one-row samples with labels written 0/1 and true/false (the natural JSON of a binary
    label), in reads of ``MAX_READ_ENTRIES`` entries shaped as XREADGROUP returns them. The
    two are timed in turn within each repeat, so both see the same machine."""
    model = manifest["spec"]["model"]
    decoder = SampleDecoder(make_learner(model).schema, model["task"])
    kinds = {"0/1": [int(v) for v in y], "true/false": [bool(v) for v in y]}
    reads: dict[str, list[Any]] = {}
    for name, labels in kinds.items():
        entries = [(b"%d-0" % (i + 1), {b"data": orjson.dumps({"features": x, "label": v})})
                   for i, (x, v) in enumerate(zip(rows, labels, strict=True))]  # fmt: skip
        reads[name] = [entries[i : i + MAX_READ_ENTRIES]
                       for i in range(0, len(entries), MAX_READ_ENTRIES)]  # fmt: skip
    best = dict.fromkeys(kinds, float("inf"))
    fast = dict.fromkeys(kinds, True)
    for _ in range(repeat):
        for name, each in reads.items():
            t0 = time.perf_counter()
            for read in each:
                fast[name] &= decoder.decode(read).fast
            best[name] = min(best[name], time.perf_counter() - t0)
    return {
        f"SampleDecoder.decode, one-row entries, labels {name} "
        f"({'typed path' if fast[name] else 'entry by entry'})": len(rows) / best[name]
        for name in kinds
    }


def freshness(loop: Loop, rate: float, seconds: float, rows: list[Any], y: np.ndarray) -> dict:
    """From a label's entry in the stream to the first version published that learned it."""
    proc = loop.start("learner")
    pubsub = loop.r.pubsub()
    pubsub.subscribe(_keys(loop).events)
    versions: list[tuple[float, int]] = []  # (time seen, samples learned)
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            msg = pubsub.get_message(timeout=0.05)
            if msg and msg["type"] == "message":
                doc = orjson.loads(msg["data"])
                if doc.get("event") == "version" and doc.get("revision") == loop.model.revision:
                    versions.append((time.time(), int(doc.get("samples", 0))))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(2.0)  # started: v0 published, the group read from the end
    base = loop.learned()
    sent: list[tuple[int, float]] = []  # (labels sent so far, when)
    chunk = max(1, int(rate / 100))
    stream, n, labels = _keys(loop).samples, 0, y.tolist()
    start = time.perf_counter()
    while n < rate * seconds:
        pipe = loop.r.pipeline(transaction=False)
        for i in range(n, n + chunk):
            data = {"features": rows[i % len(rows)], "label": labels[i % len(rows)]}
            pipe.xadd(stream, {"data": orjson.dumps(data)})
        pipe.execute()
        n += chunk
        sent.append((n, time.time()))
        time.sleep(max(0.0, start + n / rate - time.perf_counter()))
    deadline = time.monotonic() + 30
    while (not versions or versions[-1][1] - base < n) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    listener.join()
    proc.terminate()
    proc.wait(20)
    ages: list[float] = []
    v = 0
    for count, at in sent:  # a chunk's labels are the sent[count - chunk, count) ones
        while v < len(versions) and versions[v][1] - base < count:
            v += 1
        if v < len(versions):
            ages += [versions[v][0] - at] * chunk
    return {
        "labels": n,
        "versions": len(versions),
        "p50_s": round(float(np.percentile(ages, 50)), 3) if ages else None,
        "p95_s": round(float(np.percentile(ages, 95)), 3) if ages else None,
        "after_the_last_version": n - len(ages),  # fewer than publishEvery: no version yet
    }


def log_rates(loop: Loop, rows: list[Any], seconds: int, tmp: Path) -> dict[str, float]:
    """The prediction log's writer and its reader, in one run: the ``tideline server``
    process answering 64-row requests (wrk, 64 connections, ``seconds``), every one logged;
    then the monitor reading that whole log, alone, in full and at ``drift.sampleRate``
    0.1 (predictions per second of each)."""
    from serve import wrk  # the load generator bench/serve.py drives the servers with

    from tideline.pods.monitor import Monitor
    from tideline.spec import parse

    loop.server()
    body = tmp / "rows64.json"
    body.write_bytes(orjson.dumps({"instances": rows[:64]}))
    url = f"http://127.0.0.1:{loop.port}/v1/models/{loop.model.name}:predict"
    served = wrk(url, body, 64, seconds, tmp, cpu=None)
    time.sleep(1.0)  # the server's last log writes
    keys = _keys(loop)
    logged = sum(
        loop.r.xlen(keys.log(m.decode())) for m in loop.r.zrange(keys.logs, 0, -1)
    )  # an entry a 64-row request
    out = {"tideline server, predictions logged (one worker, 64 rows a request)":
           served["rps"] * 64}  # fmt: skip
    for rate in (1.0, 0.1):
        doc = copy.deepcopy(loop.manifest)
        doc["spec"].setdefault("drift", {})["sampleRate"] = rate
        mon = Monitor(parse(doc), loop.r)
        mon.list_logs_every = 0.0  # (not started: it reads the log from its beginning)
        t0 = time.perf_counter()
        while mon._read_log() > 0:
            pass
        seconds_read = time.perf_counter() - t0
        assert mon._counts["predictions"] == logged * 64, (mon._counts, logged)
        name = "monitor reading that log" + (", in full" if rate == 1.0 else f", sampleRate {rate}")
        out[name] = logged * 64 / seconds_read
    return out


def kafka_rows(manifest: dict[str, Any], rows: list[Any], y: np.ndarray) -> dict[str, float]:
    """The same samples on Kafka topics (3 partitions): consumed raw, and learned."""
    from tideline.demo.embedded import EmbeddedKafka
    from tideline.demo.local import with_kafka

    out: dict[str, float] = {}
    with (
        EmbeddedKafka() as broker,
        tempfile.TemporaryDirectory(prefix="tideline-bench-kafka-") as d,
    ):
        broker.create_topic("bench-raw", 3)
        _produce(broker.bootstrap, "bench-raw", _values(rows, y, 1))
        out["confluent-kafka consume(1000) + orjson, one-row messages"] = kafka_raw(
            broker.bootstrap, "bench-raw", len(rows)
        )
        for packed, name in ((1, "one-row messages"), (64, "packed messages of 64 rows")):
            n = 1 if packed == 1 else 3  # (packed: three times the rows, a run of seconds)
            doc = with_kafka(manifest, broker)  # (the same topics for both: learned in turn)
            topic = doc["spec"]["source"]["kafka"]["topics"]["samples"]
            loop = Loop(doc, Path(d))
            try:
                first = loop.start("learner")  # v0 published, the topics' ends taken, stopped
                time.sleep(3.0)
                first.terminate()
                first.wait(20)
                whole, steady = learner_rate(
                    loop, rows * n, np.tile(y, n), packed,
                    fill=lambda v, t=topic: _produce(broker.bootstrap, t, v),
                )  # fmt: skip
                out[f"tideline learner from a Kafka topic, {name}"] = whole
                out[f"tideline learner from a Kafka topic, {name}, steady"] = steady
            finally:
                loop.stop()
            broker.stop(keep=False)
            broker.start()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--rate", type=float, default=10_000.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--log-seconds", type=int, default=5)
    ap.add_argument("--decode-only", action="store_true", help="the decoder's side by side alone")
    args = ap.parse_args()
    manifest = yaml.safe_load((ROOT / "examples" / "fraud.yaml").read_text())
    manifest["metadata"]["namespace"] = "bench"
    features = [f for f in manifest["spec"]["model"]["features"]]
    rows, y = SyntheticStream(features, "binary", seed=3).take(args.n)
    print(f"tideline from {RUNTIME}")
    decoding = decode_rates(manifest, rows, y)
    for name, value in decoding.items():
        print(f"| {name} | {value:,.0f} |", flush=True)
    numbers, booleans = decoding.values()
    print(f"true/false labels decode at {booleans / numbers:.2f}x the rate of 0/1", flush=True)
    if args.decode_only:
        return
    table: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tideline-bench-ingest-") as d:
        loop = Loop(manifest, Path(d))
        try:
            table["redis-py XREADGROUP 1000 + orjson + XACK, hiredis"] = raw_loop(
                loop, rows, y, True
            )
            table["the same, redis-py's Python parser"] = raw_loop(loop, rows, y, False)
            first = loop.start("learner")  # v0 published and the group made, then stopped
            time.sleep(2.0)
            first.terminate()
            first.wait(20)
            for name, n, packed in (("one-row entries", 1, 1),
                                    # packed: three times the rows, a run of seconds
                                    ("packed entries of 64 rows", 3, 64)):  # fmt: skip
                whole, steady = learner_rate(loop, rows * n, np.tile(y, n), packed)
                table[f"tideline learner, {name}"] = whole
                table[f"tideline learner, {name}, steady"] = steady
            table["learn_many alone, batches of 64"] = learn_many_rate(manifest, rows, y, 64)
            table["learn_many alone, batches of 256"] = learn_many_rate(manifest, rows, y, 256)
            for name, value in table.items():
                print(f"| {name} | {value:,.0f} |", flush=True)
            fresh = freshness(loop, args.rate, args.seconds, rows, y)
            log = log_rates(loop, rows, args.log_seconds, Path(d))
            table.update(log)
            for name, value in log.items():
                print(f"| {name} | {value:,.0f} |", flush=True)
        finally:
            loop.stop()
    kafka = kafka_rows(manifest, rows, y)
    table.update(kafka)
    table.update(decoding)
    for name, value in kafka.items():
        print(f"| {name} | {value:,.0f} |", flush=True)
    print(f"freshness at {args.rate:,.0f} labels/s: {json.dumps(fresh)}")
    print(json.dumps({"samples_per_second": {k: round(v) for k, v in table.items()},
                      "freshness": fresh}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
