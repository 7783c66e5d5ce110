"""The operator at portfolio scale: N OnlineModels applied at once, the time to all Healthy,
the operator's memory and its turn time, this checkout against an older commit.

On the e2e suite's control plane (``tests/e2e/cluster/controlplane.py``: etcd,
kube-apiserver, kube-controller-manager, kube-scheduler and kwok's one fake node, so the
models' pods reach Running without a kubelet), with the chart installed once (``helm
install`` against an embedded Redis, as the suite's ``installed`` fixture does), each run:

* starts ``tideline operator`` out of cluster from one tree (this checkout, or with
  ``--before <commit>`` that commit, checked out into a temporary ``git worktree`` that is
  removed at the end) with a token of the chart's ServiceAccount, the chart's default
  turn interval (``--interval``, 1 s) and its 16 workers;
* applies ``--models`` OnlineModels (the e2e suite's small binary SGD model, one server
  replica) in one ``kubectl apply`` into a fresh namespace, and counts the Healthy ones
  every ``--sample`` seconds with one list call, up to ``--timeout``;
* keeps the models ``--steady`` seconds more, all Healthy, nothing changing: the turns a
  portfolio costs when nothing happens;
* deletes the namespace (the operator removes its finalizers) and waits for it to go,
  then stops the operator.

Columns: ``apply`` the ``kubectl apply`` itself; ``healthy`` seconds from the apply to
the last model Healthy (``>`` and the count when ``--timeout`` came first); ``RSS`` the
operator's peak (``VmHWM``, which also sees the peaks between samples) and at the end of
the steady window, in MiB (the goal: <= 300); then per window - to all Healthy, and
steady - the turns a second (``tideline_operator_reconciles_total``) and their time from
``tideline_operator_decision_seconds`` (observe + decide + apply per model turn): mean,
and p50 / p95 interpolated within the histogram's buckets as Prometheus'
``histogram_quantile`` does (so good to a bucket: 1, 2.5, 5, 10, 25, 50, 100, 250 ms...);
``errors`` turns whose result was not ``ok``; ``delete`` seconds for the namespace to go.
A steady window keeps up when its turns a second come near ``models / interval``.

Nothing is asserted: it prints a row per run and a summary per tree. ``--rounds`` runs
the trees in turn (before, after, before, after...) so a machine whose load drifts
still compares them side by side. On a shared 2-core machine the operator shares the
cores with the whole control plane, whose kube-controller-manager creates each model's
ReplicaSets and pods at its default 20 requests/s: the time to Healthy is the cluster's
as much as the operator's, the turn time and memory are the operator's own. Needs ``make
e2e-bin``; run from the repository root as ``python -m bench.portfolio`` (it imports the
e2e suite's cluster and fixtures). With ``--before``, about 4 minutes at ``--models 50`` and
41 at 1,000 here (each tree: ~6 min to apply them, ~8 more to all Healthy, ~5 to delete).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.e2e.cluster.controlplane import NODE, ControlPlane
from tests.e2e.conftest import ROOT, Installed, Operator, install
from tests.e2e.test_operator import _model, _ns

from tideline.demo.embedded import EmbeddedRedis

DECISION = "tideline_operator_decision_seconds"
RECONCILES = "tideline_operator_reconciles"
GOAL_MIB = 300.0
# a Service a model (the suite's /24 holds 252 of them: "failed to allocate a serviceIP")
SERVICE_CIDR = "10.0.0.0/16"
PROGRESS = 30.0  # seconds between two progress lines (stderr)


# --------------------------------------------------------------------------- the histogram
@dataclass(frozen=True)
class Turns:
    """The operator's turn metrics at one moment; ``b - a`` is what happened in between."""

    buckets: tuple[tuple[float, float], ...] = ()  # (upper bound, cumulative count), +Inf last
    seconds: float = 0.0
    results: dict[str, float] = field(default_factory=dict)  # reconciles by result
    crd_outdated: float = float("nan")

    @classmethod
    def parse(cls, text: str) -> Turns:
        buckets: list[tuple[float, float]] = []
        seconds, results, outdated = 0.0, {}, float("nan")
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == f"{DECISION}_bucket":
                    buckets.append((float(s.labels["le"]), s.value))
                elif s.name == f"{DECISION}_sum":
                    seconds = s.value
                elif s.name == f"{RECONCILES}_total":
                    results[s.labels["result"]] = s.value
                elif s.name == "tideline_operator_crd_outdated":
                    outdated = s.value
        return cls(tuple(sorted(buckets)), seconds, results, outdated)

    def __sub__(self, before: Turns) -> Turns:
        was = dict(before.buckets)
        return Turns(
            tuple((le, n - was.get(le, 0.0)) for le, n in self.buckets),
            self.seconds - before.seconds,
            {k: v - before.results.get(k, 0.0) for k, v in self.results.items()},
            self.crd_outdated,
        )

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    @property
    def errors(self) -> float:
        return sum(v for k, v in self.results.items() if k != "ok")

    def mean_ms(self) -> float:
        return 1000 * self.seconds / self.count if self.count else math.nan

    def quantile_ms(self, q: float) -> float:
        """``histogram_quantile``: linear within the bucket the rank falls in; the highest
        finite bound when it falls in +Inf."""
        if not self.count:
            return math.nan
        rank = q * self.count
        lo, below = 0.0, 0.0
        for le, n in self.buckets:
            if n >= rank:
                if math.isinf(le):
                    return 1000 * lo
                return 1000 * (lo + (le - lo) * (rank - below) / (n - below))
            lo, below = le, n
        return 1000 * lo


