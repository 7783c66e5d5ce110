"""spec.notify against real HTTP receivers on loopback: a model's turn rolls back on a real
Redis, and its webhooks go to a receiver that answers, one that fails first, and one that
hangs - which costs the turn nothing (measured)."""

from __future__ import annotations

import base64
import json
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.helpers import (
    CANARY_ROLLOUT,
    Clock,
    FakeKube,
    as_applied,
    health_summary,
    manifest,
    turn,
    wait_until,
)
from tideline.algorithms import make_learner
from tideline.contracts import Keys
from tideline.spec import parse
from tideline.store import ModelStore
from tideline_operator.builders import OperatorConfig
from tideline_operator.notify import Decided, Notifier, Retry
from tideline_operator.reconcile import ModelMemory, Reconciler
from tideline_operator.rollout import Event, RolloutStatus

pytestmark = pytest.mark.integration

TOKEN = "T000/B000/s3cr3t-t0ken"  # what the URL carries: never in a log or an Event


class Receiver:
    """An HTTP receiver on 127.0.0.1 that answers each POST with the next of ``answers``
    (a status, or ``"hang"``: the request held until :meth:`close`), the last one after."""

    def __init__(self, answers: list[int | str]) -> None:
        self.answers = list(answers)
        self.got: list[tuple[str, dict[str, str], bytes, float]] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.got.append((self.path, dict(self.headers), body, time.monotonic()))
                answer = receiver.answers[min(len(receiver.got), len(receiver.answers)) - 1]
                if answer == "hang":
                    receiver.release.wait(30)
                    answer = 200
                try:
                    self.send_response(int(answer))
                    self.end_headers()
                except OSError:  # (the sender gave up on it)
                    pass

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/services/{TOKEN}"

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, _, body, _ in self.got]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@contextmanager
def receiving(*answers: int | str) -> Iterator[Receiver]:
    rc = Receiver(list(answers))
    try:
        yield rc
    finally:
        rc.close()


FAST = Retry(attempts=3, timeout=1.0, first=0.1, factor=2.0, cap=0.5, budget=10.0)


@pytest.fixture
def setup(r, redis_under_test) -> Iterator[tuple]:  # type: ignore[no-untyped-def]
    """A reconciler with a notifier on quick retries (attempts of 1 s), its API, its clock,
    the Events it posted, one model's memory."""
    kube, clock = FakeKube(), Clock()
    notifier = Notifier(FAST)
    settings = OperatorConfig(image="img:1", redis_url=redis_under_test.url)
    rec = Reconciler(kube, settings, clock=clock, notifier=notifier)  # type: ignore[arg-type]
    yield rec, kube, clock, [], ModelMemory()
    notifier.stop(timeout=0)
    assert not any(t.name == "tideline-notify" and t.is_alive() for t in threading.enumerate())


def _secret(kube: FakeKube, name: str, data: dict[str, str]) -> None:
    kube.objects[("Secret", name)] = {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "test"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }  # fmt: skip


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("tideline_operator_notifications_total",
                                     {"outcome": outcome}) or 0.0  # fmt: skip


def _rolled_back(setup: tuple, r: Any, notify: list[dict]) -> tuple[dict[str, Any], float]:
    """A model whose served v7 is surely worse than lastGood v6: its turn rolls back. The
    status, and how long that turn took."""
    rec, kube, clock, events, _ = setup
    m = manifest("fraud", rollout=CANARY_ROLLOUT, guardrails={"maxAccuracyDrop": 0.05},
                 notify=notify)  # fmt: skip
    rev = parse(m).revision
    store = ModelStore(r, "test", "fraud")
    learner = make_learner(m["spec"]["model"])
    for v in range(1, 8):
        store.publish(rev, v, learner)
    store.set_pointer(rev, "lastGood", 6)
    body = as_applied(m)
    turn(setup, body)
    r.set(Keys("test", "fraud").health,
          health_summary(clock.now, stable={"accuracy": 0.80, "window": 500},
                         quality={"served": (rev, 7), "lastGood": (rev, 6, 0.10, 0.03, 500)}))  # fmt: skip
    clock.now += 1
    start = time.perf_counter()
    st = turn(setup, body)
    took = time.perf_counter() - start
    assert st is not None and st["servedVersion"] == 6 and st["pinned"] is True
    return st, took


