"""What the tests share, in one place: builders of manifests, samples, logged requests and
health summaries; ``wait_until`` for every poll; a served model (:class:`Served`) and the
reconciler's in-memory API (:class:`FakeKube`) for the integration tests, whose fixtures
(``served``, ``setup``) are in ``tests/integration/conftest.py``. Heavy imports stay inside
the functions, so the unit tests import this without a server's dependencies."""

from __future__ import annotations

import contextlib
import copy
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tideline import predlog
    from tideline.pods.server.api import ServerConfig
    from tideline.pods.server.dataplane import DataPlane
    from tideline_operator.reconcile import ChildState

on_one_redis_and_a_cluster = pytest.mark.parametrize(
    "redis_kind", ["one redis", "redis cluster"], indirect=True
)
"""Runs a test on one redis-server and again on a Redis Cluster (three primaries): ``r``,
``redis_under_test`` and the fixtures built on them (``served``, the reconciler's ``setup``)
are of that kind. A model's keys share one hash tag, so its transactions (a checkpoint's
MULTI with the publish script) land on one node."""

FRAUD_FEATURES = [
    {"name": "amount", "type": "numeric", "default": 0.0},
    {"name": "hour", "type": "numeric", "default": 12.0},
    {"name": "merchant", "type": "categorical", "buckets": 64},
]


FRAUD_ROWS = [{"amount": 12.5, "hour": 3, "merchant": "m-1"}, {"amount": 0.5, "merchant": "m-2"}]
"""Two rows for the fraud model: every feature given, and one left out."""


def manifest(name: str = "m", **spec: object) -> dict:
    """An OnlineModel manifest with a small default model; keyword args override spec parts
    (copied: a test that changes its manifest changes no other test's)."""
    base: dict = {
        "model": {"task": "binary", "algorithm": "sgd", "features": copy.deepcopy(FRAUD_FEATURES)},
    }
    base.update(copy.deepcopy(spec))
    return {
        "apiVersion": "tideline.dev/v1alpha1",
        "kind": "OnlineModel",
        "metadata": {"name": name, "namespace": "test"},
        "spec": base,
    }


def online_model(name: str, namespace: str, steps: list[dict], features: tuple[str, ...] = ("x",),
                 **metadata: Any) -> dict:  # fmt: skip
    """An OnlineModel as ``kubectl tideline`` reads it: numeric ``features`` and a canary
    rollout of ``steps`` (``metadata``: more of its metadata); no status (see
    :func:`canary_status`)."""
    return {
        "apiVersion": "tideline.dev/v1alpha1",
        "kind": "OnlineModel",
        "metadata": {"name": name, "namespace": namespace, **metadata},
        "spec": {"model": {"features": [{"name": f} for f in features]},
                 "rollout": {"steps": copy.deepcopy(steps)}},
    }  # fmt: skip


def healthy_status(stable: str, versions: tuple[int, int, int]) -> dict:
    """The operator's status with no canary: ``stable`` serving; ``versions``: the served,
    latest and lastGood versions."""
    served, latest, last_good = versions
    return {"phase": "Healthy", "stableRevision": stable, "servedVersion": served,
            "latestVersion": latest, "lastGoodVersion": last_good}  # fmt: skip


def canary_status(stable: str, canary: str, paused_at: float, versions: tuple[int, int, int],
                  **more: Any) -> dict:  # fmt: skip
    """The operator's status mid-canary: ``canary`` at 10% at the pause of its second step
    (currentStep 1) since ``paused_at``, ``more`` fields over it."""
    return {**healthy_status(stable, versions), "phase": "Progressing", "canaryRevision": canary,
            "canaryWeight": 10, "currentStep": 1, "pauseStartedAt": paused_at, **more}  # fmt: skip


def push_samples(r, stream: str, rows: list, labels) -> None:  # type: ignore[no-untyped-def]
    """Labelled rows onto a samples stream, an entry each (a producer's one-row entries)."""
    import orjson

    pipe = r.pipeline(transaction=False)
    for row, label in zip(rows, list(labels), strict=True):
        pipe.xadd(stream, {"data": orjson.dumps({"features": row, "label": float(label)})})
    pipe.execute()


