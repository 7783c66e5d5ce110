"""A real Kubernetes control plane on loopback, started and stopped by the test suite.

etcd, kube-apiserver (RBAC, a static admin token, service-account signing
keys, an openssl-made CA), kube-controller-manager, kube-scheduler, and kwok
managing one fake node, so pods reach Running without a kubelet. The
binaries come from ``build.sh`` beside this file (built from Go modules by
``make e2e-bin`` before the tests start, cached). Every process is stopped by pid on exit.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import yaml

from tideline.demo.embedded import free_port  # (below the ephemeral range)

HERE = Path(__file__).resolve().parent
NODE = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {
        "name": "kwok-node-0",
        "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
        "labels": {
            "kubernetes.io/hostname": "kwok-node-0",
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
        },
    },
    "status": {
        "allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "3000"},
        "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "3000"},
    },
}


def find_binaries() -> Path:
    """The directory of the binaries ``make e2e-bin`` built; never builds.

    A cold build takes 7-17 minutes on 2 cores, far past a test's timeout, so
    it is its own step before pytest starts (``make test`` depends on it).
    """
    out = subprocess.run(["bash", str(HERE / "build.sh"), "--find"], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(
            out.stderr.strip() or "the e2e control plane is not built: run `make e2e-bin`"
        )
    return Path(out.stdout.strip().splitlines()[-1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class Lifecycle:
    """``with x:`` starts it and stops it, also when starting fails halfway (stop is safe
    to call on what never started)."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Supervisor(Lifecycle):
    """Processes started into one directory (a log each, ``<name>.log``), each in a session
    of its own, stopped by process group; ``prefix`` runs them through a wrapper (nsenter
    into a network namespace)."""

    dir: Path
    procs: dict[str, subprocess.Popen[bytes]]
    prefix: tuple[str, ...] = ()

    def _start(self, name: str, args: list[str]) -> None:
        log = (self.dir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [*self.prefix, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _wait(self, what: str, check: Callable[[], object], timeout: float = 60.0) -> None:
        """Until ``check()`` holds; fails at once, with its log, if a process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    tail = (self.dir / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(
                        f"{name} exited ({p.returncode}) while waiting for {what}:\n{tail}"
                    )
            try:
                if check():
                    return
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}; logs in {self.dir}")

    def _stop(self, name: str, grace: float = 10.0) -> None:
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


class ControlPlane(Supervisor):
    """``address``: where the API server listens and what it advertises (loopback, or the
    host's end of a real node's link, so pods reach it through the ``kubernetes``
    Service); ``fake_node``: kwok and its node, for a cluster without a kubelet."""

    def __init__(
        self,
        bin_dir: Path | None = None,
        *,
        address: str = "127.0.0.1",
        service_cidr: str = "10.0.0.0/24",
        fake_node: bool = True,
    ) -> None:
        self.bin = bin_dir or find_binaries()
        self.dir = Path(tempfile.mkdtemp(prefix="tideline-e2e-"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.token = secrets.token_hex(16)
        self.address = address
        self.service_cidr = service_cidr
        self.fake_node = fake_node
        self.port = free_port()
        self.kubeconfig = self.dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.port}"

    @property
    def kubernetes_service_ip(self) -> str:
        """The ``kubernetes`` Service's cluster IP: the range's first address."""
        import ipaddress

        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))

    # -- pieces --------------------------------------------------------------------------
    def _certs(self) -> None:
        d = self.dir
        _openssl("genrsa", "-out", "ca.key", "2048", cwd=d)
        _openssl("req", "-x509", "-new", "-nodes", "-key", "ca.key", "-subj", "/CN=tideline-e2e-ca",
                 "-days", "2", "-out", "ca.crt", cwd=d)  # fmt: skip
        (d / "san.cnf").write_text(
            "[req]\ndistinguished_name=dn\n[dn]\n[ext]\nsubjectAltName=IP:127.0.0.1,"
            f"IP:{self.address},IP:{self.kubernetes_service_ip},"
            "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
        )
        _openssl("genrsa", "-out", "apiserver.key", "2048", cwd=d)
        _openssl(
            "req",
            "-new",
            "-key",
            "apiserver.key",
            "-subj",
            "/CN=kube-apiserver",
            "-out",
            "apiserver.csr",
            cwd=d,
        )
        _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", "san.cnf", "-extensions", "ext", "-out", "apiserver.crt", cwd=d)  # fmt: skip
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
        (d / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')

    def _kubeconfig(self, path: Path, token: str) -> None:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "e2e",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.dir / "ca.crt"),
                    },
                }
            ],
            "users": [{"name": "user", "user": {"token": token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "user"}}],
            "current-context": "e2e",
        }
        path.write_text(yaml.safe_dump(cfg))

    def kubeconfig_for(self, token: str, name: str) -> Path:
        """A kubeconfig that authenticates with another token (e.g. a ServiceAccount's)."""
        path = self.dir / f"kubeconfig-{name}"
        self._kubeconfig(path, token)
        return path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run(
            [str(self.bin / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> ControlPlane:
        d, b = self.dir, self.bin
        self._certs()
        self._kubeconfig(self.kubeconfig, self.token)
        etcd_client, etcd_peer = free_port(), free_port()
        self._start("etcd", [
            str(b / "etcd"), "--data-dir", str(d / "etcd"), "--name", "e2e",
            "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"e2e=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--quota-backend-bytes", str(2 * 1024**3),
        ])  # fmt: skip
        self._start("kube-apiserver", [
            str(b / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            f"--bind-address={self.address}", f"--secure-port={self.port}",
            f"--advertise-address={self.address}",
            # on loopback no pod calls the API through the kubernetes Service
            "--endpoint-reconciler-type=" + ("none" if self.fake_node else "lease"),
            f"--tls-cert-file={d / 'apiserver.crt'}", f"--tls-private-key-file={d / 'apiserver.key'}",
            f"--client-ca-file={d / 'ca.crt'}",
            f"--token-auth-file={d / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={self.service_cidr}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",  # logs, exec
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
        ])  # fmt: skip
        self._wait(
            "kube-apiserver",
            lambda: self.kubectl("get", "--raw", "/readyz", check=False).returncode == 0,
            120,
        )
        self._start("kube-controller-manager", [
            str(b / "kube-controller-manager"), f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--service-account-private-key-file={d / 'sa.key'}", f"--root-ca-file={d / 'ca.crt'}",
            "--use-service-account-credentials=false", "--controllers=*",
            "--concurrent-gc-syncs=10",
            # kwok's node heartbeats lag when hundreds of fake pods keep a 2-core machine
            # busy; the node lifecycle controller would then mark every pod unready for good.
            "--node-monitor-grace-period=1h",
        ])  # fmt: skip
        self._start("kube-scheduler", [
            str(b / "kube-scheduler"), f"--kubeconfig={self.kubeconfig}", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
        ])  # fmt: skip
        if self.fake_node:
            self._start_fake_node()
        self._wait(
            "the default ServiceAccount",
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
        )
        return self

    def _start_fake_node(self) -> None:
        self._start("kwok", [
            str(self.bin / "kwok"), f"--kubeconfig={self.kubeconfig}", "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--cidr=10.1.0.0/16", "--node-ip=10.1.0.1", f"--server-address=127.0.0.1:{free_port()}",
        ])  # fmt: skip
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(NODE))
        self._wait(
            "the fake node to be Ready",
            lambda: (
                "True"
                in self.kubectl(
                    "get",
                    "node",
                    "kwok-node-0",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                    check=False,
                ).stdout
            ),  # fmt: skip
        )

    def stop(self) -> None:
        for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            self._stop(name)
        if os.environ.get("TIDELINE_E2E_KEEP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