def test_a_rollback_is_posted_as_json_and_as_a_slack_message(setup, r) -> None:
    rec, kube, clock, events, _ = setup
    with receiving(200) as hook, receiving(200) as slack:
        _secret(kube, "hooks", {"url": hook.url})
        _secret(kube, "slack", {"webhook": slack.url + "\n"})  # (as `echo` writes it)
        delivered = _count("delivered")
        st, took = _rolled_back(setup, r, [
            {"url": {"secretRef": {"name": "hooks"}}},
            {"url": {"secretRef": {"name": "slack", "key": "webhook"}}, "format": "slack"},
        ])  # fmt: skip
        wait_until(lambda: hook.got and slack.got)
        (sent,) = hook.bodies()
        rev = parse(manifest("fraud", rollout=CANARY_ROLLOUT)).revision
        assert {k: sent[k] for k in ("model", "namespace", "reason", "type", "revision",
                                     "stableRevision", "servedVersion", "lastGoodVersion",
                                     "latestVersion", "phase")} == {
            "model": "fraud", "namespace": "test", "reason": "RolledBack", "type": "Warning",
            "revision": rev, "stableRevision": rev, "servedVersion": 6, "lastGoodVersion": 6,
            "latestVersion": 7, "phase": st["phase"]}  # fmt: skip
        assert sent["rollback"]["from"] == 7 and sent["rollback"]["to"] == 6
        assert sent["message"].startswith("v7 -> v6: ") and sent["timestamp"] == clock.now
        path, headers, _, _ = hook.got[0]
        assert path == f"/services/{TOKEN}" and headers["Content-Type"] == "application/json"
        (message,) = slack.bodies()
        assert message["text"].startswith(":rewind: RolledBack test/fraud: v7 -&gt; v6: ")
        assert [b["type"] for b in message["blocks"]] == ["section", "context"]
        wait_until(lambda: _count("delivered") == delivered + 2)
    assert not any(reason == "NotificationFailed" for _, reason, _ in events)
    print(f"\n[notify] rollback turn with two receivers that answer: {took * 1000:.1f} ms")


def test_a_receiver_that_fails_first_is_tried_again_with_the_same_notice(setup, r) -> None:
    rec, kube, clock, events, _ = setup
    with receiving(500, 200) as hook:
        _secret(kube, "hooks", {"url": hook.url})
        retried = REGISTRY.get_sample_value("tideline_operator_notification_retries_total") or 0
        _, took = _rolled_back(setup, r, [{"url": {"secretRef": {"name": "hooks"}}}])
        wait_until(lambda: len(hook.got) == 2)
        first, again = hook.bodies()
        assert first == again and first["reason"] == "RolledBack"
        waited = hook.got[1][3] - hook.got[0][3]
        assert 0.1 <= waited < 1.0, "one backoff (first: 0.1 s) between the attempts"
        assert (
            REGISTRY.get_sample_value("tideline_operator_notification_retries_total") == retried + 1
        )
        wait_until(lambda: rec.notifier.pending() == 0)
    clock.now += 1
    turn(setup, as_applied(manifest("fraud", rollout=CANARY_ROLLOUT,
                                    guardrails={"maxAccuracyDrop": 0.05},
                                    notify=[{"url": {"secretRef": {"name": "hooks"}}}])))  # fmt: skip
    assert not any(reason == "NotificationFailed" for _, reason, _ in events)
    print(
        f"\n[notify] rollback turn with a receiver that fails (500, then 200): {took * 1000:.1f} ms"
    )


def test_a_receiver_that_hangs_costs_the_turn_nothing_and_its_failure_is_an_event(
    setup, r, caplog
) -> None:
    rec, kube, clock, events, mem = setup
    notify = [{"url": {"secretRef": {"name": "hooks"}}}]
    with receiving("hang") as hook:
        _secret(kube, "hooks", {"url": hook.url})
        failed = _count("failed")
        st, took = _rolled_back(setup, r, notify)
        assert took < 0.5, f"the turn waited on the receiver ({took:.3f}s)"
        wait_until(lambda: hook.got)
        # and one Event action alone, applied as the turn applies it, many times over
        model = mem.parsed[1]
        decided = Decided(RolloutStatus(), RolloutStatus.from_status(st), clock.now)
        ev = Event("Warning", "RolledBack", "v7 -> v6: measured")
        n = 50
        start = time.perf_counter()
        for _ in range(n):
            rec._act(model, ev, r, lambda *_: None, {}, decided)
        per_act = (time.perf_counter() - start) / n
        assert per_act < 0.01
        # 3 attempts of 1 s and waits of 0.1 and 0.2 s: given up on, then said by the next turn
        wait_until(lambda: _count("failed") >= failed + 1, timeout=10)
        clock.now += 1
        body = as_applied(manifest("fraud", rollout=CANARY_ROLLOUT,
                                   guardrails={"maxAccuracyDrop": 0.05}, notify=notify))  # fmt: skip
        turn(setup, body)
        said = [m for _, reason, m in events if reason == "NotificationFailed"]
        assert said and said[0].startswith(
            "RolledBack not delivered to Secret 'hooks' key 'url': no answer within 1s, after 3 attempts"
        )
        assert all(TOKEN not in m for m in said) and TOKEN not in caplog.text
    print(f"\n[notify] rollback turn with a receiver that hangs: {took * 1000:.1f} ms; "
          f"one Event action queued for it: {per_act * 1e6:.0f} us")  # fmt: skip