# --------------------------------------------------------------------------- one run
@dataclass
class Run:
    tree: str
    models: int
    apply_s: float = math.nan
    healthy: int = 0
    healthy_s: float = math.nan  # nan: the timeout came first
    waited_s: float = math.nan
    phases: Counter[str] = field(default_factory=Counter)
    peak_mib: float = math.nan
    end_mib: float = math.nan
    to_healthy: Turns = field(default_factory=Turns)
    to_healthy_s: float = math.nan
    steady: Turns = field(default_factory=Turns)
    steady_s: float = math.nan
    delete_s: float = math.nan
    note: str = ""


def phases(cp: ControlPlane, ns: str) -> Counter[str]:
    """Models by status.phase (``<none>``: none yet), one list call."""
    out = cp.kubectl("get", "onlinemodels", "-n", ns, "--no-headers",
                     "-o", "custom-columns=P:.status.phase").stdout  # fmt: skip
    return Counter(out.split())


def _exists(cp: ControlPlane, ns: str) -> bool:
    try:
        return cp.kubectl("get", "namespace", ns, check=False).returncode == 0
    except subprocess.TimeoutExpired:  # a busy API server: still there, as far as we know
        return True


def unblock(cp: ControlPlane, ns: str) -> None:
    """The models left in ``ns`` replaced without their finalizers, all in one call."""
    left = json.loads(cp.kubectl("get", "onlinemodels", "-n", ns, "-o", "json").stdout)
    for item in left["items"]:
        item["metadata"]["finalizers"] = []
    kubectl_long(cp, "replace", "-f", "-", input=json.dumps(left), check=False)


def kubectl_long(cp: ControlPlane, *args: str, input: str, check: bool = True) -> None:
    """kubectl without ``cp.kubectl``'s 120 s timeout, too short for thousands of objects
    on 2 busy cores."""
    subprocess.run([str(cp.bin / "kubectl"), f"--kubeconfig={cp.kubeconfig}", *args],
                   input=input, capture_output=True, text=True, check=check)  # fmt: skip


