"""tideline on real pods: time to a first prediction, and what each pod uses idle and under load.

On the suite's one-node cluster (``tests/e2e/cluster/node.py``: a real kubelet, containerd,
runc, CNI, kube-proxy and CoreDNS in a network namespace of their own, in a slot of their
own, so this runs beside the tests), with the chart installed as a person would (``helm
install`` with the bundled Redis on a hostPath volume) and examples/fraud.yaml applied:

* how long ``helm install`` takes to the bundled Redis and the operator Ready;
* from ``kubectl apply -f examples/fraud.yaml`` to the learner, both servers and the
  monitor Ready, and to the first 200 answer to a V1 predict through the model's
  Service (a new connection every try, from the host). ``--repeats`` times: the model
  deleted, its pods gone, applied again (Redis keeps what the last one stored). One
  look every 0.25 s plus a kubectl call: the times are good to about half a second;
* each pod's RSS and CPU (operator, Redis, learner, each server, monitor), read from its
  containers' cgroups (v1: ``memory.usage_in_bytes`` less the page cache ``memory.stat``
  counts, the mean of 1 s samples idle and their peak under load; beside it the
  processes' VmRSS summed, which also counts the shared library pages charged to whichever
  cgroup read them first; CPU from ``cpuacct.usage`` over the window; CFS throttling from
  ``cpu.stat``), idle (``--idle`` seconds after ``--settle``) and under ``--rate`` one-row
  predictions/s through the Service, open loop, for ``--seconds`` after 3 s of warm-up,
  with ``--label-rate`` labelled rows/s to ``:learn`` beside them (batches of 20) so the
  learner works too. The load comes from an asyncio client on the host (uvloop, raw
  HTTP/1.1 on kept-alive connections: a request is sent when it is due, whatever the
  answers to the earlier ones; it reports the rate answered 2xx in the window, the
  errors, its connections and its own CPU; then how soon the learner counted every
  labelled row), next to each pod's requests and limits from its spec. A pod is flagged
  when its CPU or RSS under load passes its request, when its RSS comes within 20 % of
  its memory limit, or when it was throttled or restarted.

Nothing is asserted: it prints. On a shared 2-core machine (the load generator, the
control plane and every pod on the same cores) the numbers are noisy, and the CPU a pod
used is a better guide than its latency. Needs root, ``make e2e-bin`` and ``make
image``; run from the repository root as ``python -m bench.pods`` (it imports the e2e
suite's cluster and helpers). About 2 minutes with the defaults. ``--keep`` leaves the
cluster up at the end, with its kubeconfig printed, until Ctrl-C; Ctrl-C at any point
tears everything down.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop
from tests.e2e.cluster.node import RealCluster, runtime_archive
from tests.e2e.pods.kit import (
    COMPONENTS,
    MODEL,
    MODEL_NS,
    NAMESPACE,
    RELEASE,
    ROOT,
    SELECTOR,
    Release,
    all_ready,
    container_pid,
    explain,
    get,
    install_chart,
    pods,
    ready,
    service_url,
    until,
)

from tideline.contracts import Keys
from tideline.demo.simulate import SyntheticStream
from tideline.spec import parse

EXAMPLE = ROOT / "examples" / "fraud.yaml"
CGROUP = Path("/sys/fs/cgroup")
WARMUP = 3.0  # seconds of load before the window
POLL = 0.25  # seconds between looks while waiting for the first prediction
COMPONENT = "app.kubernetes.io/component"
LABEL_BATCH = 20
MiB = 1 << 20


# -- time to a first prediction ---------------------------------------------------------------
def install(real: RealCluster) -> dict[str, float]:
    """``helm install`` with the bundled Redis: seconds to Redis Ready, to the operator Ready."""
    started = time.monotonic()
    install_chart(real)
    took = {"helm install returned": time.monotonic() - started}
    waiting = {"Redis": "app.kubernetes.io/component=redis",
               "operator": "app.kubernetes.io/component=operator"}  # fmt: skip

    def both() -> bool:
        for what, selector in list(waiting.items()):
            if all_ready(real, NAMESPACE, selector, 1):
                took[f"{what} Ready"] = time.monotonic() - started
                del waiting[what]
        return not waiting

    until(both, 180, "the bundled Redis and the operator Ready")
    return took


def first_prediction(real: RealCluster, row: dict[str, Any]) -> dict[str, float]:
    """``kubectl apply`` -> each component's pods Ready, all Ready, the first 200 predict.

    Its own loop rather than ``until``: one ``kubectl get pods`` and one predict a turn,
    every ``POLL`` seconds, for times good to about half a second."""
    body = {"instances": [row]}
    started = time.monotonic()
    real.cp.kubectl("apply", "-n", MODEL_NS, "-f", str(EXAMPLE))
    took: dict[str, float] = {}
    url = None
    while "first 200" not in took or "all Ready" not in took:
        if time.monotonic() - started > 300:
            raise AssertionError("timed out after 300s waiting for fraud's pods and a 200")
        if "first 200" not in took:
            with contextlib.suppress(subprocess.CalledProcessError, StopIteration, KeyError):
                url = url or service_url(real)  # once the operator made the Service
            if url:
                with contextlib.suppress(httpx.HTTPError):
                    answer = httpx.post(f"{url}/v1/models/{MODEL}:predict", json=body, timeout=2)
                    if answer.status_code == 200:
                        took["first 200"] = time.monotonic() - started
        if "all Ready" not in took:
            with contextlib.suppress(subprocess.CalledProcessError):
                live = [p for p in pods(real, MODEL_NS, SELECTOR)
                        if not p["metadata"].get("deletionTimestamp")]  # fmt: skip
                now = time.monotonic() - started
                for component, n in COMPONENTS.items():
                    mine = [p for p in live
                            if p["metadata"]["labels"].get(COMPONENT) == component]  # fmt: skip
                    if component not in took and len(mine) == n and all(map(ready, mine)):
                        took[component] = now
                if all(c in took for c in COMPONENTS):
                    took["all Ready"] = max(took[c] for c in COMPONENTS)
        time.sleep(POLL)
    return took


def delete_model(real: RealCluster) -> dict[str, Any]:
    """``kubectl delete onlinemodel fraud``: seconds until it is gone (its finalizer run),
    until its pods are gone, and which pod went last."""
    started = time.monotonic()
    real.cp.kubectl("delete", "onlinemodel", MODEL, "-n", MODEL_NS, "--wait=true", "--timeout=180s")
    took: dict[str, Any] = {"OnlineModel gone": time.monotonic() - started}
    last = ""

    def gone() -> bool:
        nonlocal last
        left = pods(real, MODEL_NS, SELECTOR)
        if left:
            last = ", ".join(p["metadata"]["labels"].get(COMPONENT, "?") for p in left)
        return not left

    until(gone, 180, "fraud's pods gone")
    took["pods gone"] = time.monotonic() - started
    took["last"] = last
    return took


# -- cgroups ----------------------------------------------------------------------------------
def cgroup_dirs(pid: int) -> dict[str, Path]:
    """A process's memory, cpuacct and cpu cgroups (v1), from ``/proc/<pid>/cgroup``."""
    dirs = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(","):
            if c in ("memory", "cpuacct", "cpu"):
                dirs[c] = CGROUP / c / path.lstrip("/")  # cpu,cpuacct mounts link both names
    missing = {"memory", "cpuacct", "cpu"} - dirs.keys()
    if missing:
        raise RuntimeError(f"pid {pid}: no {', '.join(sorted(missing))} cgroup (cgroup v2?)")
    return dirs