def test_a_secret_missing_is_an_event_naming_it_and_the_rollback_goes_on(setup, r) -> None:
    rec, kube, clock, events, _ = setup
    unresolved = _count("unresolved")
    _secret(kube, "nokey", {"other": "x"})
    _secret(kube, "notaurl", {"url": "hooks.slack.com/services/" + TOKEN})
    _rolled_back(setup, r, [
        {"url": {"secretRef": {"name": "absent"}}},
        {"url": {"secretRef": {"name": "nokey"}}},
        {"url": {"secretRef": {"name": "notaurl"}}},
    ])  # fmt: skip
    said = [m for _, reason, m in events if reason == "NotificationFailed"]
    assert said == [
        "spec.notify[0]: Secret 'absent' not found: its notifications cannot be sent",
        "spec.notify[1]: Secret 'nokey' has no key 'url': its notifications cannot be sent",
        "spec.notify[2]: Secret 'notaurl' key 'url' holds no http(s) URL: its notifications "
        "cannot be sent",
        "RolledBack not sent: Secret 'absent' not found",
        "RolledBack not sent: Secret 'nokey' has no key 'url'",
        "RolledBack not sent: Secret 'notaurl' key 'url' holds no http(s) URL",
    ]
    assert _count("unresolved") == unresolved + 3
    assert any(reason == "RolledBack" for _, reason, _ in events)


def test_a_receiver_named_for_other_events_hears_nothing_of_a_rollback(setup, r) -> None:
    rec, kube, clock, events, _ = setup
    with receiving(200) as hook:
        _secret(kube, "hooks", {"url": hook.url})
        _rolled_back(setup, r, [{"url": {"secretRef": {"name": "hooks"}}, "events": ["Promoted"]}])
        time.sleep(0.2)
        assert hook.got == [] and rec.notifier.pending() == 0


def test_a_rollback_turn_takes_as_long_with_a_failing_or_hanging_receiver_as_with_none(
    setup, r, redis_under_test
) -> None:
    notifier: Notifier = setup[0].notifier
    notifier.start()  # (as the operator does at its start: the HTTP client is made before)
    answers: dict[str, list[int | str] | None] = {"none": None, "500": [500], "hang": ["hang"]}
    took: dict[str, list[float]] = {k: [] for k in answers}
    with receiving(500) as failing, receiving("hang") as hanging:
        urls = {"500": failing.url, "hang": hanging.url}
        for _ in range(15):  # (taking turns: a loaded machine slows each alike)
            for k in answers:
                r.flushdb()
                kube, clock = FakeKube(), Clock()
                settings = OperatorConfig(image="img:1", redis_url=redis_under_test.url)
                rec = Reconciler(kube, settings, clock=clock, notifier=notifier)  # type: ignore[arg-type]
                notify = []
                if k in urls:
                    _secret(kube, k, {"url": urls[k]})
                    notify = [{"url": {"secretRef": {"name": k}}}]
                took[k].append(_rolled_back((rec, kube, clock, [], ModelMemory()), r, notify)[1])
        assert failing.got and hanging.got
    median = {k: statistics.median(t) * 1000 for k, t in took.items()}
    print(
        f"\n[notify] rollback turn, median of 15: no receiver {median['none']:.2f} ms, "
        f"one answering 500 {median['500']:.2f} ms, one that hangs {median['hang']:.2f} ms"
    )
    assert median["500"] < median["none"] + 5 and median["hang"] < median["none"] + 5
