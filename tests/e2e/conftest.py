"""The e2e suite's control plane, the chart installed on it, and the operator running.

One control plane per test session. The chart is installed with ``helm
install``; the operator then runs out of cluster as a subprocess
authenticated with a token of the chart's own ServiceAccount, so a verb
missing from the chart's RBAC fails the tests that need it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import yaml

from tests.e2e.cluster.controlplane import ControlPlane, free_port
from tests.helpers import manifest, wait_until
from tideline.demo.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[2]
RELEASE, NAMESPACE = "tideline", "tideline-system"


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    try:
        cp = ControlPlane()
    except RuntimeError as e:  # not built: `make e2e-bin` names what failed
        pytest.fail(str(e), pytrace=False)
    with cp:
        yield cp


def until(check: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> float:
    """Seconds until ``check()`` is truthy; fails the test past ``timeout``. A kubectl that
    fails, or an object without the field yet, is "not yet"."""
    return wait_until(check, timeout, 0.2, what,
                      ignoring=(subprocess.CalledProcessError, OSError, KeyError, IndexError,
                                TypeError))  # fmt: skip


def get(cp: ControlPlane, *args: str) -> dict:
    return json.loads(cp.kubectl("get", *args, "-o", "json").stdout)


@dataclass
class Installed:
    cluster: ControlPlane
    redis: EmbeddedRedis
    kubeconfig: Path  # the chart's ServiceAccount's

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return helm(self.cluster, *args, check=check)


def helm(cp: ControlPlane, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cp.bin / "helm"), f"--kubeconfig={cp.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=300,
    )


@pytest.fixture(scope="package")
def e2e_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


def install(cluster: ControlPlane, redis: EmbeddedRedis) -> Installed:
    """The chart installed with ``helm install`` against ``redis``, and a kubeconfig with a
    token of its ServiceAccount (the ``installed`` fixture; bench/portfolio.py too)."""
    third_party = ROOT / "tests" / "e2e" / "cluster" / "third-party-crds.yaml"
    cluster.kubectl("apply", "-f", str(third_party))
    cluster.kubectl("wait", "--for=condition=Established", "-f", str(third_party))
    helm(cluster, "install", RELEASE, str(ROOT / "charts" / "tideline"),
         "--namespace", NAMESPACE, "--create-namespace", "--set", f"redis.url={redis.url}")  # fmt: skip
    sa = RELEASE  # the release name contains the chart's: the full name is the release's
    token = cluster.kubectl("create", "token", sa, "-n", NAMESPACE, "--duration=2h").stdout.strip()
    return Installed(cluster, redis, cluster.kubeconfig_for(token, "operator"))


@pytest.fixture(scope="package")
def installed(cluster: ControlPlane, e2e_redis: EmbeddedRedis) -> Installed:
    return install(cluster, e2e_redis)


class PausingModel:
    """A model in its own namespace whose every canary stops at 10% until promoted: ``apply``
    a change of its params to start one, ``status`` to follow what the operator wrote (the
    kubectl plugin's and the Argo CD actions' tests steer it)."""

    def __init__(self, cluster: ControlPlane, namespace: str, name: str) -> None:
        self.cluster, self.namespace, self.name = cluster, namespace, name
        cluster.kubectl("create", "namespace", namespace, check=False)

    def status(self) -> dict:
        return get(self.cluster, "om", self.name, "-n", self.namespace).get("status") or {}

    def apply(self, params: dict) -> None:
        m = manifest(self.name, serving={"replicas": 1},
                     rollout={"steps": [{"setWeight": 10}, {"pause": {}}]})  # fmt: skip
        m["metadata"]["namespace"] = self.namespace
        m["spec"]["model"]["params"] = params
        self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(m))


class Operator:
    """`tideline operator` as a subprocess, with the chart's ServiceAccount's kubeconfig;
    ``root``: the checkout it runs from, ``env``: settings over the suite's."""

    def __init__(
        self, installed: Installed, log: Path, root: Path = ROOT, env: Mapping[str, str] = {}
    ) -> None:
        self.installed = installed
        self.log = log
        self.root = root
        self.env = dict(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0

    def start(self) -> Operator:
        self.metrics_port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.installed.kubeconfig),
            "TIDELINE_REDIS_URL": self.installed.redis.url,
            "TIDELINE_OPERATOR_INTERVAL": "0.5",
            "TIDELINE_RETIRED_GRACE_SECONDS": "2",
            "PYTHONPATH": f"{self.root / 'operator'}:{self.root / 'runtime'}",
            **self.env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tideline.cli", "--log-level=INFO", "operator",
             f"--peering={RELEASE}", f"--metrics-port={self.metrics_port}",
             f"--liveness=http://127.0.0.1:{free_port()}/healthz"],
            env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_mib(self, field: str = "VmRSS") -> float:
        """Its resident memory now, or another of /proc's ``Vm*`` (``VmHWM``: the peak)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as resp:
            return resp.read().decode()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]


@pytest.fixture(scope="package")
def operator(installed: Installed) -> Iterator[Operator]:
    op = Operator(installed, installed.cluster.dir / "operator.log").start()
    yield op
    op.stop()


@pytest.fixture
def rc(e2e_redis: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = e2e_redis.client()
    yield client
    client.close()
