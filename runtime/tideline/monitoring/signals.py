"""The monitor's drift signals: feature, prediction and concept drift as events with hysteresis.

One ``driftlog`` event when a signal goes over its threshold, one when it clears
(feature and prediction scores below ``CLEAR_BELOW`` of the threshold; concept
drift ``CONCEPT_HOLD`` analysis intervals after it last fired). Concept drift is
the error rate going *up* (ADWIN told the direction, Page-Hinkley one-sided): a
model that is learning is no change of the world. Its errors reach the detector
in the order of the predictions they judge, not of the labels' arrival
(:class:`tideline.drift.EventOrder`; those of one prediction time in a random
order). Feature drift is the traffic's (a detector
per stable revision, its reference the revision's stored one or its first
window); prediction drift starts again with each served version (its reference
its own first window of scores; a multiclass model's, its predicted classes).

Pure: the monitor (:class:`tideline.pods.monitor.Monitor`) hands in what it read
and the time, and writes the events this part returns (the ``driftlog`` stream,
the ``tideline_monitor_drift_events`` counter) and the reference it asks to
store; nothing here reads a clock or the network.

Examples
--------
>>> from tideline.spec import DriftSpec
>>> from tideline.tasks import Task
>>> s = DriftSignals(Task("binary"), DriftSpec(), interval=10.0, features=["amount"])
>>> s.watch("r1")
True
>>> rng = np.random.default_rng(0)
>>> s.features(rng.normal(size=(5000, 1)), now=1.0)  # the first window: the reference
[]
>>> [(e.kind, e.fields["state"], e.counted) for e in s.features(rng.normal(3, 1, (5000, 1)), 2.0)]
[('features', 'detected', True)]
>>> s.summary().features.detected
['amount']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from tideline import health as h
from tideline.drift import (
    ADWIN,
    KS,
    PSI,
    Categorical,
    CategoricalPSI,
    EventOrder,
    PageHinkley,
    TotalVariation,
)
from tideline.spec import DriftSpec
from tideline.tasks import Task

CLEAR_BELOW = 0.8  # a drift score clears below this share of its threshold
CONCEPT_HOLD = 10  # analysis intervals after its last firing that concept drift stays on
# a multiclass model's prediction-drift window holds at least this many predictions a class
CLASS_WINDOW = 50
CONCEPT_MIN_RISE = 0.05  # the error rate must rise this much (and surely) to be concept drift
CONCEPT_EVENTS = 20  # the concept events the summary keeps (the newest)

Model = tuple[Any, Any]  # (revision, version) of what answered


@dataclass(frozen=True)
class DriftEvent:
    """One ``driftlog`` entry: its ``kind`` (features, predictions, concept) and fields, and
    whether it counts in ``tideline_monitor_drift_events`` (a detection does, a clearing not)."""

    kind: str
    fields: dict[str, Any]
    counted: bool = True


class DriftSignals:
    """The three drift detectors of a model, their edges, and the drift part of its health."""

    def __init__(self, task: Task, spec: DriftSpec, interval: float, features: list[str]) -> None:
        self.task = task
        self.spec = spec
        self.interval = interval  # the analysis interval: concept drift's hold counts in them
        self.feature_names = features
        self.revision: str | None = None  # the stable revision watched (its drift reference)
        self.scores_of: Model | None = None  # the served version whose scores prediction reads
        self._drifting = {"features": False, "predictions": False, "concept": False}
        self._concept_fired_at = -math.inf
        self.concept_events: list[h.ConceptEvent] = []
        # labels come late and out of order: their errors reach the detector in prediction order
        # (tagged with their model and time: see release)
        self._order = EventOrder()
        self._ties = np.random.default_rng(0)  # (the order within one prediction time)
        self._new: list[tuple[float, float, float, Model]] = []  # (came, ts, error, model)
        self._new_feature_detector()
        self._new_version_detectors()
        self._new_concept_detector()

    def _new_feature_detector(self) -> None:
        """Feature drift is the traffic's, not a version's: one detector per stable revision."""
        d = self.spec.features
        cls = PSI if d.method == "psi" else KS
        self.feature = cls(max(len(self.feature_names), 1), d.window, d.threshold)
        self._reference_stored = False

    def _new_version_detectors(self) -> None:
        """Prediction drift starts again with each served version: its reference is its own
        scores (multiclass: its predicted classes, a bin each)."""
        d = self.spec.predictions
        self.prediction: PSI | KS | Categorical
        if self.task.multiclass:
            ccls = CategoricalPSI if d.method == "psi" else TotalVariation
            k = self.task.n_classes
            # at least CLASS_WINDOW predictions a class: sampling noise alone, on a window of
            # 5,000 over 1,000 classes, reads a PSI near 0.4 (see Categorical)
            window = max(d.window, CLASS_WINDOW * k)
            self.prediction = ccls(k, window, d.threshold)
        else:
            pcls = PSI if d.method == "psi" else KS
            self.prediction = pcls(1, d.window, d.threshold)

    def _new_concept_detector(self) -> None:
        """Concept drift watches the stable revision's error across its versions, for rises only."""
        d = self.spec.concept
        if d.method == "adwin":
            # a rise of 5 points of error or more: smaller ones (a version a point worse
            # than the last) are adapted to silently, not called a change of the world
            self.concept: ADWIN | PageHinkley = ADWIN(
                delta=d.delta, direction="up", min_change=CONCEPT_MIN_RISE
            )
        else:
            self.concept = PageHinkley()  # one-sided: it tests for an increase of the mean

    # -- what is watched -----------------------------------------------------------------
    def serve(self, model: Model) -> None:
        """Prediction drift follows the served version: a new one starts its own reference."""
        if model != self.scores_of:
            if self.scores_of is not None:
                self._new_version_detectors()
            self.scores_of = model

    def watch(self, revision: str) -> bool:
        """The stable revision is ``revision``: True when it is a new one, whose feature drift
        starts again (with its stored reference, :meth:`set_reference`, if it has one) and
        whose concept drift starts its own error history."""
        if revision == self.revision:
            return False
        if self.revision is not None:
            self._new_concept_detector()  # a new stable revision: its own error history
        self.revision = revision
        self._new_feature_detector()
        return True

    def set_reference(self, features: np.ndarray) -> None:
        """The watched revision's stored feature reference (a baseline's, or its first window)."""
        self.feature.set_reference(features)
        self._reference_stored = True

    def reference_to_store(self) -> tuple[str, np.ndarray] | None:
        """The watched revision and its feature reference, once, when it was made here from
        its first window (for the revisions that warm-start from it); else None."""
        ref = self.feature.reference
        if ref is None or self._reference_stored or not self.revision:
            return None
        self._reference_stored = True
        return self.revision, ref

    # -- feature and prediction drift ----------------------------------------------------
    def features(self, X: np.ndarray, now: float) -> list[DriftEvent]:
        """Rows of the stable traffic's numeric features (a column each) to feature drift."""
        self.feature.update_many(X)
        return self._edge("features", self.feature, self.feature_names, now)

    def predictions(self, values: np.ndarray, now: float) -> list[DriftEvent]:
        """The served version's scores (multiclass: its predicted classes) to prediction drift;
        a multiclass model's event names the classes whose share of the answers moved most,
        with their shares before and now."""
        d = self.prediction
        d.update_many(values.reshape(-1, 1))
        if not isinstance(d, Categorical):
            return self._edge("predictions", d, ["score"], now)
        classes = self.task.classes or ()

        def moved() -> dict[str, Any]:
            shares = d.moved(top=3)
            return {"classes": {classes[c]: {"reference": round(before, 4), "now": round(now, 4)}
                                for c, (before, now) in shares.items()}}  # fmt: skip

        return self._edge("predictions", d, ["score"], now, moved)

    def _edge(
        self, kind: str, detector: PSI | KS | Categorical, names: list[str], now: float,
        detail: Callable[[], dict[str, Any]] | None = None,
    ) -> list[DriftEvent]:  # fmt: skip
        """One event when a score goes over its threshold (with ``detail()`` in it), one when
        all are back below ``CLEAR_BELOW`` of it."""
        scores = detector.scores
        on = self._drifting[kind]
        if not on and detector.reference is not None and bool((scores > detector.threshold).any()):
            self._drifting[kind] = True
            top = {
                n: float(x) for n, x in zip(names, scores, strict=False) if x > detector.threshold
            }
            event = {"state": "detected", "ts": now, "scores": top}
            return [DriftEvent(kind, event | (detail() if detail is not None else {}))]
        if on and bool((scores < CLEAR_BELOW * detector.threshold).all()):
            self._drifting[kind] = False
            return [DriftEvent(kind, {"state": "cleared", "ts": now}, counted=False)]
        return []

    # -- concept drift -------------------------------------------------------------------
    def errors(
        self, p: np.ndarray, y: np.ndarray, ts: float, model: Model,
        received: Sequence[float] | None, labels: Callable[[], np.ndarray],
    ) -> None:  # fmt: skip
        """The stable track's errors on labelled predictions made at ``ts`` by ``model``: those
        of labels that arrived at ``received`` wait for :meth:`release` (to be ordered as they
        came), those of labelled samples (None) go to the ordering at once. A classifier's
        error is a wrong top class; a regression's, :func:`regression_errors` on the stable
        track's ``labels()``."""
        err = self.task.wrong(p, y) if self.task.classifies else regression_errors(p, y, labels())
        if received is None:
            self._order.add(ts, err, (model, ts))
        else:
            self._new += [(r, ts, e, model) for r, e in zip(received, err.tolist(), strict=True)]

    def release(self, now: float) -> list[DriftEvent]:
        """The errors handed in since, to the ordering in the order their labels came (how far
        out of order labels come is measured on their arrival, as it happens), and those the
        watermark released to the concept detector in prediction order (those of one
        prediction time in a random order, not their labels'). Errors of another
        stable revision than the one watched are left out (its late labels after a promotion
        say nothing of the new one)."""
        new, self._new = self._new, []
        new.sort(key=lambda item: item[0])  # (stable: labels of one instant keep their order)
        add = self._order.add
        for _, ts, e, model in new:
            add(ts, (e,), (model, ts))
        err, tags = self._order.release()
        if not len(err):
            return []
        # The predictions of one time (a log entry's requests) have no order, but their labels
        # came in one: with labelDefault every click of an entry before all of its defaults.
        # A run of 40 clicks (no errors, for a model answering "click") read as the error
        # falling to 0; ADWIN cut its window to that run, and the usual error after it read
        # as a rise: concept drift in stationary clicks-only runs (bench/guardrails.py
        # --clicks-only, 2 seeds in 10). Within one time they go in an order of their own.
        at = np.array([ts for _, ts in tags])
        order = np.lexsort((self._ties.random(len(at)), at))
        err, models = err[order], [tags[i][0] for i in order.tolist()]
        watched = self.revision
        if watched is not None:
            mine = np.array([m[0] in (None, watched) for m in models])
            if not mine.all():
                err, models = err[mine], [m for m, k in zip(models, mine, strict=True) if k]
        events = []
        for i in self.concept.update_many(err).tolist():
            events += self._concept_fired(models[i], now)
        return events

    def _concept_fired(self, model: Model, now: float) -> list[DriftEvent]:
        self._concept_fired_at = now
        if self._drifting["concept"]:
            return []  # still the same episode: one event per episode
        self._drifting["concept"] = True
        revision, version = model
        event = h.ConceptEvent(
            ts=now,
            method=self.spec.concept.method,
            revision=str(revision) if revision is not None else None,
            version=int(version) if isinstance(version, int) else None,
        )
        self.concept_events = [*self.concept_events[-(CONCEPT_EVENTS - 1) :], event]
        return [DriftEvent("concept", {"state": "detected", **msgspec.to_builtins(event)})]

    def concept_edge(self, now: float) -> list[DriftEvent]:
        """Concept drift clears ``CONCEPT_HOLD`` analysis intervals after it last fired."""
        hold = CONCEPT_HOLD * self.interval
        if self._drifting["concept"] and now - self._concept_fired_at > hold:
            self._drifting["concept"] = False
            return [DriftEvent("concept", {"state": "cleared", "ts": now}, counted=False)]
        return []

    # -- the summary ---------------------------------------------------------------------
    def summary(self) -> h.Drift:
        """The drift part of the health summary."""
        d = self.spec
        feature_scores = dict(zip(self.feature_names, self.feature.scores.tolist(), strict=False))
        return h.Drift(
            features=h.FeatureDrift(
                method=d.features.method,
                scores=feature_scores,
                detected=sorted(n for n, x in feature_scores.items() if x > d.features.threshold)
                if self._drifting["features"]
                else [],
            ),
            predictions=h.PredictionDrift(
                method=d.predictions.method,
                score=float(self.prediction.scores[0]),
                detected=self._drifting["predictions"],
            ),
            concept=h.ConceptDrift(
                method=d.concept.method,
                detected=self._drifting["concept"],
                last=self.concept_events[-1] if self.concept_events else None,
                count=len(self.concept_events),
                late=self._order.late,
            ),
        )


def regression_errors(p: np.ndarray, y: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A regression error "counts" when it is larger than the labels' own spread.

    The spread of the labels does not depend on the model, so a model that
    is learning only makes such errors rarer; a scale taken from the
    model's own recent errors would shrink as it learns and turn its
    progress into a rising rate (a false "concept drift"). Fewer than 30
    labels have no spread yet: no error counts.

    >>> regression_errors(np.array([0.0, 10.0]), np.array([0.0, 0.0]), np.arange(30.0)).tolist()
    [0.0, 1.0]
    """
    scale = float(np.std(labels)) if len(labels) >= 30 else 0.0
    if scale <= 0.0:
        return np.zeros(len(y))
    return (np.abs(p - y) > scale).astype(float)
