"""What the real-pod tests and ``bench/pods.py`` share: the names, waits and looks at the
one-node cluster (``tests/e2e/cluster/node.py``), the chart on it with its bundled Redis,
and examples/fraud.yaml's pods.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tests.e2e.cluster.node import REDIS_IMAGE, RealCluster
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[3]
RELEASE, NAMESPACE = "tideline", "tideline-system"
REDIS_UID = 999  # the chart runs its Redis as 999


def until(check: Callable[[], object], timeout: float, what: str) -> float:
    """Seconds until ``check()`` is truthy; fails the test past ``timeout``. A kubectl that
    fails, an object without the field yet, or a Redis not reachable yet is "not yet"."""
    return wait_until(check, timeout, 0.5, what,
                      ignoring=(subprocess.CalledProcessError, OSError, KeyError, IndexError,
                                TypeError, ValueError, redis.RedisError))  # fmt: skip


def get(real: RealCluster, *args: str) -> dict[str, Any]:
    return json.loads(real.cp.kubectl("get", *args, "-o", "json").stdout)


def pods(real: RealCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    return get(real, "pods", "-n", namespace, "-l", selector)["items"]


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return pod["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


def all_ready(real: RealCluster, namespace: str, selector: str, n: int | None = None) -> bool:
    found = [
        p for p in pods(real, namespace, selector) if not p["metadata"].get("deletionTimestamp")
    ]
    return bool(found) and (n is None or len(found) == n) and all(ready(p) for p in found)


def explain(real: RealCluster, namespace: str) -> str:
    """What a timed-out wait shows: the pods, their events and the last log lines."""
    out = [real.cp.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout]
    out.append(real.cp.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp",
                               check=False).stdout[-4000:])  # fmt: skip
    for pod in pods(real, namespace, ""):
        name = pod["metadata"]["name"]
        log = real.cp.kubectl("logs", "-n", namespace, name, "--tail=30", check=False)
        out.append(f"--- {name}\n{log.stdout}{log.stderr}")
    return "\n".join(out)


@dataclass
class Release:
    real: RealCluster
    redis_password: str

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return helm(self.real, *args, check=check)

    def redis_url(self) -> str:
        svc = get(self.real, "service", "-n", NAMESPACE, f"{RELEASE}-redis")
        return f"redis://:{self.redis_password}@{svc['spec']['clusterIP']}:6379/0"

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url(), socket_timeout=10)


def helm(real: RealCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(real.cp.bin / "helm"), f"--kubeconfig={real.cp.kubeconfig}", *args],
        capture_output=True, text=True, check=check, timeout=300,
    )  # fmt: skip


def redis_volume(real: RealCluster) -> None:
    """A hostPath PersistentVolume for the bundled Redis's claim, owned by its user."""
    path = real.node.dir / "volumes" / "redis"
    path.mkdir(parents=True)
    import os

    os.chown(path, REDIS_UID, REDIS_UID)
    real.cp.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "tideline-redis-data"},
        "spec": {
            "capacity": {"storage": "8Gi"}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": "", "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(path), "type": "Directory"},
        },
    }))  # fmt: skip


MODEL, MODEL_NS = "fraud", "default"
COMPONENTS = {"learner": 1, "server": 2, "monitor": 1}  # examples/fraud.yaml's pods
SELECTOR = f"app.kubernetes.io/instance={MODEL}"


def model(real: RealCluster) -> dict[str, Any]:
    return get(real, "onlinemodel", MODEL, "-n", MODEL_NS)


def service_url(real: RealCluster, name: str = MODEL) -> str:
    svc = get(real, "service", name, "-n", MODEL_NS)
    port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "http")
    return f"http://{svc['spec']['clusterIP']}:{port}"


def columns(table: str) -> list[dict[str, str]]:
    """The rows of a ``kubectl get`` table by its header's names (fixed-width columns,
    some empty)."""
    header, *rows = table.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    spans = list(zip(starts, [*starts[1:], None], strict=True))
    return [{header[a:b].strip(): row[a:b].strip() for a, b in spans} for row in rows]


def container_pid(real: RealCluster, pod: dict[str, Any], container: str) -> int:
    """The host pid of a pod's container's first process (containerd's task)."""
    [status] = [s for s in pod["status"]["containerStatuses"] if s["name"] == container]
    cid = status["containerID"].removeprefix("containerd://")
    for line in real.node.ctr("tasks", "ls").stdout.splitlines()[1:]:
        task, pid, *_ = line.split()
        if task == cid:
            return int(pid)
    raise AssertionError(f"no task for {pod['metadata']['name']}/{container} ({cid})")


def install_chart(real: RealCluster) -> None:
    """``helm install`` of the chart with its bundled Redis (its claim bound to a hostPath
    volume made first); returns when helm does, before the pods are Ready."""
    redis_volume(real)
    helm(real, "install", RELEASE, str(ROOT / "charts" / "tideline"), "--namespace", NAMESPACE,
         "--create-namespace", "--set", "redis.bundled.enabled=true",
         "--set", f"redis.bundled.image={REDIS_IMAGE}")  # fmt: skip
