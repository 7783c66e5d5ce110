"""The monitor's log reading without Redis (:mod:`tideline.monitoring.driftsample`): which logged requests
drift reads, which of their rows, and the features and scores it is handed - fed requests as
the servers log them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tideline import predlog
from tideline.monitoring.driftsample import DriftSample, stable_rows
from tideline.tasks import Task

BINARY = Task("binary")
CLASSES = Task("multiclass", ("cat", "dog", "fox"))
NAMES, DEFAULTS = ["amount", "hour"], [0.0, 12.0]


def _entry(scores: list[Any], rows: list[Any], **meta: Any) -> predlog.Entry:
    """A logged request as a server writes it (a body of ``rows``)."""
    fields = predlog.encode([predlog.Meta(**meta)], [orjson.dumps(scores)],
                            [orjson.dumps({"instances": rows})])  # fmt: skip
    return predlog.decode(fields).request(0)


def _read(task: Task, e: predlog.Entry, names: list[str] = NAMES) -> tuple[bool, Any, Any]:
    sample = DriftSample(task, names, DEFAULTS[: len(names)], rate=1.0)
    ok = sample.add(e, stable_rows(e, len(e.scores)), e.scores)
    X, scores = sample.take()
    return ok, None if X is None else X.tolist(), None if scores is None else scores.tolist()


ROW_A, ROW_B, ROW_C = {"amount": 1.0, "hour": 3.0}, {"amount": 2.0, "hour": 4.0}, {"amount": 5.0}


@pytest.mark.parametrize(
    ("task", "entry", "read"),
    [
        (BINARY, _entry([0.9, 0.2], [ROW_A, ROW_B]), (True, [[1.0, 3.0], [2.0, 4.0]], [0.9, 0.2])),
        (BINARY, _entry([0.9, 0.2, 0.4], [ROW_A, ROW_B, ROW_C],
                        tracks=["stable", "canary", "stable"]),
         (True, [[1.0, 3.0], [5.0, 12.0]], [0.9, 0.4])),
        (BINARY, _entry([0.9, 0.2], [ROW_A, ROW_B], track="canary"), (True, None, None)),
        (BINARY, _entry([0.9, 0.2, 0.4], [ROW_A, None, ROW_C], cut=[1]),
         (True, [[1.0, 3.0], [5.0, 12.0]], [0.9, 0.4])),
        (BINARY, _entry([0.9], [None], cut=[0]), (True, None, None)),
        (BINARY, _entry([0.9, 0.2], [[1.0, 3.0], [2.0, None]], names=["amount", "hour"]),
         (True, [[1.0, 3.0], [2.0, 12.0]], [0.9, 0.2])),
        (BINARY, _entry([0.9, 0.2], [{"amount": "a lot", "hour": 3.0}, ROW_B]),
         (True, [[0.0, 3.0], [2.0, 4.0]], [0.9, 0.2])),
        (BINARY, _entry([0.9, 0.2, 0.4], [ROW_A]), (True, [[1.0, 3.0]], [0.9])),
        (BINARY, _entry([0.9, 0.2], [ROW_A, "a row"]), (False, None, None)),
        (BINARY, _entry([0.9, 0.2], [ROW_A, None]), (False, None, None)),
        (BINARY, _entry([0.9, 0.2, 0.4], [ROW_A, None, None], cut=[2]), (False, None, None)),
        (BINARY, _entry([0.9, None], [ROW_A, ROW_B]), (True, [[1.0, 3.0], [2.0, 4.0]], [0.9, 0.5])),
        (CLASSES, _entry([[0.1, 0.7, 0.2], [0.8, 0.1, 0.1]], [ROW_A, ROW_B]),
         (True, [[1.0, 3.0], [2.0, 4.0]], [1.0, 0.0])),
        (CLASSES, _entry([[0.1, 0.9], [0.8, 0.1, 0.1]], [ROW_A, ROW_B]),
         (False, [[1.0, 3.0], [2.0, 4.0]], None)),
    ],
    ids=[
        "the stable track answered every row: each row's features and score",
        "rows split between tracks: the stable rows alone",
        "the canary answered every row: nothing for drift",
        "a row cut from the log: left out of features and scores, the others read",
        "every stable row cut: nothing read, and no bad entry",
        "rows logged as named arrays: read one by one, a null its feature's default",
        "a value that is no number: its feature's default",
        "a body of fewer rows than scores: the rows it has, and their scores",
        "a row that is neither an object nor a named array: a bad entry, nothing read",
        "a null row in a request with no row cut: a bad entry, nothing read",
        "a null row the cut rows do not name: a bad entry, nothing read",
        "a null score: the middle of the scores' range, as before",
        "multiclass: the predicted class of each row",
        "multiclass scores of the wrong width: a bad entry, the features already read kept",
    ],
)  # fmt: skip
def test_a_sampled_request_hands_drift_its_stable_rows_features_and_scores(
    task: Task, entry: predlog.Entry, read: tuple[bool, Any, Any]
) -> None:
    assert _read(task, entry) == read


def test_a_model_with_no_numeric_feature_hands_drift_its_scores_alone() -> None:
    assert _read(BINARY, _entry([0.9, 0.2], ["a row", None]), names=[]) == (True, None, [0.9, 0.2])


def test_what_was_read_is_handed_once_typed_and_row_by_row_rows_together() -> None:
    sample = DriftSample(BINARY, NAMES, DEFAULTS, rate=1.0)
    for e in (_entry([0.9], [ROW_A]), _entry([0.2], [[2.0, 4.0]], names=NAMES)):
        assert sample.add(e, stable_rows(e, 1), e.scores)
    X, scores = sample.take()
    assert X is not None and scores is not None
    assert (X.tolist(), scores.tolist()) == ([[1.0, 3.0], [2.0, 4.0]], [0.9, 0.2])
    assert sample.take() == (None, None), "taken: nothing is handed twice"


@pytest.mark.parametrize(
    ("meta", "n", "rows"),
    [({}, 3, [0, 1, 2]), ({"track": "canary"}, 3, []), ({"track": "shadow"}, 2, []),
     ({"tracks": ["canary", "stable", "stable"]}, 3, [1, 2]),
     ({"tracks": ["stable"]}, 3, [0]), ({"tracks": []}, 2, [0, 1])],
    ids=["one track, the stable: every row", "one track, the canary: none",
         "a track drift does not watch: none", "rows named one by one: the stable ones",
         "fewer names than rows: a row no name says is no stable row",
         "an empty list of names: the request's one track"],
)  # fmt: skip
def test_the_rows_drift_reads_are_those_the_stable_track_answered(
    meta: dict[str, Any], n: int, rows: list[int]
) -> None:
    assert list(stable_rows(_entry([0.5] * n, [{}] * n, **meta), n)) == rows


def test_the_sample_is_a_share_of_the_requests_the_same_for_every_reader() -> None:
    where = [(b"tideline:{ns/m}:log:pod-%d" % (i % 3), b"%d-0" % i, i % 4) for i in range(8000)]
    quarter = DriftSample(BINARY, NAMES, DEFAULTS, rate=0.25)
    picked = [quarter.sampled(*w) for w in where]
    assert 0.23 < sum(picked) / len(picked) < 0.27
    again = DriftSample(BINARY, NAMES, DEFAULTS, rate=0.25)
    assert [again.sampled(*w) for w in where] == picked, "another monitor reads the same"
    one_entry = [quarter.sampled(b"tideline:{ns/m}:log:pod-0", b"7-0", k) for k in range(800)]
    assert 0.2 < sum(one_entry) / 800 < 0.3, "the requests of one entry, each on its own"
    assert all(DriftSample(BINARY, NAMES, DEFAULTS, rate=1.0).sampled(*w) for w in where)
    assert not any(DriftSample(BINARY, NAMES, DEFAULTS, rate=0.0).sampled(*w) for w in where)
