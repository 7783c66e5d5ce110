"""A real one-node Kubernetes cluster, started and torn down by the test suite.

The node lives in a network namespace of its own: containerd (with runc and
the CNI bridge, host-local, loopback and portmap plugins), the kubelet,
kube-proxy (iptables mode) and CoreDNS all run inside it, so every bridge,
veth, route and iptables rule they make goes when the namespace goes. One
veth pair links it to the host; the control plane (``ControlPlane`` bound to
the host's end) and the tests reach pods and Services over it, and nothing
else is touched on the host but that link and two routes. Every address is in
198.18.0.0/15, the range reserved for network benchmarks; each node takes a
``Slot`` of its own (its addresses, names and directory), so several can run
side by side (the tests, a bench, ``make cluster``).

Every image a pod runs is built here (``make e2e-bin``: ``images.sh``, and
``make image`` for the runtime image) and imported with ``ctr images
import``; nothing is pulled. ``Node.stop`` kills every process and container,
unmounts what they mounted, removes the cgroups, namespaces, link and routes,
and puts back the kernel settings the kubelet changes (when the last node
stops), also after a failure (it runs from ``__exit__`` and is safe to call
twice); what a killed run left is swept when its slot is next claimed, or by
``make cluster-down``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.e2e.cluster.controlplane import HERE, ControlPlane, Lifecycle, Supervisor, find_binaries
from tideline.demo.embedded import free_port

SLOTS = 32  # nodes that may run side by side on one machine (tests, a bench, make cluster)
LINK_PREFIX = 30
NODE_NAME = "tideline-node"
CLUSTER_DOMAIN = "cluster.local"
PAUSE_IMAGE = "tideline.dev/e2e/pause:3.10"
REDIS_IMAGE = "tideline.dev/e2e/redis:7"
# the kernel settings the kubelet sets (vm.overcommit_memory and the like): put back on stop
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
SYSCTLS_SAVED = Path(tempfile.gettempdir()) / "tideline-node-sysctls.json"
CGROUP_ROOT = Path("/sys/fs/cgroup")
NODE_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "iptables", "conntrack", "nsenter")


@dataclass(frozen=True)
class Slot:
    """One node's addresses and names; slot ``k`` of ``SLOTS``:

    - 198.19.255.(4k+1): the host's end of the link (the API server listens there)
    - 198.19.255.(4k+2): the node (the kubelet, cluster DNS)
    - 198.18.k.0/24: pods, on the node's bridge (gateway .1)
    - 198.18.(128+k).0/24: Services (``kubernetes`` is .1)
    """

    k: int

    @property
    def host(self) -> str:
        return f"198.19.255.{4 * self.k + 1}"

    @property
    def node(self) -> str:
        return f"198.19.255.{4 * self.k + 2}"

    @property
    def pods(self) -> str:
        return f"198.18.{self.k}.0/24"

    @property
    def gateway(self) -> str:
        return f"198.18.{self.k}.1"

    @property
    def services(self) -> str:
        return f"198.18.{128 + self.k}.0/24"

    @property
    def routed(self) -> tuple[str, str]:  # through the node, from the host
        return self.pods, self.services

    @property
    def name(self) -> str:  # of its network namespace and cgroup
        return f"tideline-n{self.k}"

    @property
    def link(self) -> str:  # the host's end
        return f"tln{self.k}"

    @property
    def dir(self) -> Path:
        return Path(tempfile.gettempdir()) / f"tideline-node-{self.k}"

    def owner(self) -> int | None:
        """The pid of the process that holds the slot, if it still runs."""
        try:
            pid = int((self.dir / "owner").read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    @classmethod
    def claim(cls, log: Callable[[str], None] = print) -> Slot:
        """The first slot free, or held by a process gone (what it left is swept first)."""
        for k in range(SLOTS):
            slot = cls(k)
            if slot.dir.exists() and slot.owner() is None:
                sweep(slot, log)
            try:
                slot.dir.mkdir()
            except FileExistsError:
                continue
            (slot.dir / "owner").write_text(str(os.getpid()))
            return slot
        raise RuntimeError(f"all {SLOTS} node slots are held by running processes")


def find_images() -> Path:
    """The directory of the images ``make e2e-bin`` built (pause, redis); never builds."""
    out = subprocess.run(
        ["bash", str(HERE / "images.sh"), "--find"], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip() or "the e2e images are not built: run `make e2e-bin`")
    return Path(out.stdout.strip().splitlines()[-1])


def resolve(name: str, server: str, timeout: float = 3.0) -> str | None:
    """The first A record cluster DNS answers for ``name`` (a plain UDP query), else None."""
    import socket
    import struct

    query = struct.pack(">HHHHHH", secrets.randbits(16), 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    query += struct.pack(">HH", 1, 1)  # A, IN
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(query, (server, 53))
        answer = s.recv(4096)
    if struct.unpack(">H", answer[6:8])[0] == 0:
        return None
    return socket.inet_ntoa(answer[-4:])  # the last record: one A answer, no extra sections


def runtime_archive() -> Path:
    """The runtime image's archive ``make image`` wrote (the pods' image); never builds."""
    import tideline

    archive = HERE.parents[2] / "dist" / f"tideline-runtime-{tideline.__version__}.tar"
    if not archive.exists():
        raise RuntimeError(f"{archive} is not built: run `make image`")
    return archive


def missing_tools() -> list[str]:
    return [t for t in NODE_TOOLS if shutil.which(t) is None]


def _run(
    *args: str, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, check=check, input=input, timeout=120
    )


class Node(Supervisor):
    """The node's network namespace, its link to the host, and its processes (run inside
    the namespace, with the host's mounts)."""

    def __init__(
        self,
        cp: ControlPlane,
        slot: Slot,
        images: list[Path],
        *,
        log: Callable[[str], None] = print,
    ) -> None:
        self.cp = cp
        self.slot = slot
        self.bin = cp.bin
        self.images = images
        self.say = log
        self.netns = slot.name
        self.prefix = ("nsenter", f"--net=/run/netns/{slot.name}", "--")
        self.host_link = slot.link
        self.dir = slot.dir
        self.cgroup = slot.name
        self.address = slot.node
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.socket = self.dir / "containerd.sock"
        self.dns_health = free_port()
        self.kubelet_healthz = free_port()
        self.proxy_healthz = free_port()
        self.started = False

    # -- network --------------------------------------------------------------------------
    def network(self) -> None:
        """The namespace, the veth pair and the route: before the API server binds the host's end."""
        slot = self.slot
        taken = _run("ip", "-o", "addr", "show", "to", slot.host).stdout.strip()
        if taken:
            raise RuntimeError(
                f"{slot.host} is already on this host ({taken.split()[1]}), yet its slot was "
                "free: `make cluster-down` removes what a killed node left"
            )
        ns = self.netns
        _run("ip", "netns", "add", ns)
        _run(
            "ip", "link", "add", self.host_link, "type", "veth", "peer", "name", "eth0", "netns", ns
        )
        _run("ip", "addr", "add", f"{slot.host}/{LINK_PREFIX}", "dev", self.host_link)
        _run("ip", "link", "set", self.host_link, "up")
        _run("ip", "-n", ns, "addr", "add", f"{slot.node}/{LINK_PREFIX}", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        for cidr in slot.routed:
            _run("ip", "route", "add", cidr, "via", slot.node, "dev", self.host_link)
        # a default route out of the node leads back to the host, which forwards nothing
        _run("ip", "-n", ns, "route", "add", "default", "via", slot.host)
        for key, value in (
            ("net.ipv4.ip_forward", "1"),
            ("net.bridge.bridge-nf-call-iptables", "1"),  # Services between pods on one bridge
        ):
            self.in_node("sysctl", "-qw", f"{key}={value}")

    def in_node(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A command in the node's network namespace (and the host's mounts)."""
        return _run("nsenter", f"--net=/run/netns/{self.netns}", "--", *args, check=check)

    # -- processes ------------------------------------------------------------------------
    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ctr", f"--address={self.socket}", "--namespace=k8s.io", *args, check=check)

    def _containerd(self) -> None:
        d = self.dir
        (d / "cni" / "net.d").mkdir(parents=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "tideline",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,  # nothing leaves the node: no NAT to the host
                    "hairpinMode": True,  # a pod reaching itself through its Service
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.slot.pods, "gateway": self.slot.gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(d / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (d / "cni" / "net.d" / "10-tideline.conflist").write_text(json.dumps(conflist, indent=2))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (d / "containerd.toml").write_text(
            f"""version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_hugetlb_controller = true
  # no CAP_SYS_RESOURCE here (a sandboxed root): no oom_score_adj below containerd's own
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{self.bin / "cni"}"
    conf_dir = "{d}/cni/net.d"
"""
        )
        self._start("containerd", ["containerd", f"--config={d / 'containerd.toml'}"])
        self._wait("containerd", lambda: self.ctr("version", check=False).returncode == 0, 60)
        for archive in self.images:
            started = time.monotonic()
            self.ctr("images", "import", "--no-unpack", str(archive))
            self.say(f"[node] imported {archive.name} in {time.monotonic() - started:.1f}s")

    def _cgroups(self) -> None:
        """The kubelet's cgroup root, in every v1 hierarchy (cpuset needs its cpus and mems)."""
        for hierarchy in self._hierarchies():
            path = hierarchy / self.cgroup
            path.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (path / f).write_text((hierarchy / f).read_text())

    @staticmethod
    def _hierarchies() -> list[Path]:
        return [
            p
            for p in CGROUP_ROOT.iterdir()
            if p.is_dir() and not p.is_symlink() and p.name != "unified"
        ]

    def _kubelet(self) -> None:
        d = self.dir
        (d / "resolv.conf").write_text("")  # pods resolve through cluster DNS only
        if not SYSCTLS_SAVED.exists():  # the first node running: what to put back at the end
            saved = {key: Path("/proc/sys", key).read_text().strip() for key in KUBELET_SYSCTLS}
            SYSCTLS_SAVED.write_text(json.dumps(saved))
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup}",
            "failCgroupV1": False,
            "failSwapOn": False,
            "address": self.address,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.kubelet_healthz,
            # the API server reaches the kubelet (logs, exec) over the link, unauthenticated:
            # a test node on a private link
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "clusterDNS": [self.address],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(d / "resolv.conf"),
            "podLogsDir": str(d / "pod-logs"),  # not /var/log/pods
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            # the imported images can't be pulled again: never collect them
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "rotateCertificates": False,
            "staticPodPath": "",
            "maxPods": 110,
            "nodeStatusReportFrequency": "10s",
        }
        (d / "kubelet.yaml").write_text(yaml.safe_dump(config))
        self._start("kubelet", [
            str(self.bin / "kubelet"), f"--config={d / 'kubelet.yaml'}",
            f"--kubeconfig={self.cp.kubeconfig}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={self.address}", f"--root-dir={d / 'kubelet'}",
            f"--cert-dir={d / 'kubelet' / 'pki'}", "--v=1",
        ])  # fmt: skip

    def _kube_proxy(self) -> None:
        d = self.dir
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(self.cp.kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": self.slot.pods,
            "bindAddress": self.address,
            "healthzBindAddress": f"127.0.0.1:{self.proxy_healthz}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # leave the host's conntrack table settings alone (they are not per namespace)
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        (d / "kube-proxy.yaml").write_text(yaml.safe_dump(config))
        self._start(
            "kube-proxy", [str(self.bin / "kube-proxy"), f"--config={d / 'kube-proxy.yaml'}"]
        )

    def _dns(self) -> None:
        d = self.dir
        (d / "Corefile").write_text(
            f""".:53 {{
    errors
    health 127.0.0.1:{self.dns_health}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {self.cp.kubeconfig} e2e
        pods insecure
        fallthrough in-addr.arpa
    }}
    cache 5
    loadbalance
}}
"""
        )
        self._start("coredns", [str(self.bin / "coredns"), "-conf", str(d / "Corefile")])

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> Node:
        self.started = True
        self._cgroups()
        self._containerd()
        self._kubelet()
        self._kube_proxy()
        self._dns()
        self._wait("the node to be Ready", self.ready, 120)
        service = self.cp.kubernetes_service_ip
        self._wait(
            "cluster DNS",
            lambda: resolve(f"kubernetes.default.svc.{CLUSTER_DOMAIN}", self.address) == service,
        )
        return self

    def ready(self) -> bool:
        out = self.cp.kubectl(
            "get", "node", NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            check=False,
        )  # fmt: skip
        return out.stdout.strip() == "True"

    def stop(self) -> None:
        """The node's processes stopped in turn (the kubelet before containerd), then
        everything else taken down as a killed run's would be (``teardown``)."""
        for name in ("coredns", "kube-proxy", "kubelet", "containerd"):
            self._stop(name, grace=15)
        teardown(self.slot, keep_logs=os.environ.get("TIDELINE_E2E_KEEP") == "1")


def _restore_sysctls() -> None:
    """The kernel settings as they were before the first node, once no node runs."""
    if any(Slot(k).owner() not in (None, os.getpid()) for k in range(SLOTS)):
        return
    with contextlib.suppress(OSError, ValueError):
        for key, value in json.loads(SYSCTLS_SAVED.read_text()).items():
            with contextlib.suppress(OSError):
                Path("/proc/sys", key).write_text(value)
        SYSCTLS_SAVED.unlink()


def _remove_stale_runtime_state(node_dir: Path) -> list[str]:
    """What containerd and the kubelet keep at fixed paths on the host, left by containers
    killed rather than stopped: shim sockets no process listens on (``/run/containerd/s``),
    runc state of containers whose process is gone, and the kubelet's log links into
    ``node_dir`` (``/var/log/containers``)."""
    import socket

    removed = []
    shims = Path("/run/containerd/s")
    for sock in shims.iterdir() if shims.is_dir() else []:
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(sock))
            except ConnectionRefusedError:
                sock.unlink(missing_ok=True)
                removed.append(f"socket {sock}")
            except OSError:
                pass
    runc = Path("/run/containerd/runc/k8s.io")
    for state in runc.iterdir() if runc.is_dir() else []:
        try:
            pid = json.loads((state / "state.json").read_text())["init_process_pid"]
            os.kill(int(pid), 0)
        except (OSError, KeyError, ValueError):
            shutil.rmtree(state, ignore_errors=True)
            removed.append(f"runc state {state}")
    links = Path("/var/log/containers")
    for link in links.iterdir() if links.is_dir() else []:
        if link.is_symlink() and str(link.readlink()).startswith(f"{node_dir}/"):
            link.unlink(missing_ok=True)
            removed.append(f"log link {link}")
    return removed