@dataclass
class Sample:
    at: float
    cpu_ns: int
    rss: int
    periods: int
    throttled: int
    vmrss: int  # the processes' VmRSS summed: shared library pages too, wherever charged


def vmrss(pid: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0  # a kernel thread, or a zombie


def read_sample(cgroups: list[dict[str, Path]]) -> Sample:
    """A pod's containers summed: CPU time, memory less page cache, CFS periods throttled."""
    cpu = rss = periods = throttled = resident = 0
    for d in cgroups:
        for pid in (d["memory"] / "cgroup.procs").read_text().split():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # it just exited
                resident += vmrss(pid)
        cpu += int((d["cpuacct"] / "cpuacct.usage").read_text())
        stat = dict(
            (k, int(v))
            for k, v in (line.split() for line in (d["memory"] / "memory.stat").read_text().splitlines())
        )  # fmt: skip
        rss += int((d["memory"] / "memory.usage_in_bytes").read_text()) - stat["total_cache"]
        cfs = dict(line.split() for line in (d["cpu"] / "cpu.stat").read_text().splitlines())
        periods += int(cfs["nr_periods"])
        throttled += int(cfs["nr_throttled"])
    return Sample(time.monotonic(), cpu, rss, periods, throttled, resident)


@dataclass
class Window:
    samples: list[Sample] = field(default_factory=list)
    lost: bool = False  # a container went (restarted) during the window

    def cores(self) -> float:
        a, b = self.samples[0], self.samples[-1]
        return (b.cpu_ns - a.cpu_ns) / 1e9 / (b.at - a.at)

    def rss_mean(self) -> float:
        return statistics.fmean(s.rss for s in self.samples) / MiB

    def rss_peak(self) -> float:
        return max(s.rss for s in self.samples) / MiB

    def vmrss_peak(self) -> float:
        return max(s.vmrss for s in self.samples) / MiB

    def throttled(self) -> float:
        a, b = self.samples[0], self.samples[-1]
        return (b.throttled - a.throttled) / max(1, b.periods - a.periods)


@dataclass
class Pod:
    role: str
    name: str
    namespace: str
    requests: dict[str, str]
    limits: dict[str, str]
    restarts: int
    cgroups: list[dict[str, Path]]
    windows: dict[str, Window] = field(default_factory=dict)

    def sample(self, window: str) -> None:
        w = self.windows.setdefault(window, Window())
        if w.lost:
            return
        try:
            w.samples.append(read_sample(self.cgroups))
        except OSError:
            w.lost = True


def resources(spec: dict[str, Any], kind: str) -> dict[str, str]:
    """A pod's containers' requests or limits, summed (each pod here has one container)."""
    total: dict[str, float] = {}
    for c in spec["containers"]:
        for k, v in c.get("resources", {}).get(kind, {}).items():
            total[k] = total.get(k, 0.0) + quantity(v)
    return {k: (cores(v) if k == "cpu" else mebibytes(v)) for k, v in total.items()}


def cores(v: float) -> str:
    return f"{v:g}" if v == int(v) else f"{v * 1000:.0f}m"


def mebibytes(v: float) -> str:
    return f"{v / (1 << 30):g}Gi" if v % (1 << 30) == 0 else f"{v / MiB:.0f}Mi"


def quantity(text: str) -> float:
    """A Kubernetes quantity as a number: ``250m`` -> 0.25, ``1Gi`` -> 1073741824."""
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 1 << 10, "Mi": MiB,
                "Gi": 1 << 30, "Ti": 1 << 40}  # fmt: skip
    for s in sorted(suffixes, key=len, reverse=True):
        if text.endswith(s):
            return float(text[: -len(s)]) * suffixes[s]
    return float(text)


