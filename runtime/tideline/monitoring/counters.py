"""The servers' per-track counters over a recent window, from the totals each server reports.

Pure: the monitor (:class:`tideline.pods.monitor.Monitor`) reads the servers' hash
(``tideline:{<ns>/<model>}:servers``) and hands it in with the time; nothing here
reads a clock or the network.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import orjson

# The servers' counters (ServerCounters): a server's report older than this no longer counts
SERVER_GONE = 30.0
# The window the error rate is computed on: at least an analysis interval and two of the
# servers' reports (one a second: DataPlane._report), reaching back until it holds this many
# requests (rollout.MIN_REQUESTS: a rate the canary analysis may judge, and one error in a
# quiet minute is no 5 % rate), never further back than ten minutes or six analysis
# intervals. (Reaching back dilutes nothing: it stops at 100 requests.)
RATE_REQUESTS, RATE_SHORTEST, RATE_LONGEST = 100, 2.0, 600.0
COUNTERS = ("requests", "errors", "refused", "shed", "fallbacks")  # (TrackStats.summary)


@dataclass(frozen=True)
class Counted:
    """One track's servers over a recent window: counters summed over the servers, the
    worst server's latency percentiles (each server's own, over its recent answers)."""

    requests: int = 0
    errors: int = 0
    refused: int = 0
    shed: int = 0
    fallbacks: int = 0
    seconds: float | None = None  # what the counters cover (None: nothing read twice yet)
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


class ServerCounters:
    """The servers' per-track counters over a recent window, from their reports' totals.

    Each server process reports the totals it counted since it started
    (``tideline:{<ns>/<model>}:servers``, one field a server). A rate of totals
    hid a late burst: after a million good answers, a server that fails every
    request showed 1 % errors after 10,000 failures, and ``maxErrorRate`` and the
    canary analysis waited for it. So each read is turned into what every server
    counted *since the read before* (its totals less those it reported then), and
    a track's counters are the sum of the newest reads that span at least
    ``shortest`` seconds and hold at least ``min_requests`` requests, or all the
    reads of the last ``longest`` seconds when those hold fewer.

    A server whose totals went down started again: what it reports is what it
    counted since (never a negative count). A server first seen after the first
    read started since the read before: its totals count. At the first read
    nothing does (the totals may be days old): the window starts there. A
    server whose report is older than ``SERVER_GONE`` no longer counts, and what
    it counted before stays in the window it came in.

    Pure: fed the hash as read and the time, it reads no clock and no network.

    Examples
    --------
    >>> c = ServerCounters(interval=10.0)
    >>> def report(ts, requests, errors):
    ...     return orjson.dumps({"ts": ts, "tracks": {"stable": {
    ...         "requests": requests, "errors": errors, "p95": 0.004}}})
    >>> c.update({b"pod-a": report(100.0, 1_000_000, 0)}, now=100.0)["stable"].error_rate
    >>> got = c.update({b"pod-a": report(110.0, 1_000_500, 500)}, now=110.0)["stable"]
    >>> got.requests, got.errors, got.error_rate, got.seconds, got.p95
    (500, 500, 1.0, 10.0, 0.004)
    >>> got = c.update({b"pod-a": report(120.0, 300, 30)}, now=120.0)["stable"]  # restarted
    >>> got.requests, got.errors, got.error_rate
    (300, 30, 0.1)
    """

    def __init__(
        self,
        interval: float,
        *,
        min_requests: int = RATE_REQUESTS,
        shortest: float = RATE_SHORTEST,
        longest: float = RATE_LONGEST,
    ) -> None:
        self.interval = interval
        self.min_requests = min_requests
        self.shortest = max(interval, shortest)
        self.longest = max(6 * interval, longest, self.shortest)
        self._totals: dict[bytes, dict[str, tuple[int, ...]]] = {}  # server -> track -> totals
        self._read_at: float | None = None
        # reads in the window: (the read before's time, this one's, what each track counted)
        self._reads: collections.deque[tuple[float, float, dict[str, tuple[int, ...]]]] = (
            collections.deque()
        )

    def update(self, reports: dict[bytes, bytes], now: float) -> dict[str, Counted]:
        """The servers' hash as read at ``now``: each track's counters over its window."""
        first, since = self._read_at is None, self._read_at
        counted: dict[str, list[int]] = {}
        latency: dict[str, dict[str, float]] = {}
        totals: dict[bytes, dict[str, tuple[int, ...]]] = {}
        for server, raw in reports.items():
            report = _server_report(raw)
            if report is None:  # not a report: the server keeps what it had
                if server in self._totals:
                    totals[server] = self._totals[server]
                continue
            ts, tracks = report
            totals[server] = {t: n for t, (n, _) in tracks.items()}
            if now - ts > SERVER_GONE:
                continue  # gone: what it counts no longer does (its totals kept, if it is back)
            before = self._totals.get(server, {})
            for track, (n, lat) in tracks.items():
                was = before.get(track)
                if was is None:  # new since the read before (a server, or a track of one)
                    delta = (0,) * len(n) if first else n
                elif any(a < b for a, b in zip(n, was, strict=True)):
                    delta = n  # started again: its totals are what it counted since
                else:
                    delta = tuple(a - b for a, b in zip(n, was, strict=True))
                acc = counted.setdefault(track, [0] * len(COUNTERS))
                for j, d in enumerate(delta):
                    acc[j] += d
                worst = latency.setdefault(track, {})
                for k, v in lat.items():
                    worst[k] = max(worst.get(k, 0.0), v)
        self._totals, self._read_at = totals, now
        if since is not None:
            self._reads.append((since, now, {t: tuple(c) for t, c in counted.items()}))
        while len(self._reads) > 1 and self._reads[0][0] < now - self.longest:
            self._reads.popleft()  # (the newest read stays, however long it took)
        tracks_counted = {t for _, _, c in self._reads for t in c}
        return {t: self._window(t, latency.get(t, {})) for t in {*latency, *tracks_counted}}

    def _window(self, track: str, latency: dict[str, float]) -> Counted:
        """The newest reads of a track spanning ``shortest`` seconds and ``min_requests``."""
        sums = [0] * len(COUNTERS)
        start = end = None
        for since, at, counted in reversed(self._reads):
            end = at if end is None else end
            start = since
            for j, d in enumerate(counted.get(track, ())):
                sums[j] += d
            if end - start >= self.shortest and sums[0] >= self.min_requests:
                break
        seconds = None if start is None or end is None else round(end - start, 3)
        requests, errors, refused, shed, fallbacks = sums  # (in the order of COUNTERS)
        return Counted(requests, errors, refused, shed, fallbacks, seconds,
                       latency.get("p50"), latency.get("p95"), latency.get("p99"))  # fmt: skip


def _server_report(
    raw: bytes,
) -> tuple[float, dict[str, tuple[tuple[int, ...], dict[str, float]]]] | None:
    """A server's report (:meth:`tideline.pods.server.dataplane.DataPlane._report`): when it
    was written, and per track its totals (``COUNTERS``) and latency percentiles; None when
    it is not one."""
    try:
        rep = orjson.loads(raw)
        ts = float(rep.get("ts", 0))
        tracks = {}
        for track, s in (rep.get("tracks") or {}).items():
            n = tuple(max(0, int(s.get(k, 0))) for k in COUNTERS)
            lat = {k: float(s[k]) for k in ("p50", "p95", "p99") if k in s}
            tracks[str(track)] = (n, lat)
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError, OverflowError):
        return None
    return ts, tracks