class LoggedRequest:
    """A request as a server logs it (:mod:`tideline.predlog`), for tests without a server.

    Each has a log of its own (a fresh server process; the request alone in its entry),
    so any time may be given; or, with ``instance``, that server's log, in which entry ids
    must grow (``seq``: the second part of the entry's id).
    ``ids`` are the client's own (indexed); else they are generated, as a server would.
    """

    def __init__(self, rows: list, *, ts: float | None = None, ids: list | None = None,
                 scores: list | None = None, track: str = "stable", revision: str = "rev",
                 version: int = 0, instance: str | None = None, seq: int = 0) -> None:  # fmt: skip
        import os
        import time

        from tideline import predlog

        self.rows = rows
        self.ts = time.time() if ts is None else ts
        self.instance = instance or os.urandom(predlog.INSTANCE_HEX // 2).hex()
        self.entry = f"{int(self.ts * 1000)}-{seq}"
        self.secret = os.urandom(predlog.SECRET_HEX // 2).hex()
        self.client_ids = ids
        prefix = predlog.id_prefix(self.instance, self.entry, 0, self.secret)
        self.ids = list(ids) if ids is not None else [f"{prefix}{i}" for i in range(len(rows))]
        self.meta = predlog.Meta(secret=self.secret, track=track, models={track: (revision, version)},
                                 ids=ids)  # fmt: skip
        self.scores = scores if scores is not None else [0.5] * len(rows)

    def answered(self, pipe, keys) -> LoggedRequest:  # type: ignore[no-untyped-def]
        """What a server has written by the time it answers, before its log entry: its log
        listed in ``logs``, the client's ids bound in the index."""
        from tideline import predlog

        pipe.zadd(keys.logs, {self.instance: self.ts})
        if self.client_ids:
            where = f"{self.instance} {self.entry} 0 "
            mapping = {i: f"{where}{k}" for k, i in enumerate(self.client_ids)}
            pipe.hset(keys.log_ids(predlog.bucket(self.ts)), mapping=mapping)
        return self

    def write(self, pipe, keys) -> LoggedRequest:  # type: ignore[no-untyped-def]
        """Add the entry (and its index fields) to a client or pipeline."""
        import orjson

        from tideline import predlog

        fields = predlog.encode([self.meta], [orjson.dumps(self.scores)],
                                [orjson.dumps({"instances": self.rows})])  # fmt: skip
        pipe.xadd(keys.log(self.instance), fields, id=self.entry)
        return self.answered(pipe, keys)


def comparison(difference: float, half: float = 0.01, samples: int = 2000):  # type: ignore[no-untyped-def]
    """A paired comparison (:class:`tideline.health.Comparison`), a candidate's quality minus
    another's on the same ``samples``: the difference and its interval's half-width."""
    from tideline import health as h

    return h.Comparison(samples=samples, difference=difference, lower=difference - half,
                        upper=difference + half)  # fmt: skip


def health_at(now: float, *, stable: dict | None = None, canary: dict | None = None,
           versions: dict | None = None, candidates: dict | None = None, window: int = 2000,
           pin=None, concept=None):  # type: ignore[no-untyped-def]  # fmt: skip
    """A monitor's health summary (:class:`tideline.health.Health`) at ``now``, for playing
    the monitor: the ``stable`` track and, if given, the ``canary`` (TrackHealth fields),
    ``versions`` ("revision:version" -> VersionHealth fields), the quality evidence
    (``candidates``: role -> Candidate, on a common ``window``; a rollback's ``pin``
    evidence) and a ``concept`` drift."""
    from tideline import health as h

    tracks = {"stable": h.TrackHealth(**(stable or {}))}
    if canary is not None:
        tracks["canary"] = h.TrackHealth(**canary)
    quality = h.Quality(window=window, candidates=candidates, pin=pin) if candidates else None
    return h.Health(
        ts=now,
        tracks=tracks,
        versions={k: h.VersionHealth(**v) for k, v in (versions or {}).items()},
        drift=h.Drift(concept=concept) if concept is not None else h.Drift(),
        quality=quality,
    )


def health_summary(now: float, *, stable: dict | None = None, canary: dict | None = None,
                   versions: dict | None = None, quality: dict | None = None,
                   served_labelled: int = 5000) -> bytes:  # fmt: skip
    """A :func:`health_at` summary as the monitor writes it to Redis, its candidates in short.

    ``quality``: role -> ``(revision, version)`` for ``served``, and
    ``(revision, version, difference, half_width, samples)`` for the others:
    the candidate's quality minus served's on the same samples, and its interval.
    """
    from tideline import health as h

    candidates = {
        role: h.Candidate(
            revision=t[0], version=t[1], samples=2000,
            vs_served=comparison(t[2], t[3], t[4]) if len(t) == 5 else None,
            served_labelled=served_labelled if role == "served" else 0,
        )
        for role, t in (quality or {}).items()
    }  # fmt: skip
    return h.encode(
        health_at(now, stable=stable, canary=canary, versions=versions, candidates=candidates)
    )


def produce(bootstrap: str, topic: str, values: list, partitions: int = 1) -> None:
    """Messages onto a Kafka topic (acks=all), a value that is not bytes as JSON. Labels
    (``{"id": ...}``) are keyed by their prediction's id, as a producer should key them: the
    labels of one prediction share a partition, so the first sent is the first read (and
    wins). Anything else is spread over the partitions round-robin."""
    import orjson
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i, v in enumerate(values):
        value = v if isinstance(v, bytes) else orjson.dumps(v)
        if isinstance(v, dict) and "id" in v:
            p.produce(topic, value, key=str(v["id"]).encode())
        else:
            p.produce(topic, value, partition=i % partitions)
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(30) == 0, "messages left unsent"


def tls_certs(d: Path) -> dict[str, Path]:
    """A CA, and a broker certificate (for 127.0.0.1) and a client certificate it signed, made
    with openssl in ``d``: ``ca.crt``, ``broker.pem`` (key and certificate, as Kafka's PEM
    keystore takes them), ``client.crt``, ``client.key``."""
    import subprocess

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-subj", "/CN=tideline-test-ca", "-days", "2", "-out", "ca.crt")  # fmt: skip
    (d / "san.cnf").write_text("[ext]\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("broker", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                "-subj", f"/CN={name}", "-out", f"{name}.csr")  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-extensions", "ext",
                "-out", f"{name}.crt")  # fmt: skip
    (d / "broker.pem").write_text((d / "broker.key").read_text() + (d / "broker.crt").read_text())
    return {name: d / name for name in ("ca.crt", "broker.pem", "client.crt", "client.key")}


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02,
               message: str | Callable[[], str] | None = None,
               ignoring: tuple[type[BaseException], ...] = ()) -> float:  # fmt: skip
    """Poll ``predicate`` every ``interval`` seconds until it is truthy: the seconds it took.

    Past ``timeout`` it raises AssertionError saying what it waited for: ``message`` (a
    callable is asked then, to show the state it found), else the predicate's source. An
    exception in ``ignoring`` that the predicate raises counts as "not yet" (a thing still
    starting: a refused connection, a kubectl that fails).
    """
    import inspect
    import time

    def holds() -> bool:
        try:
            return bool(predicate())
        except ignoring:
            return False

    start = time.monotonic()
    while not holds():
        if time.monotonic() - start >= timeout:
            if callable(message):
                message = message()
            if message is None:
                try:
                    message = inspect.getsource(predicate).strip()  # type: ignore[arg-type]
                except (OSError, TypeError):
                    message = repr(predicate)
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)
    return time.monotonic() - start


