"""The servers' counters as the monitor reads them (every answer counted per track: requests,
errors, refused, shed, fallbacks), their error rate over a recent window, and the drift of a
logged request with a row cut from the log - against a real redis-server."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from tests.helpers import LoggedRequest, manifest
from tideline import health, predlog
from tideline.contracts import Keys
from tideline.monitoring.counters import ServerCounters
from tideline.pods.monitor import Monitor
from tideline.pods.server.dataplane import TrackStats
from tideline.spec import parse
from tideline_operator import rollout

pytestmark = pytest.mark.integration


def _model(interval: str = "10s"):
    return parse(manifest(name="fraud", rollout={"analysis": {"interval": interval}}))


class Clock:
    """The monitor's time, moved by the test (the servers' reports are stamped with it)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Server:
    """A server process as the monitor sees it: its per-track totals since it started
    (:class:`TrackStats`, what a server counts), reported in the ``servers`` hash."""

    def __init__(self, r, keys: Keys, name: str) -> None:  # type: ignore[no-untyped-def]
        self.r, self.keys, self.name = r, keys, name
        self.stats: dict[str, TrackStats] = {}

    def answer(self, track: str = "stable", *, ok: int = 0, failed: int = 0, refused: int = 0,
               shed: int = 0, fallbacks: int = 0) -> Server:  # fmt: skip
        st = self.stats.setdefault(track, TrackStats())
        st.requests += ok + failed
        st.errors += failed
        st.refused += refused
        st.shed += shed
        st.fallbacks += fallbacks
        st.latencies.extend([0.002] * min(ok, 10))
        return self

    def restart(self) -> Server:
        self.stats = {}
        return self

    def report(self, now: float) -> None:
        rep = {"ts": now, "tracks": {t: s.summary() for t, s in self.stats.items()}}
        self.r.hset(self.keys.servers, self.name, orjson.dumps(rep))


def _monitor(model, r, clock: Clock) -> Monitor:  # type: ignore[no-untyped-def]
    mon = Monitor(model, r, clock=clock)
    mon.start()
    return mon


def _track(mon: Monitor, name: str = "stable") -> health.TrackHealth:
    """A track of the summary the monitor writes, as the operator decodes it from Redis."""
    mon.write()
    written = health.decode(mon.r.get(mon.keys.health))
    assert written is not None
    return written.track(name)


def test_refused_and_shed_answers_show_in_health_beside_requests_and_errors(r) -> None:
    model, clock = _model(), Clock()
    keys = Keys(model.namespace, model.name)
    a, b = Server(r, keys, "pod-a"), Server(r, keys, "pod-b")
    a.answer(ok=5000, failed=3, refused=40, shed=7).report(clock.now)
    b.answer(ok=4000).report(clock.now)
    mon = _monitor(model, r, clock)
    first = _track(mon)  # (the first read: the totals may be days old, nothing counts yet)
    assert (first.requests, first.error_rate, first.counted_over) == (0, None, None)
    clock.now += 10
    a.answer(ok=300, failed=2, refused=11, shed=5, fallbacks=4).report(clock.now)
    b.answer(ok=198, refused=1, shed=20).report(clock.now)
    t = _track(mon)
    assert (t.requests, t.errors, t.refused, t.shed, t.fallbacks) == (500, 2, 12, 25, 4)
    assert t.error_rate == pytest.approx(2 / 500) and t.counted_over == pytest.approx(10.0)
    assert t.p95_latency == pytest.approx(0.002)
    # a summary written before refused and shed were counted still decodes
    old = {"ts": clock.now, "tracks": {"stable": {"requests": 9, "errors": 1, "errorRate": 0.1}}}
    decoded = health.decode(orjson.dumps(old))
    assert decoded is not None
    assert (decoded.track("stable").refused, decoded.track("stable").shed) == (0, 0)


