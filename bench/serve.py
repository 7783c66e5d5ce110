"""tideline's server against a bare Starlette app and two hand-written FastAPI apps, side by side.

The apps: bare Starlette answering a constant (the framework ceiling); the
typical FastAPI + pydantic + numpy predict app (KServe's and MLServer's
shape); a hand-tuned FastAPI route (raw body, orjson, numpy); tideline's
server. Each runs as one uvicorn worker (uvloop, httptools) pinned to CPU 0;
wrk runs pinned to CPU 1, and so does Redis (tideline's prediction log). For
1 and 64 rows per request and 1, 16 and 64 connections it reports
requests/s, predictions/s, p50/p95/p99 latency, and predictions per second
of the server's own CPU time (read from /proc: what a request costs,
whatever else the machine ran in that minute).

The machine is shared and its speed drifts from minute to minute, so the
apps take turns: every configuration is run ``--rounds`` times, the apps in
a rotating order within each round, and the tables give each app's median
round; the ratios are taken within a round (same minute) and their median
given.

Then ``--workers``: tideline's server with one worker and with two, neither
pinned (nor wrk and Redis), at 1 and 64 rows and 64 connections, taking
turns the same way. On a 2-core machine the load generator shares the cores
with the workers, so the ratio is a floor. Run with ``make bench``.
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
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from tideline.algorithms import make_learner
from tideline.demo.embedded import EmbeddedRedis, free_port
from tideline.demo.simulate import SyntheticStream
from tideline.spec import parse
from tideline.store import ModelStore

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fraud.yaml"
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}"):read("*a")
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout))
end
"""


def pinned(cpu: int | None) -> list[str]:
    """The command prefix that runs on CPU ``cpu`` (nothing for None, or one CPU)."""
    return (
        ["taskset", "-c", str(cpu)]
        if cpu is not None and shutil.which("taskset") and os.cpu_count() and os.cpu_count() > 1
        else []
    )


def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError as e:
            if e.code != 503:  # it answers: up (503 is "not ready yet")
                return
            time.sleep(0.1)
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} never answered")