SHELLS = ("sh", "bash", "shell", "console")
"""The info strings of a fenced block that holds shell commands."""


def fenced_commands(text: str) -> list[str]:
    """The commands of the fenced shell blocks: continuation lines joined, comments and a
    trailing ``&`` dropped, lines that are only a comment (an answer shown) skipped."""
    commands: list[str] = []
    for m in re.finditer(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", text, re.M | re.S):
        if m.group(1) not in SHELLS:
            continue
        joined = re.sub(r"\\\n", " ", m.group(2))
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[-1] == "&":
                words = words[:-1]
            if words:
                commands.append(shlex.join(words))
    return commands


def learned_in_thread(runner, p, n: int) -> bool:  # type: ignore[no-untyped-def]
    """Whether a LearnerProcess ``p`` run by the thread ``runner`` has learned ``n`` samples
    (a predicate for :func:`wait_until`); fails at once if the thread has died."""
    assert runner.is_alive(), f"the learner's thread died; counters {p.counters}"
    return bool(p.counters["samples"] >= n)


def learn_until(p, cond, timeout: float = 20.0, block_ms: int = 5) -> None:  # type: ignore[no-untyped-def]
    """Step a LearnerProcess until ``cond()`` holds (failing with its counters after
    ``timeout`` seconds), then flush it."""
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out; counters={p.counters}"
        p.step(block_ms=block_ms)
    p.flush()


def retired(r, keys) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """A model's revisions retired and not yet forgotten -> when."""
    return {m.decode(): t for m, t in r.zrange(keys.retired, 0, -1, withscores=True)}


def monitor_for(model, r, **kw):  # type: ignore[no-untyped-def]
    """A Monitor that lists the servers' logs at every turn (each test's requests come from a
    server of their own)."""
    from tideline.pods.monitor import Monitor

    mon = Monitor(model, r, **kw)
    mon.list_logs_every = 0.0
    return mon


def summary_of(mon) -> dict:  # type: ignore[no-untyped-def]
    """The summary a monitor writes, as a reader of the JSON in Redis sees it."""
    import orjson

    from tideline import health

    return orjson.loads(health.encode(mon.write()))


def check_the_loop(summary: dict, doc: dict, poison: float, *, predictions: int,
                   accuracy: float, rolled_back_within: float = 8.0) -> None:  # fmt: skip
    """What a ``run_local`` with a poisoning at ``poison`` and a canary later must show: few
    failed requests, most predictions learned, a proven version, the poisoning rolled back on
    accuracy within ``rolled_back_within`` seconds, the canary served and promoted, and what
    clients got right."""
    from tideline.spec import parse

    assert summary["request_errors"] <= 5, (
        summary["request_errors_by_status"],
        summary["request_error_answers"],
    )
    assert summary["samples_learned"] > 0.5 * summary["predictions_served"] > predictions
    events = {e["reason"]: e for e in reversed(summary["events"])}
    assert "Proven" in events
    assert summary["rollbacks_by_reason"].get("accuracy", 0) >= 1
    assert poison <= events["RolledBack"]["t"] <= poison + rolled_back_within
    assert summary["promotions"] >= 1 and summary["predictions_by_track"].get("canary", 0) > 0
    assert summary["stable_revision"] != parse(doc).revision
    assert summary["served_accuracy_mean"] > accuracy


def sample_datas(rows: list, labels: list, packed: bool) -> list[bytes]:
    """``samples`` entries' data: one packed entry of every row, or an entry a row."""
    import orjson

    if packed:
        return [orjson.dumps({"instances": rows, "labels": labels})]
    return [orjson.dumps({"features": r, "label": v}) for r, v in zip(rows, labels, strict=True)]


def fraud_model(seed: int = 0, n: int = 2000, **model):  # type: ignore[no-untyped-def]
    """A binary model of :data:`FRAUD_FEATURES` (sgd; ``model`` overrides parts of its spec)
    that has learned ``n`` synthetic rows."""
    from tideline.algorithms import make_learner
    from tideline.demo.simulate import SyntheticStream

    m = make_learner({"task": "binary", "algorithm": "sgd", "features": FRAUD_FEATURES, **model})
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=seed).take(n)
    m.learn_many(m.schema.encode(rows), y)
    return m