def _remove_empty_pod_netns() -> list[str]:
    """Pods' network namespaces with no process left in them (their containers killed)."""
    removed = []
    for line in _run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split(" ")[0]
        if (
            name.startswith("cni-")
            and not _run("ip", "netns", "pids", name, check=False).stdout.strip()
        ):
            _run("umount", "-l", f"/run/netns/{name}", check=False)
            _run("ip", "netns", "delete", name, check=False)
            removed.append(f"netns {name}")
    return removed


def _pids(match: Callable[[str], bool]) -> list[int]:
    """The processes whose command line ``match`` accepts."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path("/proc", entry, "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if match(cmd):
            pids.append(int(entry))
    return pids


def teardown(slot: Slot, keep_logs: bool = False) -> list[str]:
    """Everything of the node in ``slot``, found by the slot's names: the processes that
    name its directory (containerd's shims among them) and any left in its cgroups (the
    containers), the mounts under its directory, its cgroups, namespace and link (its
    routes go with it), pods' namespaces left empty, stale runtime state, its directory
    (renamed, the logs in it kept, with ``keep_logs``); then the kernel settings, if no
    other node runs. What ``Node.stop`` does once the processes are stopped, and what
    ``sweep`` does after a killed run. Returns what it removed."""
    removed: list[str] = []
    d = str(slot.dir)
    for pid in _pids(lambda cmd: d + "/" in cmd):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            removed.append(f"process {pid}")
    roots = [h / slot.name for h in Node._hierarchies() if (h / slot.name).exists()]
    for root in roots:
        for procs in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                for pid in procs.read_text().split():
                    os.kill(int(pid), signal.SIGKILL)
                    removed.append(f"process {pid}")
    for line in Path("/proc/self/mountinfo").read_text().splitlines()[::-1]:  # deepest first
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(d + "/") or point == f"/run/netns/{slot.name}":
            _run("umount", "-l", point, check=False)
            removed.append(f"mount {point}")
    deadline = time.monotonic() + 10  # a killed process leaves its cgroup a moment later
    for root in roots:
        dirs = sorted(
            (p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        )
        for path in [*dirs, root]:
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
        removed.append(f"cgroup {root}")
    if _run("ip", "link", "show", slot.link, check=False).returncode == 0:
        _run("ip", "link", "del", slot.link, check=False)  # its routes go with it
        removed.append(f"link {slot.link}")
    if slot.name in _run("ip", "netns", "list", check=False).stdout.split():
        _run("ip", "netns", "delete", slot.name, check=False)
        removed.append(f"netns {slot.name}")
    removed += _remove_empty_pod_netns()
    removed += _remove_stale_runtime_state(slot.dir)
    if keep_logs:
        (slot.dir / "owner").unlink(missing_ok=True)  # the slot is free
        slot.dir.rename(slot.dir.with_name(f"{slot.dir.name}-kept-{int(time.time())}"))
    else:
        shutil.rmtree(slot.dir, ignore_errors=True)
    _restore_sysctls()
    return removed


def sweep(slot: Slot, log: Callable[[str], None] = print) -> list[str]:
    """What a node left in ``slot`` when its run was killed before ``stop`` (kill -9 of
    pytest, a lost session). Returns what it removed."""
    removed = teardown(slot)
    for item in removed:
        log(f"[node] removed what a killed node left: {item}")
    return removed


def sweep_all(log: Callable[[str], None] = print) -> list[str]:
    """Every slot whose owner is gone (``make cluster-down``)."""
    removed: list[str] = []
    for k in range(SLOTS):
        slot = Slot(k)
        if slot.dir.exists() and slot.owner() is None:
            removed += sweep(slot, log)
    return removed


class RealCluster(Lifecycle):
    """The control plane on the host's end of the link, and the node behind it."""

    def __init__(
        self, images: list[Path] | None = None, *, log: Callable[[str], None] = print
    ) -> None:
        missing = missing_tools()
        if missing:
            raise RuntimeError(
                f"the real node needs {', '.join(missing)} (apt-get install containerd runc "
                "iptables conntrack util-linux)"
            )
        self.say = log
        bin_dir = find_binaries()
        extra = images or []
        self.images = [*sorted(find_images().glob("*.tar")), *extra]
        self.slot = Slot.claim(log)
        self.cp = ControlPlane(
            bin_dir, address=self.slot.host, service_cidr=self.slot.services, fake_node=False
        )
        self.node = Node(self.cp, self.slot, self.images, log=log)

    def start(self) -> RealCluster:
        started = time.monotonic()
        self.node.network()
        self.cp.start()
        self.say(f"[node] control plane up in {time.monotonic() - started:.1f}s")
        self.node.start()
        self.say(f"[node] {NODE_NAME} Ready in {time.monotonic() - started:.1f}s")
        return self

    def stop(self) -> None:
        try:
            self.node.stop()
        finally:
            self.cp.stop()
