"""tideline's server answering the Open Inference Protocol over gRPC against over HTTP, taking turns.

One ``tideline server`` (one worker, uvloop) serves examples/fraud.yaml over
both; one load generator, h2load (C), calls both with one request in flight per
connection: HTTP/1.1 V2 infer (``--h1``, keep-alive) with the body tritonclient
sends on its defaults (binary tensors, a tensor per feature, binary outputs), and
gRPC ``ModelInfer`` with the message tritonclient.grpc sends
(``raw_input_contents``, a tensor per feature). Nothing is pinned unless
``--pin`` (the server on CPU 0, h2load and Redis on CPU 1, as bench/serve.py
does): on a busy 2-core machine the CPU h2load was pinned to was its bottleneck,
and more for one protocol than the other (HTTP/1.1 at 64 rows: 390 req/s pinned,
1,640 not, against the same server). For 1 and 64 rows per request
and each connection count it reports requests/s, mean latency and requests per
second of the server's own CPU time (from /proc: what a request costs, whatever
else the machine ran); the two protocols take turns, in a rotating order, for
``--rounds`` rounds, and the ratios (gRPC / HTTP) are taken within a round and
their median given.

Before timing, each body is sent once and its answer checked (h2load counts a
200 with a gRPC error in its trailers as a success). One tool for both, so
both latencies are measured alike (wrk's mean read 3-10x the inverse of its own
rate at one connection on this busy machine). Needs h2load (Debian: apt-get
install nghttp2-client). Named for what it compares: a
``bench/grpc.py`` would shadow the ``grpc`` package for every import the script
makes. Run with ``python bench/grpc_vs_http.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import numpy as np
import orjson
from serve import EXAMPLE, configs, cpu_seconds, pinned, start

from tideline.algorithms import make_learner
from tideline.demo.embedded import EmbeddedRedis, free_port
from tideline.demo.simulate import SyntheticStream
from tideline.pods.server import oip_messages as pb
from tideline.spec import parse
from tideline.store import ModelStore

INFER = "/inference.GRPCInferenceService/ModelInfer"
GRPC_HEADERS = ["content-type: application/grpc", "te: trailers"]


def tensors(features: list[dict], rows: list[dict]) -> list[tuple[str, str, bytes]]:
    """A tensor per feature (name, datatype, little-endian data), as tritonclient sends."""
    out = []
    for f in features:
        values = [r.get(f["name"], f.get("default", 0)) for r in rows]
        if f.get("type", "numeric") == "numeric":
            out.append((f["name"], "FP64", np.asarray(values, dtype="<f8").tobytes()))
        else:
            data = b"".join(
                len(b).to_bytes(4, "little") + b for b in (str(v).encode() for v in values)
            )
            out.append((f["name"], "BYTES", data))
    return out


def http_body(model: str, n: int, ts: list[tuple[str, str, bytes]]) -> tuple[bytes, int]:
    """HTTP V2 infer in the binary tensor data extension, binary outputs asked for."""
    head = orjson.dumps({
        "inputs": [{"name": name, "datatype": dt, "shape": [n],
                    "parameters": {"binary_data_size": len(data)}} for name, dt, data in ts],
        "parameters": {"binary_data_output": True},
    })  # fmt: skip
    return head + b"".join(data for _, _, data in ts), len(head)


def grpc_message(model: str, n: int, ts: list[tuple[str, str, bytes]]) -> bytes:
    """``ModelInfer``'s request with raw contents, serialised."""
    req = pb.ModelInferRequest(model_name=model)
    for name, dt, data in ts:
        req.inputs.add(name=name, datatype=dt, shape=[n])
        req.raw_input_contents.append(data)
    return bytes(req.SerializeToString())


def check(
    http_url: str, grpc_address: str, body: tuple[bytes, int], message: bytes, n: int
) -> None:
    """One call of each: both answer n predictions, the same ones."""
    import urllib.request

    raw, header = body
    req = urllib.request.Request(http_url, data=raw, headers={
        "content-type": "application/octet-stream", "inference-header-content-length": str(header)})  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        length = int(resp.headers["inference-header-content-length"])
        content = resp.read()
    doc = orjson.loads(content[:length])
    size = doc["outputs"][0]["parameters"]["binary_data_size"]
    http_scores = np.frombuffer(content[length : length + size], "<f8")
    with grpc.insecure_channel(grpc_address) as channel:
        answer = channel.unary_unary(INFER)(message, timeout=10)
    scores = np.frombuffer(pb.ModelInferResponse.FromString(answer).raw_output_contents[0], "<f8")
    assert len(scores) == n and np.allclose(scores, http_scores), (scores, http_scores)