def wait_ready(op: Operator, timeout: float = 120.0) -> Turns:
    """The operator's metrics once it serves them (it is up), or why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not op.alive():
            raise RuntimeError(f"the operator exited:\n{op.tail()}")
        with contextlib.suppress(OSError):
            return Turns.parse(op.metrics())
        time.sleep(0.5)
    raise RuntimeError(f"the operator's /metrics did not answer in {timeout:.0f}s:\n{op.tail()}")


def sample_until(
    cp: ControlPlane, ns: str, op: Operator, run: Run, args: argparse.Namespace, start: float
) -> None:
    """Every ``--sample`` s the phases, until all Healthy or ``--timeout`` after ``start`` (the
    apply's); a progress line (the RSS too) every ``PROGRESS`` s."""
    said = time.monotonic()
    while True:
        with contextlib.suppress(subprocess.SubprocessError):
            run.phases = phases(cp, ns)
        run.healthy = run.phases["Healthy"]
        run.waited_s = time.monotonic() - start
        if time.monotonic() - said >= PROGRESS:
            said = time.monotonic()
            print(f"  [{run.tree} {run.waited_s:5.0f}s] {dict(run.phases)}, RSS {op.rss_mib():.0f} MiB",
                  file=sys.stderr, flush=True)  # fmt: skip
        if run.healthy == run.models:
            run.healthy_s = run.waited_s
            return
        if not op.alive():
            run.note = f"operator exited ({op.proc.returncode if op.proc else '?'})"
            return
        if run.waited_s > args.timeout:
            run.note = f"timed out: {dict(run.phases)}"
            return
        time.sleep(args.sample)


def play(installed: Installed, tree: str, root: Path, k: int, args: argparse.Namespace) -> Run:
    cp = installed.cluster
    run = Run(tree, args.models)
    ns = _ns(installed, f"portfolio-{k}")
    log = cp.dir / f"operator-{k}-{tree}.log"
    op = Operator(installed, log, root, {"TIDELINE_OPERATOR_INTERVAL": str(args.interval)})
    op.start()
    try:
        before = wait_ready(op)
        if before.crd_outdated == 1:
            run.note = "reports the CRD outdated; "
        docs = yaml.safe_dump_all([_model(f"m{i:04d}", ns) for i in range(args.models)])
        began = time.monotonic()
        kubectl_long(cp, "apply", "-f", "-", input=docs)
        run.apply_s = time.monotonic() - began
        sample_until(cp, ns, op, run, args, began)
        healthy = Turns.parse(op.metrics())
        run.to_healthy, run.to_healthy_s = healthy - before, time.monotonic() - began
        if run.healthy == run.models and args.steady > 0:
            time.sleep(args.steady)
            run.steady = Turns.parse(op.metrics()) - healthy
            run.steady_s = time.monotonic() - began - run.to_healthy_s
        run.peak_mib, run.end_mib = op.rss_mib("VmHWM"), op.rss_mib()
        began = time.monotonic()
        cp.kubectl("delete", "namespace", ns, "--wait=false")
        while _exists(cp, ns):
            if time.monotonic() - began > args.timeout:
                run.note += f"namespace {ns} still there after {args.timeout:.0f}s"
                unblock(cp, ns)  # or the next run's operator would be deleting them
                break
            time.sleep(args.sample)
        else:
            run.delete_s = time.monotonic() - began
    finally:
        op.stop()
    return run


# --------------------------------------------------------------------------- the table
HEADER = (
    f"{'tree':>9} {'models':>6} {'apply':>6} {'healthy':>9} {'peak':>5} {'end':>5}"
    f" | {'turns/s':>7} {'mean':>6} {'p50':>6} {'p95':>6} {'errors':>6}"
    f" | {'steady/s':>8} {'mean':>6} {'p50':>6} {'p95':>6} | {'delete':>6}"
)
UNITS = (
    f"{'':>9} {'':>6} {'s':>6} {'s':>9} {'MiB':>5} {'MiB':>5}"
    f" | {'(to all Healthy)':>34}"
    f" | {'(steady; ms)':>29} | {'s':>6}"
)


def _window(t: Turns, seconds: float) -> str:
    rate = t.count / seconds if seconds and not math.isnan(seconds) else math.nan
    return (
        f"{rate:>7.1f} {t.mean_ms():>6.1f} {t.quantile_ms(0.5):>6.1f} {t.quantile_ms(0.95):>6.1f}"
    )


def line(r: Run) -> str:
    healthy = (
        f"{r.healthy_s:>9.0f}"
        if not math.isnan(r.healthy_s)
        else f"{f'>{r.waited_s:.0f} ({r.healthy})':>9}"
    )
    return (
        f"{r.tree:>9} {r.models:>6} {r.apply_s:>6.1f} {healthy} {r.peak_mib:>5.0f} {r.end_mib:>5.0f}"
        f" | {_window(r.to_healthy, r.to_healthy_s)} {r.to_healthy.errors:>6.0f}"
        f" | {_window(r.steady, r.steady_s):>8} | {r.delete_s:>6.0f}"
        + (f"  {r.note}" if r.note else "")
    )


def summary(tree: str, runs: list[Run], interval: float) -> str:
    def med(xs: list[float]) -> float:
        xs = [x for x in xs if not math.isnan(x)]
        return statistics.median(xs) if xs else math.nan

    peak = max(r.peak_mib for r in runs)
    done = sum(r.healthy == r.models for r in runs)
    steady = med([r.steady.count / r.steady_s for r in runs if r.steady_s > 0])
    return (
        f"{tree}: {done} of {len(runs)} run(s) all Healthy, median {med([r.healthy_s for r in runs]):.0f} s"
        f" ({med([r.models / r.healthy_s for r in runs]):.1f} models/s); peak RSS {peak:.0f} MiB"
        f" ({'within' if peak <= GOAL_MIB else 'over'} the {GOAL_MIB:.0f} MiB goal); turn mean"
        f" {med([r.to_healthy.mean_ms() for r in runs]):.1f} ms to Healthy,"
        f" {med([r.steady.mean_ms() for r in runs]):.1f} ms steady; steady {steady:.0f} turns/s"
        f" of the {runs[0].models / interval:.0f} the interval asks"
    )


# --------------------------------------------------------------------------- the trees
def room_for_pods(cp: ControlPlane, pods: int) -> None:
    """The fake node's pod capacity raised to ``pods`` (the suite's 3,000 hold 999 models of
    3 pods each: the last one's monitor stays Pending, "Too many pods")."""
    room = {"pods": str(max(pods, int(NODE["status"]["capacity"]["pods"])))}
    cp.kubectl("patch", "node", NODE["metadata"]["name"], "--subresource=status", "--type=merge",
               "-p", json.dumps({"status": {"capacity": room, "allocatable": room}}))  # fmt: skip


@contextlib.contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """``commit`` checked out into a temporary worktree of this repository, removed after."""
    path = Path(tempfile.mkdtemp(prefix="tideline-before-"))
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", str(path), commit],
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(path)], check=False)