class Served:
    """A model's server on a Redis: its data plane and its app, called through a TestClient
    (``with s.client:`` runs the app; :func:`listening` puts it on a real port)."""

    def __init__(self, url: str, doc: dict, settings: ServerConfig | None = None) -> None:
        from fastapi.testclient import TestClient

        from tideline.pods.metrics import ServerMetrics
        from tideline.pods.server.api import create_app
        from tideline.pods.server.dataplane import DataPlane
        from tideline.spec import parse

        self.model = parse(doc)
        self.url = url
        self.dp = DataPlane(self.model, url, metrics=ServerMetrics(None), poll_interval=0.2)
        self.app = create_app(self.dp, settings)
        self.client = TestClient(self.app)

    def typed(self, raw: bytes) -> tuple | None:
        """The V1 fast path's reading of a body (None: the general path reads it)."""
        from tideline.pods.server.protocols import V1

        assert self.dp.stable is not None
        return V1(max_rows=10_000).typed(raw, self.dp.stable.schema)


@contextlib.contextmanager
def listening(s: Served) -> Iterator[str]:
    """A served app on a real port (uvicorn in a thread), ready: its base URL."""
    import threading

    import uvicorn

    from tideline.demo.embedded import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(s.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started and s.dp.ready, timeout=10)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def log_entries(r, s: Served | DataPlane, every_server: bool = False) -> list[dict]:  # type: ignore[no-untyped-def]
    """The server's prediction log (or every server's), an entry a request, in plain terms."""
    from tideline import predlog

    dp = s.dp if isinstance(s, Served) else s
    only = None if every_server else dp.log.instance
    return [_plain(name, eid, e) for name, eid, e in predlog.read(r, dp.keys, only)]