@pytest.mark.parametrize(
    "fails_from",
    [0.0, 5.0],
    ids=[
        "a server that fails every request from one write on shows a rate of 1 at the next",
        "a server that starts failing mid-interval shows over half at the next write and 1 "
        "at the one after",
    ],
)
def test_a_server_failing_after_a_million_good_answers_shows_it_within_two_intervals(
    r, fails_from: float
) -> None:
    model, clock = _model("10s"), Clock()
    keys = Keys(model.namespace, model.name)
    canary = Server(r, keys, "canary-pod").answer("canary", ok=1_000_000)
    canary.report(clock.now)
    mon = _monitor(model, r, clock)
    _track(mon, "canary")
    rates, outcomes = [], []
    for second in range(1, 31):  # 200 answers a second, reported every second
        failing = second > fails_from + 10
        canary.answer("canary", ok=0 if failing else 200, failed=200 if failing else 0)
        clock.now += 1
        canary.report(clock.now)
        if second % 10 == 0:  # a write each analysis interval
            t = _track(mon, "canary")
            written = health.decode(r.get(keys.health))
            rates.append(t.error_rate)
            outcomes.append(rollout.analyze(model.spec, written, clock.now).outcome)
    # the totals' rate would be 2,000 errors in 1,002,000 answers (0.2 %) at the second write
    if fails_from == 0.0:
        assert rates == [0.0, 1.0, 1.0] and outcomes[1:] == ["fail", "fail"]
    else:
        assert rates[0] == 0.0 and rates[1] == pytest.approx(0.5) and rates[2] == 1.0
        assert outcomes[1:] == ["fail", "fail"]
    t = _track(mon, "canary")
    assert t.requests == 2000 and t.errors == 2000  # what the rate rests on: MIN_REQUESTS


def test_a_server_that_restarts_or_is_gone_gives_no_negative_or_absurd_rate(r) -> None:
    model, clock = _model("10s"), Clock()
    keys = Keys(model.namespace, model.name)
    a, b = Server(r, keys, "pod-a"), Server(r, keys, "pod-b")
    a.answer(ok=1_000_000, failed=10).report(clock.now)
    b.answer(ok=500_000).report(clock.now)
    mon = _monitor(model, r, clock)
    _track(mon)
    clock.now += 10
    a.restart().answer(ok=270, failed=30).report(clock.now)  # its totals drop: started again
    b.answer(ok=700).report(clock.now)
    t = _track(mon)
    assert (t.requests, t.errors) == (1000, 30) and t.error_rate == pytest.approx(0.03)
    clock.now += 10  # pod-b stops reporting (gone), pod-a goes on
    a.answer(ok=400).report(clock.now)
    t = _track(mon)
    assert (t.requests, t.errors) == (400, 0) and t.error_rate == 0.0
    clock.now += 31  # pod-b's last report is over 30 s old: its totals no longer count
    a.answer(ok=100, failed=100).report(clock.now)
    t = _track(mon)
    assert (t.requests, t.errors) == (200, 100) and t.error_rate == pytest.approx(0.5)
    clock.now += 10  # pod-b is back, the same process (its totals went on): only what's new
    b.answer(ok=100).report(clock.now)
    a.report(clock.now)
    t = _track(mon)
    assert (t.requests, t.errors) == (100, 0)