def h2load(url: str, body: Path, headers: list[str], conns: int, seconds: int, pid: int,
           h1: bool = False, cpu: int | None = None) -> dict:  # fmt: skip
    """An h2load run (on CPU ``cpu``): HTTP/2 (gRPC), or with ``h1`` HTTP/1.1 with keep-alive;
    one request in flight per connection. With the server's CPU time over the run."""
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(
        [*pinned(cpu), "h2load", *(["--h1"] if h1 else []), "-t1", f"-c{conns}", "-m1",
         f"-D{seconds}", f"--data={body}", *(a for h in headers for a in ("-H", h)), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    cpu = cpu_seconds(pid) - cpu0
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                     r"(\d+) failed, (\d+) errored", out)  # fmt: skip
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\s", out)
    assert done and rate and mean, out
    succeeded = int(done.group(2))
    return {"rps": float(rate.group(1)), "per_cpu_s": succeeded / cpu if cpu > 0 else 0.0,
            "mean_ms": float(mean.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[mean.group(2)],
            "errors": int(done.group(3)) + int(done.group(4))}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=4, help="length of one run")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each protocol per configuration")
    ap.add_argument("--configs", type=configs, default=configs("1x1,1x16,64x1,64x16"),
                    help="rows x connections, e.g. 1x16,64x16")  # fmt: skip
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--pin", action="store_true", help="the server on CPU 0, h2load on CPU 1")
    args = ap.parse_args()
    if not shutil.which("h2load"):
        sys.exit("bench/grpc_vs_http.py needs h2load (Debian: apt-get install nghttp2-client)")
    model = parse(EXAMPLE)
    features = [f.to_dict() for f in model.spec.model.features]
    rows, _ = SyntheticStream(features, "binary", seed=1).take(64)
    runs: list[dict] = []
    with EmbeddedRedis() as redis_server, tempfile.TemporaryDirectory() as d:
        if args.pin and redis_server.proc is not None and len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(redis_server.proc.pid, {1})
        tmp = Path(d)
        learner = make_learner(model.spec.model.to_dict())
        data, y = SyntheticStream(features, "binary", seed=2).take(5000)
        learner.learn_many(learner.schema.encode(data), y)
        ModelStore(redis_server.client(), model.namespace, model.name).publish(
            model.revision, 0, learner
        )
        port, grpc_port = free_port(), free_port()
        proc = start(
            [sys.executable, "-m", "tideline.cli", "--log-level", "WARNING", "server", "--config",
             str(EXAMPLE), "--redis", redis_server.url, "--port", str(port), "--grpc-port",
             str(grpc_port)],
            port, "/v2/health/ready", cpu=0 if args.pin else None,
        )  # fmt: skip
        load_cpu = 1 if args.pin else None
        http_url = f"http://127.0.0.1:{port}/v2/models/{model.name}/infer"
        grpc_url = f"http://127.0.0.1:{grpc_port}{INFER}"
        try:
            bodies, frames, headers = {}, {}, {}
            for n in sorted({n for n, _ in args.configs}):
                ts = tensors(features, rows[:n])
                body, headers[n] = http_body(model.name, n, ts)
                message = grpc_message(model.name, n, ts)
                check(http_url, f"127.0.0.1:{grpc_port}", (body, headers[n]), message, n)
                bodies[n] = tmp / f"rows{n}.bin"
                bodies[n].write_bytes(body)
                frames[n] = tmp / f"rows{n}.grpc"  # a gRPC frame: not compressed, its length
                frames[n].write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
                print(f"{n} row(s): HTTP body {len(body)} bytes, gRPC message {len(message)}")

            def http(n: int, c: int, seconds: int) -> dict:
                return h2load(http_url, bodies[n], ["content-type: application/octet-stream",
                              f"inference-header-content-length: {headers[n]}"], c, seconds,
                              proc.pid, h1=True, cpu=load_cpu)  # fmt: skip

            def grpc_(n: int, c: int, seconds: int) -> dict:
                return h2load(grpc_url, frames[n], GRPC_HEADERS, c, seconds, proc.pid, cpu=load_cpu)

            first = args.configs[0][0]
            http(first, 16, 2)  # warm up
            grpc_(first, 16, 2)
            run = {"HTTP": lambda n, c: http(n, c, args.seconds),
                   "gRPC": lambda n, c: grpc_(n, c, args.seconds)}  # fmt: skip
            for n, conns in args.configs:
                for rnd in range(args.rounds):
                    for name in ("HTTP", "gRPC") if rnd % 2 == 0 else ("gRPC", "HTTP"):
                        r = run[name](n, conns)
                        r.update({"protocol": name, "rows": n, "conns": conns, "round": rnd})
                        runs.append(r)
                        print(f"  {name:4} rows={n:<3} conns={conns:<3} round {rnd}: "
                              f"{r['rps']:9,.0f} req/s  mean {r['mean_ms']:.2f} ms  "
                              f"{r['per_cpu_s']:9,.0f} req per server CPU-s  errors {r['errors']}",
                              flush=True)  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(10)
    report(runs, args)
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))


def report(runs: list[dict], args: argparse.Namespace) -> None:
    print(f"\nMedian of {args.rounds} rounds; gRPC / HTTP within each round.\n")
    print("| rows | conns | HTTP req/s | gRPC req/s | ratio | HTTP per CPU-s | gRPC per CPU-s "
          "| ratio | HTTP mean ms | gRPC mean ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, conns in args.configs:
        at = {(r["protocol"], r["round"]): r for r in runs if (r["rows"], r["conns"]) == (n, conns)}

        def median(values: list[float]) -> float:
            return sorted(values)[len(values) // 2]

        cells = []
        for metric in ("rps", "per_cpu_s"):
            h = median([at[("HTTP", k)][metric] for k in range(args.rounds)])
            g = median([at[("gRPC", k)][metric] for k in range(args.rounds)])
            ratio = median([at[("gRPC", k)][metric] / at[("HTTP", k)][metric]
                            for k in range(args.rounds)])  # fmt: skip
            cells += [f"{h:,.0f}", f"{g:,.0f}", f"{ratio:.2f}"]
        lat = [
            median([at[(p, k)]["mean_ms"] for k in range(args.rounds)]) for p in ("HTTP", "gRPC")
        ]
        print(f"| {n} | {conns} | " + " | ".join(cells) + f" | {lat[0]:.2f} | {lat[1]:.2f} |")
    errors = sum(r["errors"] for r in runs)
    print(f"\nerrors: {errors}")


if __name__ == "__main__":
    main()