def _plain(instance: str, eid: str, e: predlog.Entry) -> dict:
    tracks = e.meta.tracks or [e.meta.track] * len(e)
    return {
        "entry": eid,
        "ts": int(eid.split("-")[0]) / 1000,
        "track": e.meta.track,
        "tracks": tracks,
        "revision": e.model(e.meta.track)[0],
        "version": e.model(e.meta.track)[1],
        "ids": e.ids(instance, eid),
        "scores": e.scores,
        "rows": [e.row(i) for i in range(len(e))],
        "meta": e.meta,
    }


class FakeKube:
    """The API calls :class:`tideline_operator.reconcile.Reconciler` makes, on a dict keyed
    by (kind, name)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.applied: list[tuple[str, str]] = []
        self.deleted: list[tuple[str, str]] = []
        self.created: list[tuple[str, str]] = []
        self.reads: list[tuple[str, str]] = []
        self.served_apis: set[str] = set()  # "group/version/plural" of the kinds it serves

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        key = (obj["kind"], obj["metadata"]["name"])
        self.objects[key] = copy.deepcopy(obj)
        self.applied.append(key)
        return obj

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in self.objects:
            return None
        self.objects[key] = copy.deepcopy(obj)
        self.created.append(key)
        return obj

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        self.reads.append((kind, name))
        return self.objects.get((kind, name))

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict]:
        from tideline.demo.cluster import matches_selector

        return [
            o
            for (k, _), o in self.objects.items()
            if k == kind and matches_selector(o["metadata"]["labels"], selector)
        ]

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self.deleted.append((kind, name))
        return self.objects.pop((kind, name), None) is not None

    def has_api(self, group_version: str, plural: str) -> bool:
        self.reads.append(("API", f"{group_version}/{plural}"))
        return f"{group_version}/{plural}" in self.served_apis

    def children(self, ready: bool = True) -> list[ChildState]:
        """The Deployments as the kopf index would report them."""
        from tideline_operator.reconcile import ChildState

        out = []
        for (kind, name), o in self.objects.items():
            if kind == "Deployment":
                lb = o["metadata"]["labels"]
                n = o["spec"].get("replicas", 1)
                out.append(ChildState(name, lb["tideline.dev/component"],
                                      lb.get("tideline.dev/revision"), n, n if ready else 0))  # fmt: skip
        return out


class Clock:
    """The reconciler's clock, set by the test (``clock.now``)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


CANARY_ROLLOUT = {
    "steps": [{"setWeight": 20}, {"pause": "30s"}, {"setWeight": 50}],
    "analysis": {"interval": "5s", "minSamples": 100},
}
"""A rollout with a canary at 20 %, a pause, and 50 %."""


def as_applied(m: dict, generation: int = 1) -> dict:
    """A manifest as the API server hands it to the operator: with a uid and a generation."""
    b = copy.deepcopy(m)
    b["metadata"].update({"uid": "u-1", "generation": generation})
    return b


def turn(setup: tuple, body: dict, ready: bool = True) -> dict | None:
    """One reconciler turn on ``body`` (a ``setup`` fixture's reconciler, API and memory; its
    Events appended to its list): the status it wrote."""
    rec, kube, clock, events, mem = setup
    return rec.turn(body, mem, kube.children(ready),
                    lambda t, reason, msg: events.append((t, reason, msg)))  # fmt: skip


def processes_under(workdir: str) -> list[str]:
    """The command lines of the running processes that name ``workdir`` (a run's strays)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if workdir in text:
            found.append(text)
    return found
