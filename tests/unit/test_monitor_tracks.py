"""The monitor's track and version part without Redis (:mod:`tideline.monitoring.tracks`): what a joined
label scores on which track and version, the bad entries left out, the predictions counted by
track, and the versions held - fed logged requests as the servers write them."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from tideline import predlog
from tideline.monitoring.tracks import MAX_VERSIONS, MIN_VERSIONS, Scored, Tracks, labelled
from tideline.tasks import Task

BINARY = Task("binary")
CLASSES = Task("multiclass", ("cat", "dog", "fox"))
MODELS = {"stable": ("r1", 3), "canary": ("r2", 1)}


def _entry(scores: list[Any], rows: int | None = None, **meta: Any) -> predlog.Entry:
    """A logged request as a server writes it: its metadata, scores and rows."""
    body = orjson.dumps({"instances": [{"a": float(i)} for i in range(rows or len(scores))]})
    fields = predlog.encode([predlog.Meta(**meta)], [orjson.dumps(scores)], [body])
    return predlog.decode(fields).request(0)


def _scored(s: Scored) -> tuple[Any, ...]:
    return (s.track, s.revision, s.version, s.p.tolist(), s.y.tolist(), s.received)


SPLIT = {"tracks": ["stable", "canary", "stable"], "models": MODELS}
SHADOW = {"models": MODELS, "shadow": ("r1", 4, [0.4, 0.6])}

LABELS = [
    (BINARY, _entry([0.9, 0.2], models=MODELS), [0, 1], [1, 0], [5.0, 6.0],
     [("stable", "r1", 3, [0.9, 0.2], [1.0, 0.0], [5.0, 6.0])], 0),
    (BINARY, _entry([0.9, 0.2, 0.7], **SPLIT), [2, 1, 0], [1, 1, 0], [5.0, 6.0, 7.0],
     [("canary", "r2", 1, [0.2], [1.0], [6.0]),
      ("stable", "r1", 3, [0.7, 0.9], [1.0, 0.0], [5.0, 7.0])], 0),
    (BINARY, _entry([0.9, 0.2], models=MODELS), [1], [1], [5.0],
     [("stable", "r1", 3, [0.2], [1.0], [5.0])], 0),
    (CLASSES, _entry([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1]], models=MODELS), [0, 1],
     ["eel", "dog"], [5.0, 6.0],
     [("stable", "r1", 3, [[0.2, 0.7, 0.1]], [1.0], [6.0])], 1),
    (CLASSES, _entry([[0.8, 0.1, 0.1]], models=MODELS), [0], ["eel"], [5.0], [], 1),
    (BINARY, _entry([0.9, None], models=MODELS), [0, 1], [1, 0], [5.0, 6.0], [], 1),
    (BINARY, _entry([0.9], models=MODELS), [3], [1], [5.0], [], 1),
    (BINARY, _entry([0.9, 0.2, 0.1], **SHADOW), [0, 1, 2], [1, 0, 0], [5.0, 6.0, 7.0],
     [("stable", "r1", 3, [0.9, 0.2, 0.1], [1.0, 0.0, 0.0], [5.0, 6.0, 7.0]),
      ("shadow", "r1", 4, [0.4, 0.6], [1.0, 0.0], None)], 0),
    (BINARY, _entry([0.9, 0.2], models=MODELS, shadow=("r1", 4, [None, 0.6])), [0, 1], [1, 0],
     [5.0, 6.0], [("stable", "r1", 3, [0.9, 0.2], [1.0, 0.0], [5.0, 6.0])], 1),
    (BINARY, _entry([0.9, 0.2]), [0], [1], [5.0], [("stable", None, None, [0.9], [1.0], [5.0])],
     0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("task", "entry", "rows", "labels", "received", "scored", "bad"),
    LABELS,
    ids=[
        "one track answered every row: its scores and targets as they came",
        "rows split between tracks: each track its own rows, arrivals and version, by name",
        "a label for some of the rows: those rows alone",
        "a multiclass label that is no class: left out and counted, the others scored",
        "no label is a target: nothing scored, each counted",
        "a null score: nothing of the request scored, one bad entry",
        "a row the scores do not have: nothing scored, one bad entry",
        "a shadow: scored last on the rows it answered, with no arrivals for concept drift",
        "a shadow's null score: the tracks scored, the shadow left out and counted",
        "no version named: the track's answers, with no version",
    ],
)
def test_a_joined_label_scores_what_answered_the_rows(
    task: Task,
    entry: predlog.Entry,
    rows: list[int],
    labels: list[Any],
    received: list[float],
    scored: list[tuple[Any, ...]],
    bad: int,
) -> None:
    got = labelled(task, entry, rows, labels, received)
    assert [_scored(s) for s in got.scored] == scored
    assert got.bad == bad
    if scored:  # the evidence takes every labelled row, whichever track answered it
        assert (
            len(got.rows)
            == len(got.y)
            == len(got.arrived)
            == len(scored[0][4]) + sum(len(s[4]) for s in scored[1:] if s[0] != "shadow")
        )
    else:
        assert len(got.y) == 0 and got.rows == [] and got.arrived == []


@pytest.mark.parametrize(
    ("meta", "n", "counted"),
    [({"models": MODELS}, 4, {"stable": (4, "r1", 3)}),
     ({"track": "canary", "models": MODELS}, 2, {"canary": (2, "r2", 1)}),
     (SPLIT, 3, {"stable": (2, "r1", 3), "canary": (1, "r2", 1)}),
     (SHADOW, 2, {"stable": (2, "r1", 3), "shadow": (2, "r1", 4)}),
     ({}, 1, {"stable": (1, None, None)})],
    ids=["one track answered every row: all its", "the canary answered every row: all the canary's",
         "rows split between tracks: each its own", "a shadow: every row counted on it too",
         "no version named: counted, naming none"],
)  # fmt: skip
def test_a_logged_request_counts_its_predictions_by_track(
    meta: dict[str, Any], n: int, counted: dict[str, tuple[Any, ...]]
) -> None:
    t = Tracks(BINARY, window=10)
    t.answered(_entry([0.5] * n, **meta), n)
    t.answered(_entry([0.5] * n, **meta), n)
    got = {k: (s.predictions, s.revision, s.version) for k, s in t.tracks.items()}
    assert got == {k: (2 * c, r, v) for k, (c, r, v) in counted.items()}
    assert t.versions == {}, "answers alone hold no version's quality"


def test_labelled_answers_score_their_track_and_version_and_count_its_labels() -> None:
    t = Tracks(BINARY, window=10)
    stable = t.score(Scored("stable", "r1", 3, np.array([0.9, 0.2]), np.array([1.0, 1.0])))
    t.score(Scored("shadow", "r1", 4, np.array([0.9]), np.array([1.0])))
    t.score(Scored("stable", None, None, np.array([0.9]), np.array([0.0])))
    assert stable is t.tracks["stable"]
    assert (stable.labelled, stable.quality.report()["accuracy"]) == (3, pytest.approx(1 / 3))
    assert t.versions["r1:3"].quality.report()["accuracy"] == 0.5
    assert t.labelled() == {("r1", 3): 2, ("r1", 4): 1}, "answers of no version count on none"


@pytest.mark.parametrize(
    ("task", "window", "held"),
    [(BINARY, 2000, MAX_VERSIONS), (Task("multiclass", tuple(range(1000))), 2000, MIN_VERSIONS),
     (Task("multiclass", tuple(range(500))), 2000, 16)],
    ids=["a number a row: 64 versions", "1,000 classes: the fewest (8)",
         "500 classes: as many windows as 16 M numbers hold (16)"],
)  # fmt: skip
def test_the_versions_held_are_bounded_and_the_oldest_forgotten(
    task: Task, window: int, held: int
) -> None:
    t = Tracks(task, window)
    assert t.max_versions == held
    for v in range(t.max_versions + 2):
        t.version("r1", v)
    assert len(t.versions) == t.max_versions
    assert "r1:0" not in t.versions and "r1:1" not in t.versions
    assert f"r1:{t.max_versions + 1}" in t.versions
    assert t.version(None, 3) is None and t.version("r1", None) is None