# The window alone (pure: no Redis). Each case: the reads as (seconds since the last one,
# requests and errors each server counted since), what the last read's window holds.
@pytest.mark.parametrize(
    ("reads", "expected"),
    [
        ([(10, {"a": (500, 500)})], (500, 500, 10.0)),
        ([(10, {"a": (60, 0)}), (10, {"a": (30, 30)}), (10, {"a": (30, 30)})], (120, 60, 30.0)),
        ([(100, {"a": (10, 0)})] * 9, (60, 0, 600.0)),
        ([(0.1, {"a": (500, 0)}), (0.1, {"a": (500, 500)})], (1000, 500, 0.2)),
        ([(10, {"a": (400, 0)}), (10, {"a": (300, 300), "b": (100, 0)})], (400, 300, 10.0)),
    ],
    ids=[
        "one read of 100 requests or more and an interval long is the window",
        "a window reaches back until it holds 100 requests when traffic is low",
        "a window never reaches back further than ten minutes or six intervals",
        "a window reaches back two seconds at least, for every server's report to be in it",
        "a server first seen after the first read counts all it counted since it started",
    ],
)
def test_the_error_rate_s_window(reads, expected) -> None:
    c = ServerCounters(interval=10.0)
    now, totals = 1000.0, {"a": [7_000_000, 0], "b": [0, 0]}
    seen = {"a"}  # b starts after the first read
    got = c.update(_reports(totals, seen, now), now)
    for dt, counted in reads:
        now += dt
        for server, (n, e) in counted.items():
            seen.add(server)
            totals[server][0] += n
            totals[server][1] += e
        got = c.update(_reports(totals, seen, now), now)
    s = got["stable"]
    assert (s.requests, s.errors, s.seconds) == (
        expected[0],
        expected[1],
        pytest.approx(expected[2]),
    )


def _reports(totals, seen, now):  # type: ignore[no-untyped-def]
    return {
        name.encode(): orjson.dumps({"ts": now, "tracks": {"stable": {"requests": n, "errors": e}}})
        for name, (n, e) in totals.items()
        if name in seen
    }


# -- drift of a request with a row cut from the log ---------------------------------------------
@pytest.mark.parametrize(
    "rows",
    [
        [{"amount": 1.0, "hour": 3.0}, {"amount": 2.0, "hour": 4.0}, {"amount": 3.0, "hour": 5}],
        [{"amount": 1.0, "hour": "3"}, {"amount": 2.0, "hour": 4.0}, {"amount": 3.0, "hour": 5}],
    ],
    ids=[
        "rows of numbers are read typed around the cut row",
        "rows read one by one (a value of another type: its default) skip the cut row too",
    ],
)
def test_a_request_with_a_row_cut_from_the_log_feeds_its_other_rows_to_drift(r, rows) -> None:
    model, clock = _model("100ms"), Clock()
    mon = _monitor(model, r, clock)
    mon.list_logs_every = 0.0
    fed: list[np.ndarray] = []
    mon._feature_drift = lambda X: fed.append(X)  # type: ignore[method-assign]
    scores_fed: list[np.ndarray] = []
    mon.prediction_drift.update_many = lambda x: scores_fed.append(x)  # type: ignore[method-assign]
    time.sleep(0.01)  # (after the monitor's start: the log is read from then on)
    oversized = {"amount": 9.0, "hour": 9.0, "merchant": "x" * 20_000}
    sent = [rows[0], oversized, *rows[1:]]
    limit = predlog.row_bytes(len(model.spec.model.features))
    body, cut = predlog.bounded(orjson.dumps({"instances": sent}), len(sent), limit)
    assert cut == [1]  # (as the server logs it: the row over the limit is null)
    req = LoggedRequest(orjson.loads(body)["instances"], revision=model.revision,
                        scores=[0.1, 0.9, 0.2, 0.3])  # fmt: skip
    req.meta.cut = cut
    req.write(r, Keys(model.namespace, model.name))
    while mon.tracks.get("stable") is None:
        mon.step(block_ms=10)
    assert mon.metrics.bad_log_entries._value.get() == 0  # type: ignore[attr-defined]
    hour = rows[0]["hour"] if isinstance(rows[0]["hour"], float) else 12.0  # (hour's default)
    assert np.concatenate(fed).tolist() == [[1.0, hour], [2.0, 4.0], [3.0, 5.0]]
    assert np.concatenate(scores_fed).ravel().tolist() == [0.1, 0.2, 0.3]
    assert mon.tracks["stable"].predictions == 4  # (the cut row was answered: it counts)
