"""The Kubernetes calls the operator makes, played by processes on this machine.

:class:`ProcessCluster` answers what :class:`tideline_operator.reconcile.Reconciler`
asks of the API server (apply, get, list, delete), so ``tideline run`` drives
the operator's own reconcile code - ``decide`` included - without a cluster.
A ConfigMap becomes a directory of files; a Deployment becomes ``replicas``
child processes running its container's arguments (``tideline learner ...``,
``tideline server ...``, ``tideline monitor ...``) with the config path,
the Redis URL and the ports rewritten for loopback, and the environment a
Secret would fill taken from ``secrets``; Services, budgets and autoscalers
are recorded and otherwise ignored.
"""

from __future__ import annotations

import builtins
import copy
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tideline.demo.embedded import free_port


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    role: str
    ready: bool = False
    checked: float = 0.0
    stopping: bool = False  # stopped on purpose: its exit is no failure


@dataclass
class Workload:
    """One Deployment's processes."""

    obj: dict[str, Any]
    procs: list[Proc] = field(default_factory=list)


def matches_selector(labels: dict[str, str], selector: str) -> bool:
    """Whether labels satisfy an equality-based selector such as ``a=b,c=d``."""
    want = dict(kv.split("=", 1) for kv in selector.split(",") if kv)
    return all(labels.get(k) == v for k, v in want.items())


class ProcessCluster:
    def __init__(
        self, workdir: Path, redis_url: str, secrets: dict[str, dict[str, str]] | None = None
    ) -> None:
        self.dir = workdir
        self.redis_url = redis_url
        # Secrets by name, then key: what a container's env reads with secretKeyRef (one
        # that names none here is left unset, and the process decides: a server whose
        # spec has feedbackAuth refuses to start without its token)
        self.secrets = secrets or {}
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.workloads: dict[str, Workload] = {}
        self.lock = threading.RLock()  # the operator's thread applies, the main one reads
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)

    # -- what Reconciler calls ----------------------------------------------------------
    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return self._apply(obj)

    def _apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        key = (obj["kind"], obj["metadata"]["name"])
        self.objects[key] = obj
        if obj["kind"] == "ConfigMap":
            d = self.dir / obj["metadata"]["name"]
            d.mkdir(exist_ok=True)
            for name, text in (obj.get("data") or {}).items():
                (d / name).write_text(text)
        elif obj["kind"] == "Deployment":
            self._deploy(obj)
        return obj

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:  # fmt: skip
        return [o for (k, _), o in self.objects.items()
                if k == kind and matches_selector(o["metadata"].get("labels") or {}, selector)]  # fmt: skip

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        with self.lock:
            if kind == "Deployment" and name in self.workloads:
                self._stop(self.workloads.pop(name).procs)
            return self.objects.pop((kind, name), None) is not None

    def has_api(self, group_version: str, plural: str) -> bool:
        return False

    def merge_patch(self, obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError("no Gateway API on one machine: use trafficRouting: builtin")

    # -- what the kopf index would report -------------------------------------------------
    def children(self) -> builtins.list[Any]:
        from tideline_operator.reconcile import ChildState

        out = []
        with self.lock:
            workloads = list(self.workloads.items())
        for name, w in workloads:
            labels = w.obj["metadata"]["labels"]
            out.append(ChildState(name=name, component=labels.get("tideline.dev/component", ""),
                                  revision=labels.get("tideline.dev/revision"),
                                  replicas=len(w.procs), ready=sum(self._ready(p) for p in w.procs)))  # fmt: skip
        return out

    def endpoints(self, component: str = "server") -> builtins.list[int]:
        """Ports of the ready processes of one component (any revision)."""
        with self.lock:
            procs = [p for w in self.workloads.values() for p in w.procs]
        return [p.port for p in procs if p.role == component and self._ready(p)]

    def failed(self) -> builtins.list[str]:
        """Processes that exited on their own, with their last log lines."""
        out = []
        with self.lock:
            workloads = list(self.workloads.items())
        for name, w in workloads:
            for p in list(w.procs):
                if p.popen.poll() is not None and not p.stopping:
                    tail = p.log.read_text(errors="replace")[-1500:]
                    out.append(f"{name} exited with {p.popen.returncode}:\n{tail}")
        return out

    def stop(self) -> None:
        with self.lock:
            for w in self.workloads.values():
                self._stop(w.procs)
            self.workloads.clear()

    # -- processes ------------------------------------------------------------------------
    def _deploy(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        spec = obj["spec"]
        w = self.workloads.get(name)
        if w is not None and w.obj["spec"]["template"] != spec["template"]:
            self._stop(w.procs)  # a new pod template: replace every process
            w = None
        if w is None:
            w = self.workloads[name] = Workload(obj)
        w.obj = obj
        want = int(spec.get("replicas", 1))
        while len(w.procs) < want:
            w.procs.append(self._start(obj, len(w.procs)))
        while len(w.procs) > want:
            self._stop([w.procs.pop()])

    def _start(self, obj: dict[str, Any], index: int) -> Proc:
        pod = obj["spec"]["template"]["spec"]
        container = pod["containers"][0]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
        port = free_port()
        args: builtins.list[str] = []
        it = iter(container["args"])
        for a in it:
            if a == "--port":
                args += [a, str(port)]
                next(it)
            elif a == "--config":
                path = next(it)
                mount = next(m for m in mounts if path.startswith(m + "/"))
                cm = mounts[mount]["configMap"]["name"]
                args += [a, str(self.dir / cm / path[len(mount) + 1 :])]
            else:
                args.append(a.replace("$(TIDELINE_REDIS_URL)", self.redis_url))
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        for e in container.get("env", []):
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            value = self.secrets.get(ref["name"], {}).get(ref["key"]) if ref else None
            if value is not None:
                env[e["name"]] = value
        env["TIDELINE_REDIS_URL"] = self.redis_url
        log = self.dir / "logs" / f"{obj['metadata']['name']}-{index}.log"
        popen = subprocess.Popen(
            [sys.executable, "-m", "tideline.cli", "--log-level", "WARNING", *args],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        return Proc(popen, port, log, container["name"])

    def _ready(self, p: Proc) -> bool:
        if p.popen.poll() is not None:
            p.ready = False
            return False
        if p.ready:
            return True
        now = time.monotonic()
        if now - p.checked < 0.25:
            return False
        p.checked = now
        path = "/v2/health/ready" if p.role == "server" else "/metrics"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=0.5)
            conn.request("GET", path)
            p.ready = conn.getresponse().status == 200
            conn.close()
        except OSError:
            p.ready = False
        return p.ready

    @staticmethod
    def _stop(procs: builtins.list[Proc]) -> None:
        for p in procs:
            p.stopping = True
            if p.popen.poll() is None:
                os.killpg(p.popen.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.popen.pid, signal.SIGKILL)
                p.popen.wait()
