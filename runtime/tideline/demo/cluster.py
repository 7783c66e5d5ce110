"""The Kubernetes calls the operator makes, played by processes on this machine.

:class:`ProcessCluster` answers what :class:`tideline_operator.reconcile.Reconciler`
asks of the API server (apply, get, list, delete), so ``tideline run`` drives
the operator's own reconcile code - ``decide`` included - without a cluster.
A ConfigMap becomes a directory of files; a Deployment becomes ``replicas``
child processes running its container's arguments (``tideline learner ...``,
``tideline server ...``, ``tideline monitor ...``) with the config path,
the Redis URL and the ports rewritten for loopback, and the environment a
Secret would fill taken from ``secrets`` and from the Secrets the operator
writes - the model's signing key among them, which the operator's own code
makes when it finds none, so each run has a key of its own, handed to every
process (:mod:`tideline.signing`); Services, budgets and autoscalers are
recorded and otherwise ignored.

The restart policy is Kubernetes' (``restartPolicy: Always``): a process that
exits on its own is started again in its place by :meth:`ProcessCluster.restart_exited`
(the caller's loop plays the kubelet) after a back-off that doubles with each
exit of that process - :data:`BACKOFF` seconds first, :data:`BACKOFF_CAP` at most,
back to the first once it ran :data:`BACKOFF_RESET` seconds (the demo's timescale,
where a kubelet waits 10 s to 5 minutes). Each exit is a :class:`Restart` in
:attr:`ProcessCluster.restarts`, and a process's restarts are counted on it.
"""

from __future__ import annotations

import base64
import builtins
import copy
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tideline.demo.embedded import free_port

BACKOFF = 1.0  # seconds before the first restart of a process that exited
BACKOFF_CAP = 16.0  # doubled with each exit, up to this
BACKOFF_RESET = 60.0  # a process that ran this long starts over from BACKOFF


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    role: str
    ready: bool = False
    checked: float = 0.0
    stopping: bool = False  # stopped on purpose: its exit is no failure
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0  # how many times this process (its place in the Deployment) restarted
    backoff: float = 0.0  # the wait before this one's restart, once it exits
    due: float | None = None  # exited: when it is started again


@dataclass(frozen=True)
class Restart:
    """A process that exited on its own, and when it is started again."""

    t: float  # monotonic, when its exit was seen
    workload: str
    index: int
    code: int | None
    tail: str  # its log's last lines
    backoff: float  # seconds until it is started again
    count: int  # its restarts, this one included


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
    def _pythonpath(self) -> dict[str, str]:
        if not self.import_path:
            return {}
        given = os.environ.get("PYTHONPATH")
        return {"PYTHONPATH": os.pathsep.join([*self.import_path, *([given] if given else [])])}

    def __init__(
        self, workdir: Path, redis_url: str, secrets: dict[str, dict[str, str]] | None = None,
        import_path: Sequence[Path] = (),
    ) -> None:  # fmt: skip
        """``import_path``: folders put first on the processes' ``PYTHONPATH`` (a team's
        package beside its manifest, found as the team's image would find it)."""
        self.dir = workdir
        self.redis_url = redis_url
        self.import_path = [str(p) for p in import_path]
        # Secrets by name, then key: what a container's env reads with secretKeyRef (one
        # that names none here is left unset, and the process decides: a server whose
        # spec has feedbackAuth refuses to start without its token)
        self.secrets = secrets or {}
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.workloads: dict[str, Workload] = {}
        self.restarts: builtins.list[Restart] = []  # each exit seen, in order
        self.lock = threading.RLock()  # the operator's thread applies, the main one reads
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)

    # -- what Reconciler calls ----------------------------------------------------------
    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return self._apply(obj)

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """As the API server's create: None when an object of that name exists (kept as is)."""
        with self.lock:
            if (obj["kind"], obj["metadata"]["name"]) in self.objects:
                return None
            return self._apply(obj)

    def _apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        key = (obj["kind"], obj["metadata"]["name"])
        self.objects[key] = obj
        if obj["kind"] == "Secret":  # what a container's secretKeyRef reads from now on
            values = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
            values.update(obj.get("stringData") or {})
            self.secrets[key[1]] = {**self.secrets.get(key[1], {}), **values}
        elif obj["kind"] == "ConfigMap":
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

    def restart_exited(self, now: float | None = None) -> builtins.list[Restart]:
        """The restart policy, one look: a process seen exited on its own is recorded (and
        returned) with its back-off; one whose back-off is over is started again."""
        now = time.monotonic() if now is None else now
        seen = []
        with self.lock:
            for name, w in self.workloads.items():
                for i, p in enumerate(w.procs):
                    if p.stopping or p.popen.poll() is None:
                        continue
                    if p.due is None:
                        ran = now - p.started
                        p.backoff = (BACKOFF if ran >= BACKOFF_RESET or not p.backoff
                                     else min(2 * p.backoff, BACKOFF_CAP))  # fmt: skip
                        p.due = now + p.backoff
                        tail = p.log.read_text(errors="replace")[-3000:]
                        seen.append(Restart(now, name, i, p.popen.returncode, tail, p.backoff,
                                            p.restarts + 1))  # fmt: skip
                    elif now >= p.due:
                        new = self._start(w.obj, i)
                        new.restarts, new.backoff = p.restarts + 1, p.backoff
                        w.procs[i] = new
            self.restarts += seen
        return seen

    def restart_counts(self) -> dict[str, int]:
        """Restarts by Deployment, as ``kubectl get pods`` shows them (summed over its pods)."""
        out: dict[str, int] = {}
        for r in self.restarts:
            out[r.workload] = out.get(r.workload, 0) + 1
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
            elif a == "--grpc-port":  # (a port of its own: SO_REUSEPORT would share one)
                args += [a, str(free_port())]
                next(it)
            elif a == "--config":
                path = next(it)
                mount = next(m for m in mounts if path.startswith(m + "/"))
                cm = mounts[mount]["configMap"]["name"]
                args += [a, str(self.dir / cm / path[len(mount) + 1 :])]
            else:
                args.append(a.replace("$(TIDELINE_REDIS_URL)", self.redis_url))
        if args[:1] == ["server"] and "--grpc-port" not in args:
            args += ["--grpc-port", str(free_port())]
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
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1", **self._pythonpath()},
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
