"""The monitor's drift part without Redis (:class:`tideline.monitoring.signals.DriftSignals`): the
detectors it keeps for what, the events with hysteresis it returns, concept drift in the order
of the predictions, and the drift part of the summary - with real models' answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tideline.algorithms import make_learner
from tideline.drift import ADWIN, KS, PSI, PageHinkley
from tideline.monitoring.signals import CONCEPT_HOLD, DriftEvent, DriftSignals
from tideline.spec import ConceptDriftSpec, DistributionDrift, DriftSpec
from tideline.tasks import Task

FEATURES = [{"name": "amount"}, {"name": "hour"}]
INTERVAL = 2.0


def _signals(task: Task | None = None, **spec: Any) -> DriftSignals:
    return DriftSignals(task or Task("binary"), DriftSpec(**spec), INTERVAL, ["amount", "hour"])


def _states(events: list[DriftEvent]) -> list[tuple[str, str, bool]]:
    return [(e.kind, e.fields["state"], e.counted) for e in events]


def _world(
    n: int, seed: int, shift: float = 0.0, flipped: bool = False, flip: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Features (amount, hour) and labels: the label says amount > 0, or the opposite
    (``flipped``), or the opposite for a share ``flip`` of the rows."""
    rng = np.random.default_rng(seed)
    X = rng.normal(shift, 1.0, size=(n, 2))
    y = (X[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(float)
    turned = rng.random(n) < (1.0 if flipped else flip)
    return X, np.where(turned, 1.0 - y, y)


def _trained(task: str = "binary") -> Any:
    m = make_learner({"task": task, "algorithm": "sgd", "features": FEATURES})
    X, y = _world(3000, seed=0)
    m.learn_many(X, y)
    return m


# -- hysteresis ----------------------------------------------------------------------------------


class Scored:
    """A detector whose scores are set (the edge reads only ``scores``, ``threshold`` and
    ``reference``): the hysteresis band is hard to hit exactly with sampled data."""

    threshold = 0.2

    def __init__(self, scores: list[float]) -> None:
        self._next = iter(scores)
        self.scores = np.zeros(2)
        self.reference: np.ndarray | None = np.zeros((1, 2))

    def update_many(self, X: np.ndarray) -> None:
        self.scores = np.array([next(self._next), 0.0])


@pytest.mark.parametrize(
    ("scores", "states"),
    [
        ([0.1, 0.25, 0.3], [None, "detected", None]),
        ([0.25, 0.19, 0.17, 0.15, 0.21], ["detected", None, None, "cleared", "detected"]),
        ([0.25, 0.161, 0.159], ["detected", None, "cleared"]),
    ],
    ids=[
        "over the threshold is one event, however long it stays over",
        "it clears below 80 % of the threshold, not just below it, and fires again after",
        "just above 80 % it is still on, just below it clears",
    ],
)
def test_a_drift_score_is_one_event_over_its_threshold_and_one_when_it_clears(
    scores, states
) -> None:
    s = _signals()
    s.feature = Scored(scores)  # type: ignore[assignment]
    got = [s.features(np.zeros((1, 2)), now=float(i)) for i in range(len(scores))]
    assert [e[0].fields["state"] if e else None for e in got] == states
    fired = [e[0] for e in got if e]
    assert [e.counted for e in fired] == [e.fields["state"] == "detected" for e in fired]
    assert fired[0].fields["scores"] == {"amount": scores[states.index("detected")]}


def test_no_reference_yet_is_no_drift_however_high_the_score() -> None:
    s = _signals()
    detector = Scored([5.0])
    detector.reference = None
    s.feature = detector  # type: ignore[assignment]
    assert s.features(np.zeros((1, 2)), now=1.0) == []


# -- feature drift -------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "cls"), [("psi", PSI), ("ks", KS)], ids=["psi", "ks"])
def test_shifted_traffic_names_the_feature_that_moved_and_the_summary_says_so(method, cls) -> None:
    s = _signals(features=DistributionDrift(method=method, window=2000))
    assert isinstance(s.feature, cls)
    s.watch("r1")
    X, _ = _world(2000, seed=1)
    assert s.features(X, now=1.0) == [], "the first window is the reference"
    moved = X.copy()
    moved[:, 1] += 3.0  # hour moves, amount does not
    events = s.features(moved, now=2.0)
    assert _states(events) == [("features", "detected", True)]
    assert list(events[0].fields["scores"]) == ["hour"] and events[0].fields["ts"] == 2.0
    summary = s.summary().features
    assert summary.method == method and summary.detected == ["hour"]
    assert summary.scores["amount"] < 0.2 < summary.scores["hour"]


def test_a_revision_s_first_window_is_stored_once_and_a_stored_reference_is_not_again() -> None:
    s = _signals()
    assert s.watch("r1") and not s.watch("r1"), "a new revision once"
    X, _ = _world(5000, seed=2)
    assert s.reference_to_store() is None, "no window yet"
    s.features(X, now=1.0)
    revision, ref = s.reference_to_store()  # type: ignore[misc]
    assert revision == "r1" and ref.shape[1] == 2
    assert s.reference_to_store() is None, "stored once"
    assert s.watch("r2") and s.feature.reference is None, "a new revision: a new detector"
    s.set_reference(ref)  # its stored one (a warm start): drift shows from the first rows
    shifted, _ = _world(5000, seed=3, shift=2.0)
    assert _states(s.features(shifted, now=2.0)) == [("features", "detected", True)]
    assert s.reference_to_store() is None, "a stored reference is not stored again"


# -- prediction drift ----------------------------------------------------------------------------


def test_prediction_drift_reads_the_served_version_s_scores_and_starts_again_with_each() -> None:
    s = _signals(predictions=DistributionDrift(window=2000))
    model = _trained()
    s.serve(("r1", 1))
    X, _ = _world(2000, seed=4)
    assert s.predictions(model.predict_many(X), now=1.0) == []
    same = s.prediction
    s.serve(("r1", 1))
    assert s.prediction is same, "the same version keeps its reference"
    shifted, _ = _world(2000, seed=5, shift=1.5)  # the answers move with amount
    events = s.predictions(model.predict_many(shifted), now=2.0)
    assert _states(events) == [("predictions", "detected", True)]
    assert s.summary().predictions.detected is True
    s.serve(("r1", 2))
    assert s.prediction is not same and s.prediction.reference is None
    assert s.scores_of == ("r1", 2)


def test_a_multiclass_prediction_event_names_the_classes_whose_share_moved() -> None:
    task = Task("multiclass", ("cat", "dog", "eel"))
    s = _signals(task, predictions=DistributionDrift(window=1000))
    rng = np.random.default_rng(6)
    s.predictions(rng.integers(0, 3, 1000).astype(float), now=1.0)  # even shares
    events = s.predictions(np.zeros(1000), now=2.0)  # every answer cat
    assert _states(events) == [("predictions", "detected", True)]
    moved = events[0].fields["classes"]
    assert moved["cat"]["now"] == 1.0 and 0.25 < moved["cat"]["reference"] < 0.42
    assert set(moved) == {"cat", "dog", "eel"}


@pytest.mark.parametrize(
    ("classes", "window"),
    [(3, 1000), (30, 1500)],
    ids=["few classes: the window asked for", "many: at least 50 predictions a class"],
)
def test_a_multiclass_prediction_window_holds_enough_predictions_a_class(classes, window) -> None:
    task = Task("multiclass", tuple(f"c{i}" for i in range(classes)))
    assert _signals(task, predictions=DistributionDrift(window=1000)).prediction.window == window


# -- concept drift -------------------------------------------------------------------------------


def _labelled(s: DriftSignals, model: Any, X: np.ndarray, y: np.ndarray, start: float,
              version: Any = ("r1", 1), received: bool = True) -> list[DriftEvent]:  # fmt: skip
    """The model's answers to X, labelled y, predicted a request of 100 rows a second from
    ``start``, their labels arriving in that order; the events of each read (every second)."""
    events = []
    p = model.predict_many(X)
    for k, i in enumerate(range(0, len(y), 100)):
        ts = start + k
        at = [ts + 0.5] * len(y[i : i + 100]) if received else None
        s.errors(p[i : i + 100], y[i : i + 100], ts, version, at, lambda: y[:0])
        events += s.release(now=ts + 0.5)
    return events


@pytest.mark.parametrize(
    ("concept", "flipped", "detected"),
    [
        (ConceptDriftSpec(), True, True),
        (ConceptDriftSpec(), False, False),
        (ConceptDriftSpec(method="page-hinkley"), True, True),
        (ConceptDriftSpec(method="page-hinkley"), False, False),
    ],
    ids=[
        "adwin: the world's labels flip under the model: one concept event",
        "adwin: the same world: none",
        "page-hinkley: the labels flip: one concept event",
        "page-hinkley: the same world: none",
    ],
)
def test_concept_drift_is_the_model_s_error_rising(concept, flipped, detected) -> None:
    s = _signals(concept=concept)
    assert isinstance(s.concept, ADWIN if concept.method == "adwin" else PageHinkley)
    s.watch("r1")
    model = _trained()
    X, y = _world(3000, seed=7)
    later, y_later = _world(3000, seed=8, flipped=flipped)
    events = _labelled(s, model, X, y, 0.0) + _labelled(s, model, later, y_later, 30.0)
    assert _states(events) == ([("concept", "detected", True)] if detected else [])
    summary = s.summary().concept
    assert summary.detected is detected and summary.count == int(detected)
    if detected:
        assert (summary.last.revision, summary.last.version) == ("r1", 1)  # type: ignore[union-attr]


def test_a_model_whose_error_falls_is_no_concept_drift() -> None:
    s = _signals()
    s.watch("r1")
    model = _trained()
    X, y = _world(3000, seed=9, flipped=True)  # a bad start ...
    later, y_later = _world(3000, seed=10)  # ... then it is right
    assert _labelled(s, model, X, y, 0.0) + _labelled(s, model, later, y_later, 30.0) == []


def test_late_labels_of_an_older_worse_version_are_no_rise_of_the_error() -> None:
    """v1 answered badly, then v2 well; v1's labels come after v2's: in the order of their
    arrival the error rises, in the order of the predictions it falls."""
    s = _signals()
    s.watch("r1")
    model = _trained()
    bad, y_bad = _world(3000, seed=11, flipped=True)
    good, y_good = _world(3000, seed=12)
    p_bad, p_good = model.predict_many(bad), model.predict_many(good)
    events = []
    for k, i in enumerate(range(0, 3000, 100)):  # v2's requests at 30..59 s, labelled at once
        s.errors(p_good[i : i + 100], y_good[i : i + 100], 30.0 + k, ("r1", 2), [30.5 + k] * 100,
                 lambda: y_good[:0])  # fmt: skip
    for k, i in enumerate(range(0, 3000, 100)):  # v1's, at 0..29 s, labelled only now
        s.errors(p_bad[i : i + 100], y_bad[i : i + 100], float(k), ("r1", 1), [60.0 + k] * 100,
                 lambda: y_bad[:0])  # fmt: skip
    events += s.release(now=90.0)
    assert events == []
    # arriving one read at a time, after what was released, they are late: counted, left out
    s.errors(p_bad[:100], y_bad[:100], 5.0, ("r1", 1), [95.0] * 100, lambda: y_bad[:0])
    assert s.release(now=95.0) == [] and s.summary().concept.late == 100


def test_another_revision_s_errors_are_not_the_watched_one_s_concept_drift() -> None:
    s = _signals()
    s.watch("r2")  # promoted: r1's late labels say nothing of r2
    model = _trained()
    X, y = _world(3000, seed=13)
    later, y_later = _world(3000, seed=14, flipped=True)
    events = _labelled(s, model, X, y, 0.0, ("r2", 1)) + _labelled(
        s, model, later, y_later, 30.0, ("r1", 4)
    )
    assert events == []


def test_concept_drift_is_one_event_an_episode_and_clears_hold_intervals_after_it_last_fired() -> None:  # fmt: skip
    s = _signals()
    s.watch("r1")
    model = _trained()
    events = []  # the error rises twice (about 0.1, 0.5, 0.9) within one episode
    for k, flip in enumerate((0.0, 0.45, 1.0)):
        X, y = _world(3000, seed=15 + k, flip=flip)
        events += _labelled(s, model, X, y, 30.0 * k)
    assert _states(events) == [("concept", "detected", True)], "one event, however often it fires"
    last = s._concept_fired_at
    assert last > events[0].fields["ts"], "it fired again after the event"
    assert s.concept_edge(now=last + CONCEPT_HOLD * INTERVAL) == [], "held"
    assert _states(s.concept_edge(now=last + CONCEPT_HOLD * INTERVAL + 0.1)) == [
        ("concept", "cleared", False)
    ]
    assert s.summary().concept.detected is False and s.summary().concept.count == 1
    assert s.concept_edge(now=last + 1000.0) == [], "cleared once"


def test_the_errors_of_a_read_are_ordered_by_their_labels_arrival_before_the_watermark() -> None:
    """A read hands labels over a logged request at a time: how late they come is measured
    in the order they came (a later request labelled first is not late)."""
    s = _signals()
    model = _trained()
    X, y = _world(3, seed=20)
    p = model.predict_many(X)
    s.errors(p[:1], y[:1], 5.0, ("r1", 1), [6.0], lambda: y[:0])  # handed over first ...
    s.errors(p[1:2], y[1:2], 1.0, ("r1", 1), [2.0], lambda: y[:0])  # ... labelled first
    s.release(now=6.0)  # in arrival order, neither is late: both released, up to 5.0
    s.errors(p[2:], y[2:], 3.0, ("r1", 1), [7.0], lambda: y[:0])
    s.release(now=7.0)
    assert s.summary().concept.late == 1, "behind what was released"


def _clicks_only(s: DriftSignals, seconds: int, seed: int) -> list[DriftEvent]:
    """A stationary clicks-only stream as the monitor hands it over (labelDefault after 5 s):
    a model that answers "click" to every row (right on the 43 % clicked), 96 rows an entry
    every 20 ms (three requests logged together: one time), each click arriving 0.1-2 s after
    it, each default at 5 s; every 0.2 s the predictions 5 s old, clicks and defaults
    together. Its error does not change."""
    rng = np.random.default_rng(seed)
    events = []
    for step in range(seconds * 5):
        for entry in range(10):
            ts = step * 0.2 + entry * 0.02
            y = (rng.random(96) < 0.43).astype(float)
            came = np.where(y == 1.0, ts + rng.uniform(0.1, 2.0, 96), ts + 5.0)
            s.errors(np.full(96, 0.9), y, ts, ("r1", 0), came.tolist(), lambda: np.empty(0))
        events += s.release(now=step * 0.2 + 7.0)
    return events


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_clicks_only_stream_whose_error_does_not_change_is_no_concept_drift(seed: int) -> None:
    """The rows of one prediction time have no order, but their labels come in one: every
    click of an entry before all of its defaults. In that order a run of 40 right answers
    read as the error falling to 0, ADWIN cut its window to it, and the usual error after it
    read as a rise (bench/guardrails.py --clicks-only: concept drift in 2 stationary seeds
    of 10)."""
    s = _signals()
    s.watch("r1")
    assert _clicks_only(s, seconds=60, seed=seed) == []
    assert s.concept.width > 10_000 and s.concept.estimation == pytest.approx(0.57, abs=0.02)


def test_a_regression_error_counts_past_the_labels_spread() -> None:
    s = _signals(Task("regression"))
    labels = np.arange(30.0)  # spread ~8.7
    s.errors(np.array([0.0, 10.0, 20.0]), np.zeros(3), 1.0, ("r1", 1), None, lambda: labels)
    s.errors(np.array([50.0]), np.zeros(1), 2.0, ("r1", 1), None, lambda: labels[:29])
    err, _ = s._order.release()
    assert err.tolist() == [0.0, 1.0, 1.0, 0.0], "fewer than 30 labels: no spread, no error"