def short(commit: str) -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", commit],
                         check=True, capture_output=True, text=True)  # fmt: skip
    return out.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=1000, help="OnlineModels applied at once")
    ap.add_argument("--before", metavar="COMMIT", help="also run the operator of this commit")
    ap.add_argument("--rounds", type=int, default=1, help="runs per tree, the trees in turn")
    ap.add_argument("--timeout", type=float, default=1800.0,
                    help="seconds per run to all Healthy (and for the namespace to go)")  # fmt: skip
    ap.add_argument("--interval", type=float, default=1.0,
                    help="the operator's turn interval (the chart's default: 1 s)")  # fmt: skip
    ap.add_argument("--steady", type=float, default=30.0,
                    help="seconds kept all Healthy after the last one (0: none)")  # fmt: skip
    ap.add_argument("--sample", type=float, default=2.0, help="seconds between two looks")
    args = ap.parse_args()
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        trees: list[tuple[str, Path]] = []
        if args.before:
            trees.append((short(args.before), stack.enter_context(worktree(args.before))))
        trees.append((short("HEAD") + ("+" if _dirty() else ""), ROOT))  # +: uncommitted edits
        cp = stack.enter_context(ControlPlane(service_cidr=SERVICE_CIDR))
        room_for_pods(cp, 4 * args.models + 100)
        installed = install(cp, stack.enter_context(EmbeddedRedis()))
        print(f"control plane and chart up in {time.monotonic() - began:.0f}s; logs in {cp.dir}"
              " (kept with TIDELINE_E2E_KEEP=1)")  # fmt: skip
        print(f"{HEADER}\n{UNITS}", flush=True)
        runs: dict[str, list[Run]] = {}
        for k in range(args.rounds * len(trees)):
            tree, root = trees[k % len(trees)]
            r = play(installed, tree, root, k, args)
            runs.setdefault(tree, []).append(r)
            print(line(r), flush=True)
        print(
            f"\n{args.models} models, interval {args.interval:g} s, {time.monotonic() - began:.0f} s in all"
        )
        for tree, rs in runs.items():
            print(summary(tree, rs, args.interval))


def _dirty() -> bool:
    out = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                         capture_output=True, text=True)  # fmt: skip
    return bool(out.stdout.strip())


if __name__ == "__main__":
    main()
