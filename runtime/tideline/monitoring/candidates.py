"""The versions the operator may choose between, and the evidence on each.

Which version plays which role - served, lastGood, latest, recent, the canary's
served one, the warm-start baseline, the best constant - as the pointers name
them; their scores on the common labelled window
(:class:`tideline.evidence.CommonWindow`); and the comparisons every automatic
decision reads (the health summary's :class:`tideline.health.Quality`).

Pure: the monitor (:class:`tideline.pods.monitor.Monitor`) reads the routing,
the pointers and the stored versions and hands them in - the pointers as
:class:`tideline.contracts.Routing` and :class:`tideline.contracts.Pointers`,
the versions through a loader it passes, each version's labelled answers as
counts - and this part reads no clock and no network.

**Out of sample.** Each version is loaded with when the newest label it learned
arrived (``learnedUntil``), and the window scores it only on the labels it has
not learned; a canary is judged on its *track* (each sample as the canary
version of that moment answered it, counted if it had not learned it), which
grows across versions; a rollback target on the labels it has not learned with
the served version scored on all of them (``vsServedWhole``).

Examples
--------
>>> from tideline.contracts import Pointers, Routing
>>> from tideline.evidence import Constant
>>> from tideline.tasks import Task
>>> c = Candidates(Task("binary"), min_samples=2)
>>> named = c.name(Routing("r1"), Pointers(latest=2, served=2, lastGood=1), None,
...                warm_started=False, labelled={("r1", 1): 5, ("r1", 2): 1})
>>> named.roles["served"], named.roles["recent"], named.roles["constant"]
(('r1', 2), ('r1', 1), ('constant',))
>>> c.add_samples([{}] * 4, np.array([1.0, 1.0, 0.0, 1.0]))
>>> stored = {("r1", 1): Constant(1.0), ("r1", 2): Constant(0.0)}
>>> c.refresh(named, lambda key: (stored[key], None))
>>> q = c.quality({("r1", 2): 1}, feedback=True)
>>> q.candidates["served"].accuracy, q.candidates["lastGood"].vs_served.difference
(0.25, 0.5)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tideline import health as h
from tideline.contracts import Pointers, Routing
from tideline.evidence import ALPHA, CommonWindow, Constant
from tideline.tasks import Task

Key = tuple[Any, ...]  # a version, (revision, number), or the best constant, CONSTANT
CONSTANT: Key = ("constant",)
# a stored version as the loader hands it in: the model and when the newest label it learned
# arrived (its ``learnedUntil``; None: it learned none of the stream's); None: not stored
Loaded = tuple[Any, float | None] | None
# roles judged by their track (what their versions answered, each sample as it came)
TRACKED = ("served", "canary")


@dataclass(frozen=True)
class Named:
    """The roles as the pointers name them at one read."""

    roles: dict[str, Key] = field(default_factory=dict)  # empty while nothing is served
    pin: tuple[float | None, int] | None = None  # (pinAt or None, the pinned version)
    # the stable revision's versions served on minSamples labels, newest first (recent)
    recent: tuple[Key, ...] = ()


class Candidates:
    """The roles, the window that scores their versions, and the comparisons between them.

    ``name`` turns what the shell read into :class:`Named`; ``moved`` says whether
    that differs from what the window scores; ``refresh`` loads what is new into
    the window; ``quality`` is the summary's evidence. ``countable`` and
    ``written`` keep the count the served version's proof waits for.
    """

    def __init__(self, task: Task, min_samples: int) -> None:
        self.task = task
        self.min_samples = min_samples
        self.window = CommonWindow(task, min(max(4 * min_samples, 2000), 20_000))
        self.named = Named()  # as the last refresh read them
        self.roles: dict[str, Key] = {}  # role -> the version scored for it
        # the pin the evidence follows: (as named, the window's total then, the pinned
        # version's error on the window then)
        self._pin: tuple[tuple[float | None, int], int, float | None] | None = None
        # the served version and its labelled answers, as the last written summary showed them
        self._served_written: tuple[Key | None, int] = (None, 0)

    def add_samples(self, rows: Sequence[Any], y: np.ndarray, t: Any = None) -> None:
        """Labelled rows into the window (``t``: when each label arrived; None: after every
        version learned)."""
        self.window.add_samples(rows, y, t)

    # -- naming ------------------------------------------------------------------------
    def name(
        self,
        routing: Routing,
        pointers: Pointers,
        canary: Pointers | None,
        *,
        warm_started: bool,
        labelled: Mapping[Key, int],
    ) -> Named:
        """The versions the operator may choose between: ``pointers`` are the stable
        revision's (``routing.stable``), ``canary`` the canary revision's (None: no canary),
        ``warm_started`` whether the stable revision's v0 is a warm-start baseline,
        ``labelled`` each version's labelled answers (what ``recent`` needs)."""
        stable = routing.stable
        roles: dict[str, Key] = {}
        for role in Pointers.NAMES:
            v = pointers.get(role)
            if v is not None:
                roles[role] = (stable, v)
        pin = (
            (pointers.pinAt, pointers.served)
            if pointers.pinned and pointers.served is not None
            else None
        )
        counted = sorted(
            (version for (revision, version), n in labelled.items()
             if revision == stable and isinstance(version, int) and n >= self.min_samples),
            reverse=True,
        )  # fmt: skip
        recent = tuple((stable, v) for v in counted)
        if recent:
            roles["recent"] = recent[0]
        if routing.canary and canary is not None and canary.served is not None:
            roles["canary"] = (routing.canary, canary.served)
        if warm_started:
            roles["baseline"] = (stable, 0)
        if "served" not in roles:
            return Named({}, pin, recent)
        roles["constant"] = CONSTANT
        return Named(roles, pin, recent)

    def moved(self, named: Named) -> bool:
        """Whether ``named`` differs from what the window scores (roles or pin)."""
        pin = self._pin[0] if self._pin is not None else None
        return named.roles != self.named.roles or named.pin != pin

    def refresh(self, named: Named, load: Callable[[Key], Loaded]) -> None:
        """The versions ``named`` names into the window, each loaded (``load``) and scored
        once; a ``recent`` version no longer stored gives way to the newest older one that
        is, any other role whose version is not stored is left out."""
        self.named = named
        roles = dict(named.roles)  # (less those that cannot be loaded)
        if not roles:
            self.roles, self._pin = {}, None
            return
        w = self.window
        for role, key in list(roles.items()):
            if key in w:
                continue
            if key == CONSTANT:
                w.add_candidate(key, Constant.best(self.task, w.labels()))
                continue
            loaded = self._add(key, load)
            if not loaded and role == "recent":
                # a version the learner no longer keeps: the newest of the others it does
                for older in named.recent[1:]:
                    if older in w or self._add(older, load):
                        roles[role] = older
                        break
            elif not loaded:
                del roles[role]
        roles = {role: key for role, key in roles.items() if key in w}
        w.keep_only(set(roles.values()))
        self.roles = roles
        self._follow_tracks()
        self._follow_pin()

    def _add(self, key: Key, load: Callable[[Key], Loaded]) -> bool:
        """A stored version into the window (scored on it once); False when it is not stored."""
        loaded = load(key)
        if loaded is None:
            return False
        model, learned_until = loaded
        self.window.add_candidate(key, model, learned_until)
        return True

    def _answers(self, role: str) -> Hashable | None:
        """The track of a role (see :class:`tideline.evidence.CommonWindow`): what the versions
        of the revision that plays it answered, each sample as it came."""
        named = self.named.roles.get(role)
        return ("track", role, named[0]) if named is not None and role in TRACKED else None

    def _follow_tracks(self) -> None:
        tracks: set[Hashable] = set()
        for role in TRACKED:
            track = self._answers(role)
            if track is not None:
                self.window.follow(track, self.roles.get(role))
                tracks.add(track)
        self.window.keep_tracks(tracks)

    def _follow_pin(self) -> None:
        """A rollback's pin, as the pointers name it: from when it is seen, ``latest`` is also
        compared with the pinned version on the labels that come after it alone, and the
        pinned version's error on them is set against its error on the window then (the
        operator's unpin reads both: :func:`tideline_operator.rollout._recovered`)."""
        named, served = self.named.pin, self.roles.get("served")
        if named is None:
            self._pin = None
        elif self._pin is None or self._pin[0] != named:
            self._pin = None
            if served is not None and served[1] == named[1]:
                w = self.window
                before = error_of(self.task, w.score(served)) if w.count else None
                self._pin = (named, w.total, before)
        self.window.keep_since({self._pin[1]} if self._pin is not None else set())

    # -- the served version's proof ----------------------------------------------------
    def countable(self, labelled: Mapping[Key, int]) -> bool:
        """Whether the served version has reached ``min_samples`` labels of its own answers
        since the last written summary showed it with fewer: the count its proof waits for.

        A version is proven (made ``lastGood``) only on a summary that shows it served on
        ``minSamples`` labels while it is still the served one. Written only once an
        interval, a learner publishing every 2 s had no version proven in the 20 s after a
        concept drift: ``lastGood`` stayed a version of the old world, and a poisoning was
        rolled back only once it fell below that (3.3 s, and to a version worse than the
        poisoned one; issue 30).
        """
        key, written = self._served_written
        n = labelled.get(key) if key is not None and len(key) == 2 else None
        return n is not None and n >= self.min_samples > written

    def written(self, labelled: Mapping[Key, int]) -> None:
        """A summary was written: the served version's labelled answers it showed."""
        served = self.roles.get("served")
        self._served_written = (served, labelled.get(served, 0) if served is not None else 0)

    # -- the evidence --------------------------------------------------------------------
    def quality(self, labelled: Mapping[Key, int], *, feedback: bool) -> h.Quality | None:
        """Every role's scores on the window and its comparisons (None while nothing is
        served); ``feedback``: the window holds the labels of served predictions (else the
        labelled samples of a model that gets none)."""
        roles = self.roles
        if "served" not in roles:
            return None
        w = self.window
        served = roles["served"]
        out: dict[str, h.Candidate] = {}
        for role, key in roles.items():
            rep = w.score(key)
            c = h.Candidate(
                revision=key[0] if len(key) == 2 else None,
                version=key[1] if len(key) == 2 else None,
                samples=int(rep.get("count", 0)),
                accuracy=rep.get("accuracy"),
                logloss=rep.get("logloss"),
                rmse=rep.get("rmse"),
                served_labelled=labelled.get(key, 0) if len(key) == 2 else 0,
            )
            if key != served and w.count:
                c.vs_served = self._comparison(*self._judged(role, key, served))
            if role in ("lastGood", "baseline") and key != served and w.count:
                c.vs_served_whole = self._comparison(key, served, whole=True)
            if role == "recent" and w.count:
                for other in ("lastGood", "constant"):
                    against = roles.get(other)
                    if against is not None and against != key:
                        c.versus[other] = self._comparison(key, against)
            if role == "latest" and self._pin is not None and key != served:
                c.since_pin = self._comparison(key, served, since=self._pin[1])
            out[role] = c
        return h.Quality(
            window=w.count,
            source="feedback" if feedback else "samples",
            alpha=ALPHA,
            candidates=out,
            pin=self._pin_evidence(served),
        )

    def _judged(self, role: str, key: Key, served: Key) -> tuple[Hashable, Hashable]:
        """What a role's ``vs_served`` compares: the version with the served one, a canary's
        track with the served track (its versions come and go faster than their labels)."""
        canary, stable = self._answers("canary"), self._answers("served")
        if role == "canary" and canary in self.window and stable in self.window:
            return canary, stable
        return key, served

    def _comparison(
        self, key: Hashable, reference: Hashable, since: int = 0, whole: bool = False
    ) -> h.Comparison:
        w = self.window
        pair = w.compare(key, reference, since, whole)
        diff, lo, hi = w.relative(pair)
        return h.Comparison(samples=pair.n, difference=diff, lower=lo, upper=hi)

    def _pin_evidence(self, served: Key) -> h.PinEvidence | None:
        """The pinned version's error before the pin and on the labels that came since."""
        if self._pin is None or served[1] != self._pin[0][1]:
            return None
        (at, version), since, before = self._pin
        w = self.window
        k = min(w.total - since, w.count)
        return h.PinEvidence(
            at=at,
            version=version,
            samples=k,
            error_before=before,
            error_since=error_of(self.task, w.score(served, last=k)) if k else None,
        )


def error_of(task: Task, report: dict[str, Any]) -> float | None:
    """A :func:`tideline.evaluate.scores` report's error: 1 - accuracy (binary, multiclass),
    the mean log loss (``metric: logloss``), or the mean squared error (regression)."""
    if task.metric == "logloss":
        logloss = report.get("logloss")
        return None if logloss is None else float(logloss)
    if task.classifies:
        accuracy = report.get("accuracy")
        return None if accuracy is None else 1.0 - float(accuracy)
    rmse = report.get("rmse")
    return None if rmse is None else float(rmse) ** 2