def start(cmd: list[str], port: int, ready_path: str, cpu: int | None = 0) -> subprocess.Popen:
    """A server started (on CPU ``cpu``, or anywhere for None) and answering ``ready_path``."""
    proc = subprocess.Popen(
        [*pinned(cpu), *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_ready(f"http://127.0.0.1:{port}{ready_path}")
    return proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    url: str,
    body: Path,
    conns: int,
    seconds: int,
    tmp: Path,
    pid: int | None = None,
    cpu: int | None = 1,
) -> dict:
    """A wrk run (on CPU ``cpu``); with the server's ``pid``, also the server's CPU time."""
    script = tmp / f"post-{body.stem}.lua"
    script.write_text(LUA.format(body=body))
    cpu0 = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        [
            *pinned(cpu),
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{seconds}s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = cpu_seconds(pid) - cpu0 if pid else 0.0
    m = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    assert m, out
    n, dur_us, p50, p95, p99, errors = (int(g) for g in m.groups())
    return {
        "rps": n / (dur_us / 1e6),
        # requests per second of the server's own CPU time: less swayed than
        # req/s by whatever else runs on a shared machine
        "per_cpu_s": n / cpu if cpu > 0 else 0.0,
        "p50_ms": p50 / 1000,
        "p95_ms": p95 / 1000,
        "p99_ms": p99 / 1000,
        "errors": errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=4, help="length of one wrk run")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each app per configuration")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument(
        "--configs",
        type=configs,
        default=configs("1x1,1x16,1x64,64x1,64x16,64x64"),
        help="rows x connections to run, e.g. 1x64,64x16 (--workers: those at 64 connections)",
    )
    ap.add_argument("--no-workers", action="store_true", help="skip --workers 2 against 1")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench/serve.py needs wrk (Debian: apt-get install wrk)")
    model = parse(EXAMPLE)
    rows, _ = SyntheticStream(
        [f.to_dict() for f in model.spec.model.features], "binary", seed=1
    ).take(64)
    runs: list[dict] = []
    procs: list[subprocess.Popen] = []
    with EmbeddedRedis() as redis_server, tempfile.TemporaryDirectory() as d:
        if redis_server.proc is not None and len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(redis_server.proc.pid, {1})
        tmp = Path(d)
        learner = make_learner(model.spec.model.to_dict())
        data, y = SyntheticStream(
            [f.to_dict() for f in model.spec.model.features], "binary", seed=2
        ).take(5000)
        learner.learn_many(learner.schema.encode(data), y)
        ModelStore(redis_server.client(), model.namespace, model.name).publish(
            model.revision, 0, learner
        )
        bodies = {}
        for n in (1, 64):
            bodies[n] = tmp / f"rows{n}.json"
            bodies[n].write_bytes(orjson.dumps({"instances": rows[:n]}))
        uvicorn = [sys.executable, "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools",
                   "--no-access-log", "--log-level", "warning", "--app-dir", str(ROOT / "bench" / "apps")]  # fmt: skip
        tideline = [sys.executable, "-m", "tideline.cli", "--log-level", "WARNING", "server",
                    "--config", str(EXAMPLE), "--redis", redis_server.url]  # fmt: skip
        apps = {
            "bare Starlette (constant)": lambda p: start(
                [*uvicorn, "--port", str(p), "starlette_const:app"], p, "/404"
            ),
            "FastAPI + pydantic + numpy": lambda p: start(
                [*uvicorn, "--port", str(p), "fastapi_typical:app"], p, "/docs"
            ),
            "FastAPI hand-tuned (orjson)": lambda p: start(
                [*uvicorn, "--port", str(p), "fastapi_tuned:app"], p, "/docs"
            ),
            "tideline server": lambda p: start(
                [*tideline, "--port", str(p)], p, "/v2/health/ready"
            ),
        }
        urls, pids = {}, {}
        try:
            for name, launch in apps.items():
                port = free_port()
                procs.append(launch(port))
                pids[name] = procs[-1].pid  # taskset execs the server: the same pid
                urls[name] = f"http://127.0.0.1:{port}/v1/models/fraud:predict"
                wrk(urls[name], bodies[1], 16, 2, tmp)  # warm up
            names = list(apps)
            for n, conns in args.configs:
                for rnd in range(args.rounds):
                    k = rnd % len(names)
                    for name in names[k:] + names[:k]:
                        r = wrk(urls[name], bodies[n], conns, args.seconds, tmp, pids[name])
                        r.update({"app": name, "rows": n, "conns": conns, "round": rnd,
                                  "predictions_per_s": r["rps"] * n})  # fmt: skip
                        runs.append(r)
                for name in names:
                    r = median_run(runs, name, n, conns)
                    print(f"{name:28} rows={n:<3} conns={conns:<3} {r['rps']:9,.0f} req/s "
                          f"{r['predictions_per_s']:11,.0f} pred/s  p50 {r['p50_ms']:.2f} ms  "
                          f"p95 {r['p95_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  errors {r['errors']}",
                          flush=True)  # fmt: skip
            report(runs, args.rounds)
            for proc in procs:
                proc.terminate()
                proc.wait(10)
            procs.clear()
            scaled = sorted({n for n, conns in args.configs if conns == 64})
            if scaled and not args.no_workers and os.cpu_count() and os.cpu_count() > 1:
                if redis_server.proc is not None:
                    os.sched_setaffinity(redis_server.proc.pid, os.sched_getaffinity(0))
                workers = {}
                for n in (1, 2):
                    port = free_port()
                    procs.append(start([*tideline, "--port", str(port), "--workers", str(n)],
                                       port, "/v2/health/ready", cpu=None))  # fmt: skip
                    workers[n] = f"http://127.0.0.1:{port}/v1/models/fraud:predict"
                    wrk(workers[n], bodies[64], 16, 2, tmp, cpu=None)  # warm up
                runs += scaling(workers, bodies, scaled, tmp, args)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))


