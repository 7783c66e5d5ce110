"""The monitor's health summary without Redis (:mod:`tideline.monitoring.summary`): built from the parts'
states and the time - the tracks beside what the servers counted, the versions held, the
labels' lag, the throughput between two writes - and the shape the operator reads."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from tideline import health as h
from tideline import predlog
from tideline.monitoring.counters import Counted
from tideline.monitoring.signals import DriftSignals
from tideline.monitoring.summary import LAGS_HELD, LAGS_KEPT, LabelLags, Throughput, health
from tideline.monitoring.tracks import Scored, Tracks
from tideline.spec import DriftSpec
from tideline.tasks import Task

MODELS = {"stable": ("r1", 3), "canary": ("r2", 1)}


def _tracks(task: Task, answered: dict[str, int], scored: list[Scored]) -> Tracks:
    """The track part after the log's requests (``answered``: predictions by track) and the
    labelled answers (``scored``)."""
    t = Tracks(task, window=100)
    for track, n in answered.items():
        meta = predlog.Meta(track=track, models=MODELS)
        fields = predlog.encode([meta], [orjson.dumps([0.5] * n)], [b'{"instances": []}'])
        t.answered(predlog.decode(fields).request(0), n)
    for s in scored:
        t.score(s)
    return t


def _wire(s: h.Health) -> dict[str, Any]:
    got: dict[str, Any] = orjson.loads(h.encode(s))
    return got


REGRESSION = Task("regression")
CLASSES = Task("multiclass", ("cat", "dog", "fox"))
# (the stable track's labels: its answers 1 and 3 to targets 2 and 4, an error of 1 each)
STABLE = Scored("stable", "r1", 3, np.array([1.0, 3.0]), np.array([2.0, 4.0]))
COUNTED = Counted(requests=200, errors=10, refused=1, shed=2, fallbacks=3, seconds=4.0,
                  p50=0.001, p95=0.004, p99=0.009)  # fmt: skip
COUNTED_WIRE = {"requests": 200, "errors": 10, "refused": 1, "shed": 2, "fallbacks": 3,
                "countedOver": 4.0, "errorRate": 0.05, "p50Latency": 0.001,
                "p95Latency": 0.004, "p99Latency": 0.009}  # fmt: skip
# (the labels 2 and 4: a variance of 1, the best constant's squared error, as the model's)
QUALITY_WIRE = {"mae": 1.0, "rmse": 1.0, "relativeMse": 1.0, "labelled": 2, "window": 2}


@pytest.mark.parametrize(
    ("task", "answered", "scored", "servers", "tracks", "versions"),
    [
        (REGRESSION, {"stable": 5}, [STABLE], {"stable": COUNTED},
         {"stable": {"revision": "r1", "version": 3, "predictions": 5, **QUALITY_WIRE,
                     **COUNTED_WIRE}},
         {"r1:3": {"mae": 1.0, "rmse": 1.0, "relativeMse": 1.0, "labelled": 2}}),
        (REGRESSION, {"stable": 5}, [], {"canary": COUNTED},
         {"stable": {"revision": "r1", "version": 3, "predictions": 5},
          "canary": COUNTED_WIRE}, {}),
        (REGRESSION, {}, [STABLE], {},
         {"stable": QUALITY_WIRE}, {"r1:3": {"mae": 1.0, "rmse": 1.0, "relativeMse": 1.0, "labelled": 2}}),
        (REGRESSION, {"stable": 2}, [], {"stable": Counted(seconds=4.0)},
         {"stable": {"revision": "r1", "version": 3, "predictions": 2, "countedOver": 4.0}}, {}),
        (CLASSES, {}, [Scored("stable", None, None, np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1]]),
                              np.array([0.0, 1.0]))], {},
         {"stable": {"accuracy": 0.5, "logloss": pytest.approx(-np.mean(np.log([0.8, 0.3]))),
                     "calibration": pytest.approx(0.4), "labelled": 2, "window": 2,
                     "recall": {"cat": 1.0, "dog": 0.0}}}, {}),
    ],
    ids=[
        "a track answered, labelled and counted: its quality beside the servers' counters",
        "a track the servers counted before any of its answers was read: the counters alone",
        "labelled answers of a track no logged request named: its quality, no version named",
        "a track the servers read twice with no request: no error rate, its window said",
        "a multiclass track: its recall by class name, a class with no labelled row left out",
    ],
)  # fmt: skip
def test_the_summary_holds_every_track_answered_or_counted_and_every_version_held(
    task: Task,
    answered: dict[str, int],
    scored: list[Scored],
    servers: dict[str, Counted],
    tracks: dict[str, Any],
    versions: dict[str, Any],
) -> None:
    s = health("ns/fraud", 20.0, _tracks(task, answered, scored), servers)
    wire = _wire(s)
    assert wire["tracks"] == tracks
    assert wire["versions"] == versions
    assert (wire["ts"], wire["model"]) == (20.0, "ns/fraud")


def test_the_summary_s_shape_is_the_one_the_operator_reads() -> None:
    drift = DriftSignals(REGRESSION, DriftSpec(), interval=2.0, features=["a"]).summary()
    lags = LabelLags()
    lags.add(10.0, [11.0, 12.0, 13.0])
    log = h.LogCapacity(rate=5.0, window=600.0, held=1e6, used=2e6)
    quality = h.Quality(window=7, source="samples")
    maturity = h.Maturity(after=30.0, to=5.0, lag_seconds=15.0, held=3)
    s = health("ns/fraud", 20.0, _tracks(REGRESSION, {"stable": 5}, [STABLE]), {},
               drift=drift, label_lag=lags.summary(), maturity=maturity,
               throughput={"predictions": 2.5}, quality=quality, log=log)  # fmt: skip
    wire = _wire(s)
    assert list(wire) == ["ts", "model", "tracks", "versions", "drift", "labelLag", "maturity",
                          "throughput", "quality", "log"]  # fmt: skip
    assert wire["maturity"] == {"after": 30.0, "to": 5.0, "lagSeconds": 15.0, "held": 3}
    assert wire["drift"] == _wire(h.Health(ts=0.0, drift=drift))["drift"]
    assert wire["labelLag"] == {"p50": 2.0, "p95": pytest.approx(2.9)}
    assert wire["throughput"] == {"predictions": 2.5}
    assert (wire["quality"]["window"], wire["quality"]["source"]) == (7, "samples")
    assert wire["log"] == {"rate": 5.0, "window": 600.0, "held": 1e6, "used": 2e6}
    assert h.decode(h.encode(s)) == s, "what the operator decodes is what was built"


def test_with_nothing_read_the_summary_is_empty_parts_and_the_time() -> None:
    wire = _wire(health("ns/fraud", 3.0, Tracks(REGRESSION, window=100), {}))
    assert (wire["tracks"], wire["versions"], wire["labelLag"], wire["throughput"]) == (
        {}, {}, None, {},
    )  # fmt: skip
    assert (wire["quality"], wire["log"]) == (None, None)


@pytest.mark.parametrize(
    ("writes", "rates"),
    [([(10.0, 50, 5)], [{"predictions": 5.0, "labels": 0.5}]),
     ([(10.0, 50, 5), (20.0, 0, 0)], [{"predictions": 5.0, "labels": 0.5},
                                       {"predictions": 0.0, "labels": 0.0}]),
     ([(2.0, 10, 0), (6.0, 20, 8)], [{"predictions": 5.0, "labels": 0.0},
                                     {"predictions": 5.0, "labels": 2.0}]),
     ([(0.0, 7, 0)], [{"predictions": 7e9, "labels": 0.0}])],
    ids=["one write: what was counted since the start, a second",
         "a write with nothing counted since the last: zero, not the average since the start",
         "writes at uneven times: each over its own interval",
         "two writes at once: no division by zero"],
)  # fmt: skip
def test_throughput_is_what_was_counted_between_two_writes_a_second(
    writes: list[tuple[float, int, int]], rates: list[dict[str, float]]
) -> None:  # (writes: the time of each, and what was counted since the one before)
    t = Throughput(now=0.0)
    got = []
    for now, predictions, labels in writes:
        t.counts["predictions"] += predictions
        t.counts["labels"] += labels
        got.append(dict(t.measure(now)))
    assert got == [pytest.approx(r) for r in rates]
    assert t.rates == pytest.approx(rates[-1]), "the summary reads the last measure"


@pytest.mark.parametrize(
    ("added", "p50", "kept"),
    [([(10.0, [11.0, 13.0, 15.0])], 3.0, 3),
     ([(10.0, [9.0, 12.0])], 1.0, 2),
     ([(0.0, [1.0] * LAGS_HELD), (0.0, [5.0] * 600)], 5.0, LAGS_KEPT),
     ([(0.0, [1.0] * LAGS_HELD)], 1.0, LAGS_HELD)],
    ids=["lags from the prediction's time: the median", "a label before its prediction (a "
         "clock behind): no negative lag", "past the lags held: the newest kept",
         "at the lags held: all kept"],
)  # fmt: skip
def test_label_lags_are_the_newest_and_never_negative(
    added: list[tuple[float, list[float]]], p50: float, kept: int
) -> None:
    lags = LabelLags()
    assert lags.summary() is None, "no label: no lag"
    for ts, arrived in added:
        lags.add(ts, arrived)
    got = lags.summary()
    assert got is not None and len(lags.lags) == kept
    assert got.p50 == pytest.approx(p50)
