"""The monitor's quality of each track and version: what they answered, and how well.

A track (stable, canary, shadow) is counted for the predictions it made, and scored
on the labels of those predictions over a rolling window; so is each version that
answered (``"revision:version"``, the oldest forgotten past ``max_versions``). A
joined label is read here (:func:`labelled`): the labels that are the task's
targets, the scores their rows were given, and which track and version answered
each - a request split between tracks is scored a track at a time, a shadow's
answers to the same rows as the shadow's.

Pure: the monitor (:class:`tideline.pods.monitor.Monitor`) reads the log and the
labels and hands in the logged request (:class:`tideline.predlog.Entry`); it feeds
the stable track's errors to concept drift and counts the bad entries this part
returns. Nothing here reads a clock or the network.

Examples
--------
>>> from tideline import predlog
>>> from tideline.tasks import Task
>>> meta = predlog.Meta(tracks=["stable", "canary"], models={"stable": ("r1", 3),
...                     "canary": ("r2", 1)})
>>> e = predlog.decode(predlog.encode([meta], [b"[0.9, 0.2]"], [b'{"instances": [{}, {}]}']))
>>> t = Tracks(Task("binary"), window=100)
>>> t.answered(e.request(0), 2)
>>> got = labelled(Task("binary"), e.request(0), rows=[0, 1], labels=[1, 1], received=[5.0, 6.0])
>>> [(s.track, s.revision, s.version, s.y.tolist()) for s in got.scored]
[('canary', 'r2', 1, [1.0]), ('stable', 'r1', 3, [1.0])]
>>> for s in got.scored:
...     _ = t.score(s)
>>> t.tracks["canary"].quality.report()["accuracy"], t.labelled()
(0.0, {('r2', 1): 1, ('r1', 3): 1})
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tideline.evaluate import RollingMetrics
from tideline.predlog import Entry
from tideline.tasks import Task

# The versions whose own quality is held (the oldest forgotten): 64, fewer for a multiclass
# model whose rolling windows hold a probability per class per row - 64 windows of 2,000
# rows of 1,000 classes are 1 GB, the monitor's memory limit; at most VERSION_NUMBERS
# numbers (128 MiB) in all, and never fewer than MIN_VERSIONS versions.
MAX_VERSIONS, MIN_VERSIONS, VERSION_NUMBERS = 64, 8, 1 << 24


@dataclass
class TrackState:
    """Quality of one track (stable, canary, shadow) over a rolling window."""

    task: Task
    window: int
    quality: RollingMetrics = field(init=False)
    labelled: int = 0
    predictions: int = 0
    revision: str | None = None
    version: int | None = None

    def __post_init__(self) -> None:
        self.quality = RollingMetrics(self.task.name, self.window, self.task.n_classes)


@dataclass(frozen=True)
class Scored:
    """Labelled answers of one track of a request: who answered, their scores (as the task
    reads them) and targets, and when each label arrived (None: a shadow's, which concept
    drift does not read)."""

    track: str
    revision: Any
    version: Any
    p: np.ndarray
    y: np.ndarray
    received: list[float] | None = None


@dataclass(frozen=True)
class Labelled:
    """What the labels of one logged request tell: the labelled rows' features, targets and
    arrivals (the evidence's), the answers to score a track at a time, and how many bad
    entries were left out (a label that is not a target, scores that are not the task's)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    y: np.ndarray = field(default_factory=lambda: np.empty(0))
    arrived: list[float] = field(default_factory=list)
    scored: list[Scored] = field(default_factory=list)
    bad: int = 0


def targets(task: Task, labels: list[Any]) -> tuple[list[int], list[float]]:
    """The labels that are targets of the task (:meth:`Task.target`: a multiclass label is a
    class name or index), by their place, and their targets. One that is not is left out
    (the caller counts it as a bad entry; the learner dead-letters it with the reason).

    >>> targets(Task("multiclass", ("cat", "dog")), ["dog", "eel", 0])
    ([0, 2], [1.0, 0.0])
    """
    places, got = [], []
    for n, label in enumerate(labels):
        try:
            got.append(task.target(label))
        except (TypeError, ValueError):
            continue
        places.append(n)
    return places, got


def logged(task: Task, values: Sequence[Any]) -> np.ndarray:
    """Logged scores as the task reads them (:meth:`Task.checked`: ``(n,)``, or ``(n, k)``
    for multiclass, finite); ``ValueError`` when they are not (a null score)."""
    return task.checked(values, len(values), probabilities=False)


def labelled(
    task: Task, e: Entry, rows: list[int], labels: list[Any], received: list[float]
) -> Labelled:
    """Labels of a logged request's ``rows`` (arrived at ``received``): the answers each
    track and its shadow gave them, a track at a time (in the order of the tracks' names,
    the shadow last). Nothing of a request whose rows or scores cannot be read; a shadow's
    answers that cannot be are left out alone (one bad entry each)."""
    labelled_at, ys = targets(task, labels)
    bad = len(labels) - len(labelled_at)
    if not labelled_at:
        return Labelled(bad=bad)
    whole = len(labelled_at) == len(rows)
    at_rows = rows if whole else [rows[n] for n in labelled_at]
    arrived = received if whole else [received[n] for n in labelled_at]
    try:
        y = np.array(ys, dtype=np.float64)
        scores = e.scores
        p = logged(task, [scores[i] for i in at_rows])
        features = e.pick(at_rows)
    except (TypeError, ValueError, IndexError):
        return Labelled(bad=bad + 1)
    scored = []
    tracks = [e.track(i) for i in at_rows] if e.meta.tracks is not None else None
    for track in sorted(set(tracks)) if tracks is not None else [e.meta.track]:
        at = slice(None) if tracks is None else [t == track for t in tracks]
        revision, version = e.model(track)
        came = (
            arrived
            if tracks is None
            else [r for r, t in zip(arrived, tracks, strict=True) if t == track]
        )
        scored.append(Scored(track, revision, version, p[at], y[at], came))
    shadow = e.meta.shadow
    if shadow is not None:  # a shadow answered the same rows
        pick = [n for n, i in enumerate(at_rows) if i < len(shadow[2])]
        try:
            p_shadow = logged(task, [shadow[2][at_rows[n]] for n in pick])
        except (TypeError, ValueError):
            bad += 1
        else:
            if pick:
                scored.append(Scored("shadow", shadow[0], shadow[1], p_shadow, y[pick]))
    return Labelled(features, y, arrived, scored, bad)


class Tracks:
    """Each track's and each version's predictions counted and labelled answers scored.

    ``answered`` counts a logged request's predictions by track (and names the
    version each track served); ``score`` scores labelled answers on their track and
    version; ``labelled`` is each version's labelled count (what the candidates'
    ``recent`` and proof read).
    """

    def __init__(self, task: Task, window: int) -> None:
        self.task = task
        self.window = window
        self.tracks: dict[str, TrackState] = {}
        self.versions: dict[str, TrackState] = {}  # "revision:version" -> quality
        width = window * max(task.n_classes, 1)  # numbers a version's window holds
        self.max_versions = max(MIN_VERSIONS, min(MAX_VERSIONS, VERSION_NUMBERS // width))

    def track(self, name: str) -> TrackState:
        t = self.tracks.get(name)
        if t is None:
            t = self.tracks[name] = TrackState(self.task, self.window)
        return t

    def version(self, revision: str | None, version: int | None) -> TrackState | None:
        if revision is None or version is None:
            return None
        key = f"{revision}:{version}"
        v = self.versions.get(key)
        if v is None:
            if len(self.versions) >= self.max_versions:  # bounded: forget the oldest
                self.versions.pop(next(iter(self.versions)))
            v = self.versions[key] = TrackState(
                self.task, self.window, revision=revision, version=version
            )
        return v

    def answered(self, e: Entry, n: int) -> None:
        """A logged request of ``n`` predictions: counted on the tracks that answered it (and
        its shadow), each naming the version it served."""
        tracks = e.meta.tracks or None  # (None: one track answered every row)
        for track in sorted(set(tracks)) if tracks is not None else (e.meta.track,):
            t = self.track(track)
            t.predictions += n if tracks is None else tracks.count(track)
            t.revision, t.version = e.model(track)
        if e.meta.shadow is not None:
            t = self.track("shadow")
            t.predictions += n
            t.revision, t.version = e.meta.shadow[0], e.meta.shadow[1]

    def score(self, s: Scored) -> TrackState:
        """Labelled answers on their track's window and their version's; the track."""
        t = self.track(s.track)
        t.quality.update(s.p, s.y)
        t.labelled += len(s.y)
        v = self.version(s.revision, s.version)
        if v is not None:
            v.quality.update(s.p, s.y)
            v.labelled += len(s.y)
        return t

    def labelled(self) -> dict[tuple[Any, ...], int]:
        """Each version's labelled answers, by (revision, version)."""
        return {(v.revision, v.version): v.labelled for v in self.versions.values()}