def configs(text: str) -> list[tuple[int, int]]:
    """``1x64,64x16`` -> [(1, 64), (64, 16)]: rows per request (1 or 64) x connections."""
    out = []
    for part in text.split(","):
        rows, _, conns = part.partition("x")
        if rows not in ("1", "64") or not conns.isdigit() or int(conns) < 1:
            raise argparse.ArgumentTypeError(f"{part!r}: want ROWSxCONNS, ROWS 1 or 64")
        out.append((int(rows), int(conns)))
    return out


def scaling(
    urls: dict[int, str],
    bodies: dict[int, Path],
    rows: list[int],
    tmp: Path,
    args: argparse.Namespace,
) -> list[dict]:
    """``--workers`` 1 and 2, nothing pinned, taking turns: requests/s and their ratio."""
    runs = []
    print("\n--workers, nothing pinned, 64 connections, median of the rounds:\n")
    print("| rows | workers | req/s | predictions/s | p50 ms | p95 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for n in rows:
        for rnd in range(args.rounds):
            for w in (1, 2) if rnd % 2 == 0 else (2, 1):
                r = wrk(urls[w], bodies[n], 64, args.seconds, tmp, cpu=None)
                r.update({"app": f"tideline server, {w} worker(s), unpinned", "workers": w,
                          "rows": n, "conns": 64, "round": rnd,
                          "predictions_per_s": r["rps"] * n})  # fmt: skip
                runs.append(r)
        for w in (1, 2):
            r = median_run(runs, f"tideline server, {w} worker(s), unpinned", n, 64)
            print(f"| {n} | {w} | {r['rps']:,.0f} | {r['predictions_per_s']:,.0f} | "
                  f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} |")  # fmt: skip
    for n in rows:
        at = {(r["workers"], r["round"]): r["rps"] for r in runs if r["rows"] == n}
        ratios = sorted(at[(2, k)] / at[(1, k)] for k in range(args.rounds))
        print(f"\n2 workers / 1, requests/s, {n} row(s): median {ratios[len(ratios) // 2]:.2f} "
              f"({ratios[0]:.2f}-{ratios[-1]:.2f})")  # fmt: skip
    return runs


def median_run(runs: list[dict], app: str, rows: int, conns: int) -> dict:
    """The app's median round of a configuration (by requests/s), errors summed over rounds."""
    mine = sorted(
        (r for r in runs if (r["app"], r["rows"], r["conns"]) == (app, rows, conns)),
        key=lambda r: r["rps"],
    )
    return {**mine[len(mine) // 2], "errors": sum(r["errors"] for r in mine)}


def report(runs: list[dict], rounds: int) -> None:
    configs = sorted({(r["rows"], r["conns"]) for r in runs})
    apps = list(dict.fromkeys(r["app"] for r in runs))
    print(f"\nMedian of {rounds} rounds.\n")
    print("| app | rows | conns | req/s | predictions/s | predictions per server CPU-s "
          "| p50 ms | p95 ms | p99 ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for app in apps:
        for rows, conns in configs:
            r = median_run(runs, app, rows, conns)
            print(f"| {app} | {rows} | {conns} | {r['rps']:,.0f} | {r['predictions_per_s']:,.0f} | "
                  f"{r['per_cpu_s'] * rows:,.0f} | "
                  f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} |")  # fmt: skip
    for metric, what in (("rps", "requests/s"), ("per_cpu_s", "requests per server CPU-second")):
        at = {(r["app"], r["rows"], r["conns"], r["round"]): r[metric] for r in runs}
        for other in ("bare Starlette (constant)", "FastAPI hand-tuned (orjson)"):
            parts = []
            for rows, conns in configs:
                ratios = sorted(
                    at[("tideline server", rows, conns, k)] / at[(other, rows, conns, k)]
                    for k in range(rounds)
                )
                parts.append(
                    f"{rows} row(s) x {conns} conns: {ratios[len(ratios) // 2]:.2f} "
                    f"({ratios[0]:.2f}-{ratios[-1]:.2f})"
                )
            print(
                f"\ntideline / {other}, {what}, median (range) of the rounds: " + ", ".join(parts)
            )


if __name__ == "__main__":
    main()
