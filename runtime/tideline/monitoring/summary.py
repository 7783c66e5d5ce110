"""The monitor's health summary (:class:`tideline.health.Health`), built from its parts.

Each track's quality and predictions (:class:`tideline.monitoring.tracks.Tracks`) beside what
the servers counted for it (:class:`tideline.monitoring.counters.Counted`), each version's
quality, the drift part (:class:`tideline.monitoring.signals.DriftSignals`), the evidence
(:class:`tideline.monitoring.candidates.Candidates`), the labels' lag and the throughput
between two health writes, and the log's size: :func:`health` puts them together.

Pure: the monitor (:class:`tideline.pods.monitor.Monitor`) reads the servers'
counters and the log's size, hands in the parts and the time, and writes the
summary (``SET`` of the health key, its ``health`` event, /metrics); nothing here
reads a clock or the network.

Examples
--------
>>> import numpy as np
>>> from tideline.monitoring.counters import Counted
>>> from tideline.tasks import Task
>>> from tideline.monitoring.tracks import Scored, Tracks
>>> tracks = Tracks(Task("binary"), window=100)
>>> _ = tracks.score(Scored("stable", "r1", 3, np.array([0.9, 0.2]), np.array([1.0, 1.0])))
>>> lags = LabelLags()
>>> lags.add(10.0, [11.0, 14.0])
>>> s = health("ns/fraud", 20.0, tracks, {"stable": Counted(requests=4, errors=1)},
...            label_lag=lags.summary())
>>> t = s.tracks["stable"]
>>> t.labelled, t.accuracy, t.error_rate, s.label_lag.p50, s.versions["r1:3"].labelled
(2, 0.5, 0.25, 2.5, 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tideline import health as h
from tideline.monitoring.counters import Counted
from tideline.monitoring.tracks import Tracks, TrackState
from tideline.tasks import Task

# the label lags held (the newest): past LAGS_HELD, the oldest are let go down to LAGS_KEPT
LAGS_HELD, LAGS_KEPT = 1000, 500


class Throughput:
    """Predictions and labels counted, and their rates a second between two health writes.

    >>> t = Throughput(now=0.0)
    >>> t.counts["predictions"] += 50
    >>> t.measure(now=10.0)
    {'predictions': 5.0, 'labels': 0.0}
    >>> t.measure(now=20.0)["predictions"]  # nothing counted since
    0.0
    """

    def __init__(self, now: float) -> None:
        self.counts = {"predictions": 0, "labels": 0}
        self.rates = {"predictions": 0.0, "labels": 0.0}
        self._last_counts = dict(self.counts)
        self._last_at = now

    def measure(self, now: float) -> dict[str, float]:
        """The rates since the last measure (or the start): kept in ``rates``, and returned."""
        dt = max(now - self._last_at, 1e-9)
        self.rates = {k: (self.counts[k] - self._last_counts[k]) / dt for k in self.counts}
        self._last_counts, self._last_at = dict(self.counts), now
        return self.rates


class LabelLags:
    """How long labels took to come after the predictions they are about: the newest lags
    (at most ``LAGS_HELD``), and their median and 95th percentile."""

    def __init__(self) -> None:
        self.lags: list[float] = []

    def add(self, ts: float, arrived: list[float]) -> None:
        """Labels of a prediction made at ``ts``, arrived at ``arrived`` (a lag is never
        negative: a clock behind another's is no label from the future)."""
        self.lags += [max(0.0, t - ts) for t in arrived]
        if len(self.lags) > LAGS_HELD:
            del self.lags[:-LAGS_KEPT]

    def summary(self) -> h.LabelLag | None:
        if not self.lags:
            return None
        lags = np.array(self.lags)
        return h.LabelLag(p50=float(np.median(lags)), p95=float(np.percentile(lags, 95)))


def track_health(task: Task, t: TrackState | None, c: Counted) -> h.TrackHealth:
    """A track's part of the summary: its quality and predictions (None: no answer of it
    read yet) and what the servers counted for it."""
    q = t.quality.report() if t is not None else {}
    return h.TrackHealth(
        revision=t.revision if t else None,
        version=t.version if t else None,
        labelled=t.labelled if t else 0,
        predictions=t.predictions if t else 0,
        window=int(q.get("count", 0)),
        **metrics(q),
        recall=recall(task, q),
        requests=c.requests,
        errors=c.errors,
        refused=c.refused,
        shed=c.shed,
        fallbacks=c.fallbacks,
        counted_over=c.seconds,
        error_rate=c.error_rate,
        p50_latency=c.p50,
        p95_latency=c.p95,
        p99_latency=c.p99,
    )


def health(
    model: str,
    now: float,
    tracks: Tracks,
    servers: Mapping[str, Counted],
    *,
    drift: h.Drift | None = None,
    label_lag: h.LabelLag | None = None,
    maturity: h.Maturity | None = None,
    throughput: Mapping[str, float] | None = None,
    quality: h.Quality | None = None,
    log: h.LogCapacity | None = None,
) -> h.Health:
    """The health summary at ``now``: every track that answered or that the servers counted,
    every version held, and the other parts as they are."""
    return h.Health(
        ts=now,
        model=model,
        tracks={
            name: track_health(tracks.task, tracks.tracks.get(name), servers.get(name) or Counted())
            for name in {*tracks.tracks, *servers}
        },
        versions={
            k: h.VersionHealth(labelled=v.labelled, **metrics(v.quality.report()))
            for k, v in tracks.versions.items()
        },
        drift=drift if drift is not None else h.Drift(),
        label_lag=label_lag,
        maturity=maturity,
        throughput=dict(throughput or {}),
        quality=quality,
        log=log,
    )


def metrics(report: dict[str, Any]) -> dict[str, float]:
    """The quality figures of a :func:`tideline.evaluate.scores` report, without its count and
    the classes' recall (:func:`recall`).

    >>> metrics({"count": 4, "accuracy": 0.75, "recall": [1.0, 0.5]})
    {'accuracy': 0.75}
    """
    return {k: float(v) for k, v in report.items() if k not in ("count", "recall")}


def recall(task: Task, report: dict[str, Any]) -> dict[str, float]:
    """A multiclass report's recall by class name, the classes with rows in its window.

    >>> recall(Task("multiclass", ("cat", "dog", "eel")), {"recall": [1.0, None, 0.25]})
    {'cat': 1.0, 'eel': 0.25}
    """
    got = report.get("recall")
    if task.classes is None or got is None:
        return {}
    return {c: float(r) for c, r in zip(task.classes, got, strict=True) if r is not None}