def find_pods(real: RealCluster) -> list[Pod]:
    """The operator, Redis, and fraud's pods, with their containers' cgroups."""
    found = []
    for namespace, selector in (
        (NAMESPACE, f"app.kubernetes.io/instance={RELEASE}"),
        (MODEL_NS, SELECTOR),
    ):
        for pod in pods(real, namespace, selector):
            if pod["metadata"].get("deletionTimestamp"):
                continue
            spec = pod["spec"]
            found.append(Pod(
                role=pod["metadata"]["labels"].get(COMPONENT, "?"),
                name=pod["metadata"]["name"], namespace=namespace,
                requests=resources(spec, "requests"), limits=resources(spec, "limits"),
                restarts=sum(s["restartCount"] for s in pod["status"]["containerStatuses"]),
                cgroups=[cgroup_dirs(container_pid(real, pod, c["name"])) for c in spec["containers"]],
            ))  # fmt: skip
    order = ["operator", "redis", "learner", "server", "monitor"]
    found.sort(key=lambda p: (order.index(p.role) if p.role in order else 9, p.name))
    return found


async def sample_every(pods_: list[Pod], window: str, seconds: float) -> None:
    """Each pod sampled once a second for ``seconds`` (first sample at once)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    k = 0
    while True:
        for p in pods_:
            p.sample(window)
        k += 1
        if k > seconds:
            return
        await asyncio.sleep(max(0.0, start + k - loop.time()))


# -- the load ---------------------------------------------------------------------------------
class Connections:
    """Kept-alive HTTP/1.1 connections to one address; raw requests, answers read by length.

    The connection idle longest takes the next request, so every one opened carries its
    share and the Service's spread of connections over the servers is the spread of
    requests (the most recently used, as a stack, would keep a few hot connections and
    load one server up to three times the other). A connection idle longer than
    ``IDLE`` is dropped rather than reused (the server's keep-alive, ``idle_timeout``, is
    5 s); one the server closed anyway gets its request again on a new connection
    (nothing of it was answered)."""

    IDLE = 3.0

    def __init__(self, host: str, port: int, limit: int = 512) -> None:
        self.host, self.port = host, port
        self.idle: collections.deque[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]]
        self.idle = collections.deque()
        self.slots = asyncio.Semaphore(limit)
        self.opened = 0

    async def request(self, raw: bytes, timeout: float) -> int:
        async with self.slots:
            return await asyncio.wait_for(self._request(raw), timeout)

    async def _request(self, raw: bytes) -> int:
        loop = asyncio.get_running_loop()
        for attempt in range(2):
            reused = False
            while self.idle:
                since, reader, writer = self.idle.popleft()  # the longest idle
                if loop.time() - since < self.IDLE and not reader.at_eof():
                    reused = True
                    break
                writer.close()
            else:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                self.opened += 1
            try:
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                headers = {k.strip().lower(): v.strip()
                           for k, _, v in (line.partition(":") for line in lines[1:] if line)}  # fmt: skip
                await reader.readexactly(int(headers["content-length"]))
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
                if reused and attempt == 0:  # closed by the server while idle: send it again
                    continue
                raise
            except BaseException:  # a timeout (cancelled), an answer not understood
                writer.close()
                raise
            if headers.get("connection", "").lower() == "close":
                writer.close()
            else:
                self.idle.append((loop.time(), reader, writer))
            return status
        raise AssertionError("unreachable")

    def close(self) -> None:
        while self.idle:
            self.idle.pop()[2].close()


@dataclass
class Load:
    """What one stream of requests got, counted for those sent within the window."""

    what: str
    sent: int = 0
    answers: collections.Counter[int] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    accepted: int = 0  # 2xx over the whole run, warm-up included
    connections: int = 0  # opened over the whole run

    def line(self, seconds: float, per_request: int) -> str:
        ok = sum(n for s, n in self.answers.items() if 200 <= s < 300)
        lat = sorted(self.latencies) or [0.0]
        pct = {q: lat[min(len(lat) - 1, int(q / 100 * len(lat)))] * 1000 for q in (50, 99)}
        other = {**{str(s): n for s, n in self.answers.items() if not 200 <= s < 300},
                 **self.errors}  # fmt: skip
        return (
            f"{self.what}: sent {self.sent / seconds * per_request:,.0f}/s, answered 2xx "
            f"{ok / seconds * per_request:,.0f}/s, errors {sum(other.values())}"
            + (f" ({', '.join(f'{k} x{n}' for k, n in sorted(other.items()))})" if other else "")
            + f", latency p50 {pct[50]:.1f} ms p99 {pct[99]:.1f} ms, "
            f"{self.connections} connection(s)"
        )


async def open_loop(
    conns: Connections,
    bodies: list[bytes],
    rate: float,
    until_s: float,
    window: tuple[float, float],
    load: Load,
) -> None:
    """``rate`` requests/s sent as they fall due, whatever the answers, for ``until_s``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: set[asyncio.Task[None]] = set()

    async def one(raw: bytes, at: float) -> None:
        counted = window[0] <= at < window[1]
        t0 = time.perf_counter()  # uvloop's clock counts whole milliseconds
        try:
            status = await conns.request(raw, timeout=5.0)
        except Exception as e:  # refused, reset, timed out, an answer not understood
            if counted:
                load.errors[type(e).__name__] += 1
            return
        if 200 <= status < 300:
            load.accepted += 1
        if counted:
            load.answers[status] += 1
            load.latencies.append(time.perf_counter() - t0)

    sent = 0
    while (now := loop.time() - start) < until_s:
        due = int(now * rate) + 1 - sent
        for _ in range(due):
            at = sent / rate
            if window[0] <= at < window[1]:
                load.sent += 1
            task = asyncio.create_task(one(bodies[sent % len(bodies)], at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(0.002)
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    load.connections = conns.opened


def raw_post(host: str, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def learned(real: RealCluster) -> Callable[[], int]:
    """The stable revision's learner's sample count, read from the bundled Redis."""
    secret = get(real, "secret", "-n", NAMESPACE, f"{RELEASE}-redis-auth")
    r = Release(real, base64.b64decode(secret["data"]["password"]).decode()).redis()
    key = Keys(MODEL_NS, MODEL).learner(
        get(real, "onlinemodel", MODEL, "-n", MODEL_NS)["status"]["stableRevision"]
    )
    return lambda: int(r.hget(key, "samples") or 0)


async def caught_up(samples: Callable[[], int], target: int, timeout: float) -> float | None:
    """Seconds until the learner counts ``target`` samples, None past ``timeout``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while samples() < target:
        if loop.time() - start > timeout:
            return None
        await asyncio.sleep(0.2)
    return loop.time() - start


async def measure(
    real: RealCluster, found: list[Pod], args: argparse.Namespace
) -> tuple[Load, Load, float, str]:
    """Idle, then under load: the pods sampled; the loads' counts, the client's CPU, and
    how the learner kept up."""
    print(f"[pods] settling {args.settle:.0f} s, then {args.idle:.0f} s idle", flush=True)
    await asyncio.sleep(args.settle)
    await sample_every(found, "idle", args.idle)
    url = service_url(real)
    host, port = url.removeprefix("http://").split(":")
    model = parse(EXAMPLE)
    stream = SyntheticStream([f.to_dict() for f in model.spec.model.features], "binary", seed=5)
    rows, _ = stream.take(1000)
    predict = [raw_post(host, f"/v1/models/{MODEL}:predict", orjson.dumps({"instances": [r]}))
               for r in rows]  # fmt: skip
    learn = []
    for _ in range(100):
        rows, y = stream.take(LABEL_BATCH)
        body = orjson.dumps({"instances": rows, "labels": y.tolist()})
        learn.append(raw_post(host, f"/v1/models/{MODEL}:learn", body))
    window = (WARMUP, WARMUP + args.seconds)
    predictions, labels = Load("predict, 1 row"), Load(f"learn, {LABEL_BATCH} rows")
    conns = [Connections(host, int(port)), Connections(host, int(port))]
    print(
        f"[pods] {args.rate:,.0f} predictions/s and {args.label_rate:,.0f} labelled rows/s "
        f"through {url} for {WARMUP:.0f} + {args.seconds:.0f} s",
        flush=True,
    )
    samples = learned(real)
    learned_before = samples()
    before = resource.getrusage(resource.RUSAGE_SELF)
    try:

        async def sampled() -> None:
            await asyncio.sleep(WARMUP)
            await sample_every(found, "load", args.seconds)

        await asyncio.gather(
            open_loop(conns[0], predict, args.rate, window[1], window, predictions),
            open_loop(conns[1], learn, args.label_rate / LABEL_BATCH, window[1], window, labels),
            sampled(),
        )
    finally:
        for c in conns:
            c.close()
    after = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / window[1]
    rows = labels.accepted * LABEL_BATCH
    lag = await caught_up(samples, learned_before + rows, 60)
    learner = (
        f"the learner counted all {rows:,} rows accepted, {lag:.1f} s after the load ended"
        if lag is not None
        else f"the learner counted {samples() - learned_before:,} of {rows:,} rows accepted, "
        "60 s after the load ended"
    )
    return predictions, labels, client_cpu, learner


# -- the report -------------------------------------------------------------------------------
def flags(p: Pod, restarts: int) -> list[str]:
    out = []
    load = p.windows.get("load")
    if load is None or len(load.samples) < 2:
        return ["no samples"]
    cores, rss = load.cores(), load.rss_peak()
    if "cpu" in p.requests and cores > quantity(p.requests["cpu"]):
        out.append("CPU > request")
    if "memory" in p.requests and rss * MiB > quantity(p.requests["memory"]):
        out.append("RSS > request")
    if "memory" in p.limits and rss * MiB >= 0.8 * quantity(p.limits["memory"]):
        out.append("RSS within 20 % of limit")
    if load.throttled() > 0.01:
        out.append(f"throttled {load.throttled():.0%} of periods")
    if load.lost or restarts > p.restarts:
        out.append(f"restarted ({restarts - p.restarts})")
    return out


def report(real: RealCluster, found: list[Pod]) -> None:
    now = {
        p["metadata"]["name"]: sum(s["restartCount"] for s in p["status"]["containerStatuses"])
        for ns, sel in ((NAMESPACE, f"app.kubernetes.io/instance={RELEASE}"), (MODEL_NS, SELECTOR))
        for p in pods(real, ns, sel)
    }
    print("\n| pod | RSS MiB idle | RSS MiB load (peak) | VmRSS MiB load (peak) | CPU cores idle "
          "| CPU cores load | requests | limits | flags |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for p in found:
        idle, load = p.windows.get("idle"), p.windows.get("load")

        def cell(w: Window | None, f: Callable[[Window], float], fmt: str) -> str:
            return format(f(w), fmt) if w is not None and len(w.samples) >= 2 else "-"

        name = p.role if p.role in ("operator", "redis") else f"{p.role} {p.name[-5:]}"
        req = ", ".join(f"{k} {v}" for k, v in sorted(p.requests.items())) or "-"
        lim = ", ".join(f"{k} {v}" for k, v in sorted(p.limits.items())) or "-"
        print(f"| {name} | {cell(idle, Window.rss_mean, '.0f')} | {cell(load, Window.rss_peak, '.0f')} "
              f"| {cell(load, Window.vmrss_peak, '.0f')} "
              f"| {cell(idle, Window.cores, '.3f')} | {cell(load, Window.cores, '.3f')} "
              f"| {req} | {lim} | {'; '.join(flags(p, now.get(p.name, p.restarts)))} |")  # fmt: skip


def times_table(runs: list[dict[str, float]]) -> None:
    keys = ["learner", "server", "monitor", "all Ready", "first 200"]
    print(f"\nkubectl apply -f examples/fraud.yaml -> (s), {len(runs)} run(s), the chart installed")
    print(
        "\n| until | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | median | max |"
    )
    print("|---|" + "---|" * (len(runs) + 2))
    for k in keys:
        values = [r[k] for r in runs]
        label = {"learner": "learner Ready", "server": "both servers Ready",
                 "monitor": "monitor Ready", "all Ready": "all four pods Ready",
                 "first 200": "first 200 from the Service (V1 predict)"}[k]  # fmt: skip
        print(f"| {label} | " + " | ".join(f"{v:.1f}" for v in values)
              + f" | {statistics.median(values):.1f} | {max(values):.1f} |")  # fmt: skip


# -- main -------------------------------------------------------------------------------------
def interrupted(signum: int, _frame: object) -> None:
    """The first Ctrl-C or SIGTERM unwinds to the cluster's ``__exit__``; more are ignored
    so they cannot cut its teardown short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pods", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="apply -> first prediction runs")
    ap.add_argument(
        "--rate", type=float, default=1000, help="predictions/s (1 row each) under load"
    )
    ap.add_argument(
        "--label-rate", type=float, default=200, help="labelled rows/s to :learn under load"
    )
    ap.add_argument(
        "--seconds", type=float, default=30, help="the load's window (after 3 s warm-up)"
    )
    ap.add_argument("--idle", type=float, default=20, help="the idle window")
    ap.add_argument("--settle", type=float, default=10, help="seconds before the idle window")
    ap.add_argument("--keep", action="store_true",
                    help="leave the cluster up at the end, its kubeconfig printed, until Ctrl-C")  # fmt: skip
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/pods.py starts a real node: it needs root", file=sys.stderr)
        return 1
    began = time.monotonic()
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        cluster = RealCluster([runtime_archive()])
    except RuntimeError as e:  # the image or the e2e binaries not built, or a tool missing
        print(f"bench/pods.py: {e}", file=sys.stderr)
        return 1
    try:
        with cluster as real:
            try:
                run(real, args)
            except AssertionError as e:  # a wait timed out
                print(f"[pods] {e}\n{explain(real, NAMESPACE)}\n{explain(real, MODEL_NS)}")
                return 1
            print(
                f"\n[pods] the bench took {time.monotonic() - began:.0f} s with the cluster's start"
            )
            if args.keep:
                print(
                    f"\nThe cluster is up (Ctrl-C stops it and removes everything it made):\n\n"
                    f"  export KUBECONFIG={real.cp.kubeconfig} PATH={real.cp.bin}:$PATH\n"
                    f"  kubectl get om,pods -A\n",
                    flush=True,
                )
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(3600)
            print("[pods] stopping the cluster", flush=True)
    except KeyboardInterrupt:
        print("\n[pods] interrupted: the cluster is torn down", file=sys.stderr)
        return 130
    return 0


def run(real: RealCluster, args: argparse.Namespace) -> None:
    installed = install(real)
    print(
        "[pods] helm install -> " + ", ".join(f"{k} {v:.1f} s" for k, v in installed.items()),
        flush=True,
    )
    model = parse(EXAMPLE)
    [row], _ = SyntheticStream(
        [f.to_dict() for f in model.spec.model.features], "binary", seed=1
    ).take(1)
    runs, deletes = [], []
    for i in range(args.repeats):
        if i:
            deletes.append(delete_model(real))
            d = deletes[-1]
            print(f"[pods] delete: OnlineModel gone {d['OnlineModel gone']:.1f} s, pods gone "
                  f"{d['pods gone']:.1f} s (the last: {d['last'] or '-'})", flush=True)  # fmt: skip
            if d["pods gone"] > 20:  # slow: what the events say
                print(real.cp.kubectl("get", "events", "-n", MODEL_NS, "--sort-by=.lastTimestamp",
                                      check=False).stdout[-3000:], flush=True)  # fmt: skip
        runs.append(first_prediction(real, row))
        print(f"[pods] run {i + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in runs[-1].items()),
              flush=True)  # fmt: skip
    found = find_pods(real)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        predictions, labels, client, learner = runner.run(measure(real, found, args))
    print("\nhelm install (bundled Redis, hostPath volume) -> (s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in installed.items()))  # fmt: skip
    for d in deletes:
        print(f"kubectl delete onlinemodel fraud -> gone {d['OnlineModel gone']:.1f} s, its pods "
              f"gone {d['pods gone']:.1f} s (the last: {d['last'] or '-'})")  # fmt: skip
    times_table(runs)
    print(f"\nUnder load, {args.seconds:.0f} s window after {WARMUP:.0f} s warm-up "
          f"(the client on the host used {client:.2f} cores):")  # fmt: skip
    print("  " + predictions.line(args.seconds, 1))
    print("  " + labels.line(args.seconds, LABEL_BATCH) + " (rates in rows)")
    print(f"  {learner}")
    servers = [p.windows["load"] for p in found if p.role == "server" and "load" in p.windows]
    answered = sum(n for st, n in predictions.answers.items() if 200 <= st < 300)
    if answered and all(len(w.samples) >= 2 for w in servers):
        per = sum(w.cores() for w in servers) * args.seconds / answered * 1e6
        print(
            f"  the servers' CPU per prediction answered: {per:.0f} µs (both servers, "
            "the learn requests they took in too)"
        )
    report(real, found)
    print(
        "\nRSS: memory.usage_in_bytes less memory.stat total_cache (what the memory limit "
        "holds the container to, less page cache it can give back), the mean of 1 s samples "
        "idle, their peak under load. VmRSS: the containers' processes' VmRSS summed, shared "
        "library pages included (the runtime image's numpy and Python, charged to whichever "
        "cgroup first read them). CPU: cpuacct.usage over the window. Flags: CPU or RSS "
        "under load past the request, RSS within 20 % of the memory limit, CFS throttling, "
        f"restarts. {os.cpu_count()} cores shared with the client, the control plane and "
        "whatever else runs: noisy."
    )


if __name__ == "__main__":
    raise SystemExit(main())
