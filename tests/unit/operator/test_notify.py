"""spec.notify's webhooks without a network: the payloads, the retry schedule, the queue, and
the sender on httpx's mock transport (the real receivers are the integration suite's)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from tideline.spec import NOTIFY_DEFAULT, NOTIFY_EVENTS
from tideline_operator.notify import (
    Backlog,
    Decided,
    Delivery,
    Notifier,
    Retry,
    encode,
    notice,
    retry_after,
    slack_message,
    verdict,
)
from tideline_operator.rollout import Aborted, Event, Rollback, RolloutStatus

ROOT = Path(__file__).parents[3]
NOW = 1796400000.25  # 2026-12-04T16:00:00.250Z

STABLE = RolloutStatus(phase="Healthy", stableRevision="b2", servedVersion=7, lastGoodVersion=6,
                       latestVersion=7)  # fmt: skip
ROLLED = RolloutStatus(phase="Degraded", stableRevision="b2", servedVersion=6, lastGoodVersion=6,
                       latestVersion=7, pinned=True,
                       lastRollback=Rollback(NOW, "b2", 7, 6, "lastGood v6 beats served v7", 7))  # fmt: skip
CANARY = RolloutStatus(phase="Progressing", stableRevision="b2", canaryRevision="c3",
                       canaryWeight=10, servedVersion=7)  # fmt: skip
ABORTED = RolloutStatus(phase="Degraded", stableRevision="b2", canaryRevision="c3",
                        canaryWeight=0, aborted=Aborted("c3", "worse", NOW, ""))  # fmt: skip
PROMOTED = RolloutStatus(phase="Progressing", stableRevision="c3", promotedAt=NOW)

# (reason, before, after, what the notice says of revisions and versions)
CASES = [
    ("RolledBack", STABLE, ROLLED,
     {"revision": "b2", "servedVersion": 6, "lastGoodVersion": 6, "latestVersion": 7,
      "rollback": {"from": 7, "to": 6, "reason": "lastGood v6 beats served v7"}}),
    ("Unpinned", ROLLED, STABLE, {"revision": "b2", "servedVersion": 7, "rollback": None}),
    ("Promoted", CANARY, PROMOTED,
     {"revision": "c3", "stableRevision": "c3", "canaryRevision": None,
      "previousRevision": "b2"}),
    ("RolloutAborted", CANARY, ABORTED,
     {"revision": "c3", "stableRevision": "b2", "canaryRevision": "c3", "phase": "Degraded"}),
    ("BacktestFailed", CANARY, ABORTED, {"revision": "c3", "canaryRevision": "c3"}),
    ("ConceptDrift", STABLE, STABLE, {"revision": "b2", "previousRevision": None}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("reason", "before", "after", "says"),
    CASES,
    ids=[
        f"a {c[0]} notice names the revision it is about and the versions after it" for c in CASES
    ],
)
def test_the_json_notice_names_the_model_the_event_and_its_revisions(
    reason: str, before: RolloutStatus, after: RolloutStatus, says: dict
) -> None:
    ev = Event("Warning", reason, f"{reason}: what happened")
    body = json.loads(encode(notice("prod", "fraud", ev, Decided(before, after, NOW)), "json"))
    assert {k: body[k] for k in ("model", "namespace", "reason", "type", "message")} == {
        "model": "fraud", "namespace": "prod", "reason": reason, "type": "Warning",
        "message": f"{reason}: what happened"}  # fmt: skip
    assert body["time"] == "2026-12-04T16:00:00.250Z" and body["timestamp"] == NOW
    assert {k: body[k] for k in says} == says
    assert re.fullmatch(r"[0-9a-f]{20}", body["id"])


def test_the_same_event_has_the_same_id_and_another_event_another() -> None:
    d = Decided(STABLE, ROLLED, NOW)
    a = notice("prod", "fraud", Event("Warning", "RolledBack", "v7 -> v6"), d)
    assert a.id == notice("prod", "fraud", Event("Warning", "RolledBack", "v7 -> v6"), d).id
    assert a.id != notice("prod", "fraud", Event("Warning", "RolledBack", "v8 -> v6"), d).id
    assert a.id != notice("prod", "other", Event("Warning", "RolledBack", "v7 -> v6"), d).id


def test_a_slack_message_is_incoming_webhook_text_and_blocks_with_markup_escaped() -> None:
    ev = Event("Warning", "RolledBack", "v7 -> v6: <!channel> & co")
    n = notice("prod", "fraud", ev, Decided(STABLE, ROLLED, NOW))
    msg = json.loads(encode(n, "slack"))
    assert set(msg) == {"text", "blocks"}
    assert msg["text"] == ":rewind: RolledBack prod/fraud: v7 -&gt; v6: &lt;!channel&gt; &amp; co"
    section, context = msg["blocks"]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert section["text"]["text"].startswith(":rewind: *RolledBack* `prod/fraud`\n")
    assert "<!channel>" not in json.dumps(msg), "no mention gets through"
    facts = context["elements"][0]["text"]
    for fact in ("phase *Degraded*", "stable `b2`", "served v6", "lastGood v6", "latest v7",
                 "2026-12-04T16:00:00.250Z"):  # fmt: skip
        assert fact in facts


def test_a_long_message_is_cut_below_slacks_section_limit() -> None:
    n = notice(
        "prod", "fraud", Event("Normal", "Proven", "x" * 10_000), Decided(STABLE, STABLE, NOW)
    )
    section = slack_message(n)["blocks"][0]["text"]["text"]
    assert len(section) < 3000 and section.endswith("…")


def test_every_event_a_receiver_can_name_is_one_the_operator_posts() -> None:
    sources = "".join(
        (ROOT / p).read_text()
        for p in (
            "operator/tideline_operator/rollout.py",
            "operator/tideline_operator/reconcile.py",
            "runtime/tideline/algorithms/external.py",
            "runtime/tideline/pods/storage.py",
        )  # fmt: skip
    )
    for reason in NOTIFY_EVENTS:
        assert f'"{reason}"' in sources, reason
    assert set(NOTIFY_DEFAULT) == {"RolledBack", "Unpinned", "Promoted", "RolloutAborted",
                                   "BacktestFailed", "ConceptDrift"}  # fmt: skip


# -- the retry schedule ---------------------------------------------------------------------

SCHEDULES = [
    ("the defaults wait 1, 2, 4 and 8 s between 5 attempts", Retry(), 0.0, [1.0, 2.0, 4.0, 8.0]),
    ("waits double up to the cap", Retry(attempts=8, cap=10.0, budget=1e9), 0.0,
     [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]),
    ("a receiver that hangs each attempt's 5 s runs out of the 60 s budget", Retry(attempts=20),
     5.0, [1.0, 2.0, 4.0, 8.0, 16.0]),
    ("one attempt: no retry", Retry(attempts=1), 0.0, []),
]  # fmt: skip


@pytest.mark.parametrize(("retry", "took", "waits"), [s[1:] for s in SCHEDULES],
                         ids=[s[0] for s in SCHEDULES])  # fmt: skip
def test_the_retry_schedule(retry: Retry, took: float, waits: list[float]) -> None:
    assert retry.schedule(took) == waits
    total = len(waits) * took + sum(waits) + took
    assert len(waits) + 1 <= retry.attempts and total - took < retry.budget


def test_retry_after_is_honoured_up_to_the_cap_and_never_shortens_the_backoff() -> None:
    r = Retry(cap=30.0)
    assert r.delay(1, 0.0, retry_after=12.0) == 12.0
    assert r.delay(1, 0.0, retry_after=3600.0) == 30.0
    assert r.delay(3, 0.0, retry_after=0.5) == 4.0
    assert (retry_after("7"), retry_after("Wed, 21 Oct 2026 07:28:00 GMT"), retry_after(None)) == (
        7.0, None, None)  # fmt: skip


@pytest.mark.parametrize(
    ("status", "want"),
    [(200, "delivered"), (202, "delivered"), (302, "rejected"), (400, "rejected"),
     (403, "rejected"), (404, "rejected"), (408, "retry"), (410, "rejected"), (429, "retry"),
     (500, "retry"), (502, "retry"), (503, "retry")],
)  # fmt: skip
def test_what_an_answer_means(status: int, want: str) -> None:
    assert verdict(status) == want


# -- the queue ------------------------------------------------------------------------------


def test_a_full_lane_drops_its_oldest_and_other_lanes_are_untouched() -> None:
    b = Backlog[int](3)
    assert [b.put("a", i) for i in range(5)] == [None, None, None, 0, 1]
    assert b.put("b", 100) is None
    assert len(b) == 4
    assert [b.take("a") for _ in range(4)] == [2, 3, 4, None]
    assert b.take("b") == 100 and b.take("b") is None and len(b) == 0
    with pytest.raises(ValueError):
        Backlog[int](0)


# -- the sender, on a mock transport --------------------------------------------------------


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("tideline_operator_notifications_total",
                                     {"outcome": outcome}) or 0.0  # fmt: skip


def _delivery(
    lane: str = "prod/hook/url", reason: str = "RolledBack", body: bytes = b"{}"
) -> Delivery:
    return Delivery(lane=lane, where="Secret 'hook' key 'url'", url=f"http://{lane.split('/')[1]}.test/t0ken",
                    body=body, model=("prod", "fraud"), reason=reason)  # fmt: skip


FAST = Retry(attempts=3, timeout=0.2, first=0.01, factor=2.0, cap=0.05, budget=5.0)


@pytest.fixture
def sender() -> Iterator[Callable[..., Notifier]]:
    made: list[Notifier] = []

    def make(handler: Callable, retry: Retry = FAST, backlog: int = 100) -> Notifier:
        n = Notifier(retry, backlog, transport=httpx.MockTransport(handler))
        made.append(n)
        return n

    yield make
    for n in made:
        n.stop(timeout=0)


def _settled(n: Notifier, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while n.pending() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert n.pending() == 0


def test_a_delivery_posts_the_body_as_json(sender) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    before = _count("delivered")
    n = sender(handler)
    n.submit(_delivery(body=b'{"reason": "RolledBack"}'))
    _settled(n)
    assert (
        len(seen) == 1
        and seen[0].method == "POST"
        and seen[0].content == b'{"reason": "RolledBack"}'
    )
    assert seen[0].headers["content-type"] == "application/json"
    assert seen[0].headers["user-agent"].startswith("tideline-operator/")
    assert _count("delivered") == before + 1 and n.failures("prod", "fraud") == []


def test_a_5xx_is_tried_again_and_a_4xx_is_not(sender) -> None:
    answers = {"flaky": [500, 503, 200], "revoked": [404, 200]}
    calls: dict[str, int] = {"flaky": 0, "revoked": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host.split(".")[0]
        calls[host] += 1
        return httpx.Response(answers[host][calls[host] - 1])

    delivered, rejected = _count("delivered"), _count("rejected")
    n = sender(handler)
    n.submit(_delivery("prod/flaky/url"))
    n.submit(_delivery("prod/revoked/url"))
    _settled(n)
    assert calls == {"flaky": 3, "revoked": 1}
    assert _count("delivered") == delivered + 1 and _count("rejected") == rejected + 1
    said = n.failures("prod", "fraud")
    assert said == ["RolledBack not delivered to Secret 'hook' key 'url': refused (HTTP 404); "
                    "not tried again"]  # fmt: skip


def test_a_receiver_that_hangs_gives_up_after_its_attempts_and_says_so_without_its_url(
    sender, caplog
) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    failed = _count("failed")
    n = sender(hang)
    start = time.perf_counter()
    n.submit(_delivery())
    submitted = time.perf_counter() - start
    _settled(n)
    took = time.perf_counter() - start
    assert submitted < 0.05, "submitting waits for nothing"
    # 3 attempts of 0.2 s and waits of 0.01 and 0.02 s
    assert 0.6 <= took < 2.0
    assert _count("failed") == failed + 1
    (said,) = n.failures("prod", "fraud")
    assert "no answer within 0.2s, after 3 attempts" in said
    assert "t0ken" not in said and "t0ken" not in caplog.text


def test_a_hanging_receiver_holds_up_only_its_own_lane(sender) -> None:
    got: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host.split(".")[0]
        if host == "slow":
            await asyncio.sleep(30)
        got.append(host)
        return httpx.Response(200)

    n = sender(handler)
    n.submit(_delivery("prod/slow/url"))
    n.submit(_delivery("prod/fast/url"))
    deadline = time.monotonic() + 2
    while "fast" not in got and time.monotonic() < deadline:
        time.sleep(0.005)
    assert got == ["fast"] and n.pending() == 1


def test_a_full_lane_drops_the_oldest_counted_and_sends_the_rest_in_order(sender) -> None:
    release = asyncio.Event()
    got: list[bytes] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.wait_for(release.wait(), 5)
        got.append(request.content)
        return httpx.Response(200)

    dropped = _count("dropped")
    n = sender(handler, Retry(attempts=1, timeout=5.0), backlog=2)
    for i in range(5):  # the first is being sent; 1 and 2 are pushed out by 3 and 4
        n.submit(_delivery(body=b"%d" % i))
        time.sleep(0.02)
    assert _count("dropped") == dropped + 2
    assert n._loop is not None
    n._loop.call_soon_threadsafe(release.set)
    _settled(n)
    assert got == [b"0", b"3", b"4"]
    assert [s.split(": ")[1] for s in n.failures("prod", "fraud")] == [
        "dropped", "dropped"]  # fmt: skip


def test_stop_sends_what_it_can_in_its_time_then_drops_the_rest_and_refuses_more(sender) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    dropped = _count("dropped")
    n = sender(hang, Retry(attempts=1, timeout=10.0))
    n.submit(_delivery())
    n.submit(_delivery())
    start = time.perf_counter()
    n.stop(timeout=0.2)
    assert time.perf_counter() - start < 1.0
    assert _count("dropped") == dropped + 2 and n.pending() == 0
    n.submit(_delivery())
    assert _count("dropped") == dropped + 3
    assert n._thread is not None and not n._thread.is_alive()


def test_start_makes_the_sender_and_its_client_before_any_notification(sender) -> None:
    n = sender(lambda request: httpx.Response(200))
    n.start()
    assert n._thread is not None and n._thread.is_alive() and n._client is not None
    n.stop(timeout=0)
    assert not n._thread.is_alive()
    n.start()  # (a stopped sender stays stopped)
    assert not n._thread.is_alive()
