"""The prediction server through faults (issue 30): a store that loses what it held, a cold
version published over a trained one, answers that fail, a token that is missing, and
clients that push at the limits of a connection. Against a real redis-server; the limits
against a real ``tideline server`` process."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from tests.helpers import FRAUD_FEATURES, FRAUD_ROWS, Served, fraud_model, manifest, wait_until
from tideline import cli
from tideline.algorithms import make_learner
from tideline.contracts import Keys, Pointers
from tideline.demo.embedded import free_port
from tideline.demo.local import run_local
from tideline.pods.server.api import ServerConfig, create_app
from tideline.pods.server.dataplane import DataPlane
from tideline.spec import SpecError, parse
from tideline.store import ModelStore

pytestmark = pytest.mark.integration

PREDICT = "/v1/models/fraud:predict"


def _cold():
    """A version that learned nothing (what a learner that lost its state publishes)."""
    return make_learner({"task": "binary", "algorithm": "sgd", "features": FRAUD_FEATURES})


def _tracks(r, s: Served) -> dict[str, dict[str, Any]]:
    """The per-track counters this server last wrote to the servers hash."""
    raw = r.hget(s.dp.keys.servers, s.dp.instance)
    return orjson.loads(raw)["tracks"] if raw else {}


# --------------------------------------------------------------------------- versions
def test_a_server_puts_back_the_version_it_serves_when_the_store_is_flushed(
    r, redis_server
) -> None:
    s = Served(redis_server.url, manifest(name="fraud"))
    store = ModelStore(r, "test", "fraud")
    rev = s.model.revision
    trained = fraud_model()
    store.publish(rev, 5, trained)
    store.set_pointer(rev, "lastGood", 5)
    with s.client as c:
        wait_until(lambda: s.dp.ready)
        before = c.post(PREDICT, json={"instances": FRAUD_ROWS}).json()
        token = r.get(s.dp.keys.forward_token)
        r.flushall()  # Redis restarted empty
        wait_until(lambda: store.pointers(rev).served == 5)
        assert store.pointers(rev) == Pointers(latest=5, served=5, lastGood=5)
        assert store.versions(rev) == [5] and store.version_meta(rev, 5)["n_seen"] == 2000
        learner, meta = store.load(rev, "served")  # what a learner that restarts finds
        assert meta["version"] == 5 and learner.n_seen == trained.n_seen
        # the forwarding token too: a canary server that kept it still trusts this one
        assert r.get(s.dp.keys.forward_token) == token
        after = c.post(PREDICT, json={"instances": FRAUD_ROWS}).json()
        assert after["model_version"] == 5 and after["predictions"] == before["predictions"]
        # a blob lost on its own (an eviction) while the pointers stay: put back too
        r.delete(s.dp.keys.version(rev, 5))
        wait_until(lambda: r.exists(s.dp.keys.version(rev, 5)) == 1)


def test_a_pinned_rollback_stays_pinned_when_the_server_puts_it_back(r, redis_server) -> None:
    s = Served(redis_server.url, manifest(name="fraud"))
    store = ModelStore(r, "test", "fraud")
    rev = s.model.revision
    for v in (3, 4):
        store.publish(rev, v, fraud_model(seed=v))
    store.set_pointer(rev, "served", 3, pin=True)  # the operator rolled back to v3
    with s.client:
        wait_until(lambda: s.dp.stable is not None and s.dp.stable.version == 3)
        wait_until(lambda: s.dp.versions._pinned.get(rev) is True)
        r.delete(s.dp.keys.pointers(rev))  # an eviction of the pointers hash
        wait_until(lambda: store.pointers(rev).served == 3)
        assert store.pointers(rev).pinned, "a learner publishing next must not unpin it"


def test_a_cold_version_is_not_served_over_a_trained_one_unless_the_operator_pins_it(
    r, redis_server, caplog: pytest.LogCaptureFixture
) -> None:
    s = Served(redis_server.url, manifest(name="fraud"))
    store = ModelStore(r, "test", "fraud")
    rev = s.model.revision
    store.publish(rev, 5, fraud_model())
    caplog.set_level(logging.WARNING, logger="tideline.server")
    with s.client as c:
        wait_until(lambda: s.dp.ready)
        store.publish(rev, 6, _cold())  # a learner that lost its state, unpinned
        time.sleep(1.0)  # five polls
        assert c.post(PREDICT, json={"instances": FRAUD_ROWS}).json()["model_version"] == 5
        cold = [m for m in caplog.messages if "v6 is a cold model" in m]
        assert len(cold) == 1, "warned once, not at every refresh"
        # the store lost v5 and a learner that lost its state published again: v5 is kept,
        # and put back for the operator to pin
        r.delete(s.dp.keys.version(rev, 5))
        store.publish(rev, 8, _cold())
        wait_until(lambda: r.exists(s.dp.keys.version(rev, 5)) == 1)
        assert c.post(PREDICT, json={"instances": FRAUD_ROWS}).json()["model_version"] == 5
        store.publish(rev, 7, fraud_model(seed=7))  # a version that learned is served as ever
        wait_until(lambda: s.dp.stable is not None and s.dp.stable.version == 7)
        store.set_pointer(rev, "served", 6, pin=True)  # the operator's explicit choice
        wait_until(lambda: s.dp.stable is not None and s.dp.stable.version == 6)
        assert c.post(PREDICT, json={"instances": FRAUD_ROWS}).json()["model_version"] == 6


def test_a_first_cold_version_is_served_when_nothing_learned_was_held(r, redis_server) -> None:
    s = Served(redis_server.url, manifest(name="fraud"))
    ModelStore(r, "test", "fraud").publish(s.model.revision, 0, _cold())
    with s.client as c:
        wait_until(lambda: s.dp.ready)
        assert c.post(PREDICT, json={"instances": FRAUD_ROWS}).json()["model_version"] == 0


# --------------------------------------------------------------------------- every answer counts
def test_a_503_storm_with_no_version_loaded_counts_as_errors_and_bad_input_as_refused(
    r, redis_server
) -> None:
    s = Served(redis_server.url, manifest(name="fraud"))  # nothing published: 503 (lastGood)
    with s.client as c:
        for _ in range(20):
            assert c.post(PREDICT, json={"instances": FRAUD_ROWS}).status_code == 503
        assert c.post(PREDICT, content=b'{"instances": [').status_code == 400
        assert c.post("/v1/models/other:predict", json={"instances": FRAUD_ROWS}).status_code == 404
        assert c.post("/v2/models/fraud/infer", content=b"[").status_code == 400
        wait_until(lambda: _tracks(r, s).get("stable", {}).get("refused") == 3, timeout=5)
        stable = _tracks(r, s)["stable"]
    assert (stable["requests"], stable["errors"], stable["refused"]) == (20, 20, 3)


def test_a_canary_whose_forwarded_calls_fail_shows_canary_errors(r, redis_server) -> None:
    s = Served(redis_server.url, manifest(name="fraud"))
    ModelStore(r, "test", "fraud").publish(s.model.revision, 0, fraud_model())
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    r.hset(s.dp.keys.routing, mapping={"stable": s.model.revision, "canary": "other",
                                       "weight": 100, "canaryURL": f"http://127.0.0.1:{closed}"})  # fmt: skip
    with s.client as c:
        wait_until(lambda: s.dp.ready and s.dp.routing.canary_url is not None)
        for _ in range(10):
            resp = c.post(PREDICT, json={"instances": FRAUD_ROWS})
            assert resp.status_code == 200 and resp.json()["tracks"] == ["stable", "stable"]
        wait_until(lambda: _tracks(r, s).get("canary", {}).get("errors") == 10, timeout=5)
        tracks = _tracks(r, s)
    assert (tracks["canary"]["requests"], tracks["canary"]["errors"]) == (10, 10)
    assert (tracks["stable"]["requests"], tracks["stable"]["errors"]) == (10, 0)


# --------------------------------------------------------------------------- feedbackAuth
def test_with_feedback_auth_and_no_token_the_app_refuses_to_start(redis_server) -> None:
    doc = manifest(name="fraud", serving={"feedbackAuth": {"secretRef": {"name": "labels"}}})
    dp = DataPlane(parse(doc), redis_server.url)
    for settings in (ServerConfig(), ServerConfig.from_env({"TIDELINE_FEEDBACK_TOKEN": "  "})):
        with pytest.raises(SpecError, match="TIDELINE_FEEDBACK_TOKEN") as e:
            create_app(dp, settings)
        assert e.value.path == "spec.serving.feedbackAuth" and "'labels'" in str(e.value)
    create_app(dp, ServerConfig(feedback_token="t0ken"))  # with one it does


@pytest.mark.parametrize("token", [None, "", "   "], ids=["unset", "empty", "blank"])
def test_with_feedback_auth_and_no_token_tideline_server_exits_naming_the_variable(
    tmp_path: Path, redis_server, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], token: str | None,
) -> None:  # fmt: skip
    doc = manifest(name="fraud", serving={"feedbackAuth": {"secretRef": {"name": "labels"}}})
    config = tmp_path / "model.yaml"
    config.write_text(yaml.safe_dump(doc))
    for name in ("TIDELINE_CONFIG", "TIDELINE_REDIS_URL"):  # cmd_server sets them: restored
        monkeypatch.setenv(name, "")
    if token is None:
        monkeypatch.delenv("TIDELINE_FEEDBACK_TOKEN", raising=False)
    else:
        monkeypatch.setenv("TIDELINE_FEEDBACK_TOKEN", token)
    code = cli.main(["server", "--config", str(config), "--redis", redis_server.url,
                     "--port", str(free_port())])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "spec.serving.feedbackAuth" in err and "TIDELINE_FEEDBACK_TOKEN" in err


@pytest.mark.timeout(120)
def test_tideline_run_gives_its_servers_a_token_when_the_spec_asks_for_feedback_auth() -> None:
    doc = manifest(name="fraud", serving={"feedbackAuth": {"secretRef": {"name": "labels"}}})
    summary = run_local(doc, duration=4, rate=400, report=None, out=open(os.devnull, "w"))  # noqa: SIM115
    assert summary["labels_sent"] > 0 and summary["request_errors"] == 0


# --------------------------------------------------------------------------- limits at the door
LIMITS = {"max-body-bytes": 1 << 20, "max-header-bytes": 8192, "header-timeout": 1.0,
          "idle-timeout": 1.0, "max-concurrency": 8}  # fmt: skip


class Door:
    """A ``tideline server`` process with small limits, and raw sockets to push at them."""

    def __init__(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.proc = proc

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return sock

    def closed_within(self, sock: socket.socket, seconds: float) -> tuple[bytes, float]:
        """What the server sent before it closed the connection, and after how long."""
        start = time.monotonic()
        sock.settimeout(seconds)
        got = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                got += chunk
        return got, time.monotonic() - start


@pytest.fixture(scope="module")
def door(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    doc = manifest(name="fraud")
    config = tmp_path_factory.mktemp("door") / "model.yaml"
    config.write_text(yaml.safe_dump(doc))
    ModelStore(redis_server.client(), "test", "fraud").publish(
        parse(doc).revision, 0, fraud_model()
    )
    port = free_port()
    flags = [x for k, v in LIMITS.items() for x in (f"--{k}", str(v))]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tideline.cli", "--log-level", "WARNING", "server", "--config",
         str(config), "--redis", redis_server.url, "--port", str(port), *flags],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        wait_until(lambda: _ready(port) or proc.poll() is not None, timeout=30, interval=0.1)
        assert proc.poll() is None, "the server exited"
        yield Door(port, proc)
    finally:
        proc.terminate()
        proc.wait(10)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _status(answer: bytes) -> int | None:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def _chunked(door: Door, path: str, total: int) -> tuple[int, bytes]:
    """Send a chunked body of ``total`` bytes: (bytes the server took, what it answered)."""
    sock = door.connect()
    sock.sendall(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 "transfer-encoding: chunked\r\n\r\n".encode())  # fmt: skip
    piece = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    sent = 0
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
        while sent < total:
            sock.sendall(piece)
            sent += 65536
    answer, _ = door.closed_within(sock, 5)
    sock.close()
    return sent, answer


@pytest.mark.parametrize("path", ["/v1/models/fraud/feedback", PREDICT, "/v2/health/live"],
                         ids=["feedback", "predict", "a route that reads no body"])  # fmt: skip
def test_an_oversized_chunked_body_is_refused_before_it_is_read_whole(
    door: Door, path: str
) -> None:
    total = 96 << 20
    sent, answer = _chunked(door, path, total)
    # the server stopped reading past 1 MiB: what it took is that and the sockets' buffers
    assert sent < total // 4, f"{sent >> 20} MiB of a 96 MiB body read"
    assert _status(answer) in (413, 405, None), answer[:200]  # (None: reset before it read it)


def test_a_connection_that_sends_its_headers_too_slowly_is_closed(door: Door) -> None:
    sock = door.connect()
    sock.sendall(b"POST /v1/models/fraud:predict HTTP/1.1\r\n")
    start = time.monotonic()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        for i in range(40):  # a header byte every 0.1 s: never done within the timeout
            sock.sendall(b"x-slow-%d: y\r\n" % i)
            time.sleep(0.1)
    answer, _ = door.closed_within(sock, 5)
    assert time.monotonic() - start < 4.5, "closed after the 1 s header timeout"
    assert _status(answer) in (408, None), answer[:200]


def test_an_idle_connection_is_closed_after_the_timeout_before_and_after_a_request(
    door: Door,
) -> None:
    sock = door.connect()  # never sends anything
    got, waited = door.closed_within(sock, 5)
    assert got == b"" and waited < 3
    sock = door.connect()  # keep-alive after an answer
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
    got, waited = door.closed_within(sock, 5)
    assert _status(got) == 200 and waited < 3


def test_requests_on_one_kept_alive_connection_are_answered_within_the_limits(door: Door) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{door.port}") as c:
        for _ in range(5):
            assert c.post(PREDICT, json={"instances": FRAUD_ROWS}).status_code == 200
        padded = c.post(PREDICT, json={"instances": FRAUD_ROWS}, headers={"x-pad": "p" * 6000})
        assert padded.status_code == 200, "a header block under the limit is answered"


def test_a_header_block_over_the_limit_gets_431(door: Door) -> None:
    sock = door.connect()  # the whole block at once: read whole, counted exactly
    sock.sendall(
        b"POST %s HTTP/1.1\r\nhost: x\r\nx-pad: %s\r\n\r\n" % (PREDICT.encode(), b"p" * 9000)
    )
    answer, _ = door.closed_within(sock, 5)
    assert _status(answer) == 431 and b"over 8192 bytes" in answer, answer[:200]


def test_a_streamed_header_block_over_the_limit_is_not_read_whole(door: Door) -> None:
    sock = door.connect()
    sent = 0
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-pad: ")
        while sent < 32 << 20:
            sock.sendall(b"p" * 65536)
            sent += 65536
        sock.sendall(b"\r\n\r\n")
    answer, _ = door.closed_within(sock, 5)
    assert _status(answer) in (431, None), answer[:200]  # (None: reset before it was read)
    assert sent < 8 << 20, f"{sent >> 20} MiB of a 32 MiB header block read"


def _held_in_flight(door: Door) -> socket.socket:
    """A predict request whose body never comes: in flight until the body timeout."""
    sock = door.connect()
    sock.sendall(b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{" % PREDICT.encode())
    return sock


def test_a_body_that_stops_coming_is_answered_408_and_closed(door: Door) -> None:
    sock = _held_in_flight(door)
    answer, waited = door.closed_within(sock, 5)
    assert _status(answer) == 408 and waited < 3, answer[:200]


def test_past_the_concurrency_limit_a_request_gets_503_counted_as_shed(
    door: Door, redis_server
) -> None:
    r = redis_server.client()
    idle = [door.connect() for _ in range(3 * LIMITS["max-concurrency"])]  # idle: not counted
    held = [_held_in_flight(door) for _ in range(LIMITS["max-concurrency"])]
    try:
        time.sleep(0.2)  # (the server starts their tasks)
        resp = httpx.post(f"http://127.0.0.1:{door.port}{PREDICT}", json={"instances": FRAUD_ROWS})
        assert resp.status_code == 503 and "in flight" in resp.json()["error"]
    finally:
        for sock in idle + held:
            sock.close()

    def stable() -> dict[str, int]:
        reports = [orjson.loads(v) for v in r.hvals(Keys("test", "fraud").servers)]
        return {k: sum(rep["tracks"].get("stable", {}).get(k, 0) for rep in reports)
                for k in ("shed", "errors")}  # fmt: skip

    wait_until(lambda: stable()["shed"] >= 1, timeout=5)
    assert stable()["errors"] == 0, "an overload is no error of the model version"
    # with the held requests gone (and the idle connections still open), answered again
    idle = [door.connect() for _ in range(3 * LIMITS["max-concurrency"])]
    try:
        resp = httpx.post(f"http://127.0.0.1:{door.port}{PREDICT}", json={"instances": FRAUD_ROWS})
        assert resp.status_code == 200
    finally:
        for sock in idle:
            sock.close()
