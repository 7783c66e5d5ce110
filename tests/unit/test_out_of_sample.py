"""Out-of-sample evidence: a version is scored only on labels that came after the newest one it
learned, so a model that memorises is not proven (nor preferred) on its own training data."""

from __future__ import annotations

from typing import Any

import numpy as np

from tideline.algorithms import make_learner
from tideline.evidence import CommonWindow


def _models() -> tuple[Any, Any]:
    features = [{"name": "a"}, {"name": "b"}]
    memo = make_learner({"task": "binary", "algorithm": "custom", "features": features,
                         "custom": {"class": "tests.models.teams:Memorizer"}})  # fmt: skip
    honest = make_learner({"task": "binary", "algorithm": "sgd", "features": features})
    return memo, honest


def test_a_memorising_model_wins_on_what_it_learned_and_loses_on_what_came_after() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 2))
    y = ((X[:, 0] + 0.5 * rng.normal(size=4000)) > 0).astype(float)  # 85 % is the best there is
    rows = [{"a": a, "b": b} for a, b in X.tolist()]
    t = np.arange(4000.0)  # when each label arrived
    memo, honest = _models()
    # both learned the first 2000 labels (they arrived by t = 1999); the rest came after
    memo.learn_many(X[:2000], y[:2000])
    honest.learn_many(X[:2000], y[:2000])

    blind = CommonWindow("binary", 4000)  # as before: every sample counts for every version
    blind.add_samples(rows[:2000], y[:2000])
    blind.add_candidate("memo", memo)
    blind.add_candidate("honest", honest)
    assert blind.score("memo")["accuracy"] == 1.0  # its own training data: "proven"
    assert blind.relative(blind.compare("memo", "honest"))[1] > 0  # surely better

    w = CommonWindow("binary", 4000)
    w.add_samples(rows[:2000], y[:2000], t[:2000])
    w.add_candidate("memo", memo, learned_until=1999.0)
    w.add_candidate("honest", honest, learned_until=1999.0)
    assert w.score("memo") == {"count": 0}  # nothing it has not learned yet: no evidence
    assert w.compare("memo", "honest").n == 0
    w.add_samples(rows[2000:], y[2000:], t[2000:])  # new labels: both are judged on them
    memo_new, honest_new = w.score("memo"), w.score("honest")
    assert memo_new["count"] == honest_new["count"] == 2000
    assert memo_new["accuracy"] < 0.6 < 0.8 < honest_new["accuracy"]
    diff, lo, hi = w.relative(w.compare("memo", "honest"))
    assert hi < 0, "the memorising model is surely worse on labels it had not seen"
    # a comparison with a candidate that learned less uses the samples neither learned
    w.add_candidate("older", honest.clone(), learned_until=999.0)
    assert w.compare("older", "memo").n == 2000


def test_a_published_version_carries_when_its_newest_label_arrived() -> None:
    w = CommonWindow("binary", 10)
    w.add_candidate("v", _models()[1], learned_until=5.0)
    w.add_samples([{}] * 4, np.array([1.0, 0.0, 1.0, 1.0]), np.array([3.0, 5.0, 6.0, 9.0]))
    assert w.score("v")["count"] == 2  # the labels that arrived at 6 and 9


def _stream(n: int, seed: int = 1) -> tuple[list[dict[str, float]], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = ((X[:, 0] + 0.5 * rng.normal(size=n)) > 0).astype(float)
    return [{"a": a, "b": b} for a, b in X.tolist()], y, X


def test_whole_scores_the_reference_on_its_training_data_too() -> None:
    rows, y, X = _stream(3000)
    memo, honest = _models()
    memo.learn_many(X[1000:], y[1000:])  # the served version memorised the newest 2,000
    honest.learn_many(X[:1000], y[:1000])  # lastGood learned the 1,000 before
    w = CommonWindow("binary", 3000)
    w.add_samples(rows, y, np.arange(3000.0))
    w.add_candidate("served", memo, learned_until=2999.0)
    w.add_candidate("good", honest, learned_until=999.0)
    fair, whole = w.compare("good", "served"), w.compare("good", "served", whole=True)
    assert fair.n == 0  # nothing neither learned
    # on the 2,000 lastGood has not learned, the memory of the served version counts for it
    assert whole.n == 2000 and whole.mean < -0.05 and w.relative(whole)[2] < 0
    # both grow with the labels to come, each on its own samples
    more, more_y, _ = _stream(500, seed=2)
    w.add_samples(more, more_y, np.arange(3000.0, 3500.0))
    assert (fair.n, whole.n) == (500, 2500)


def test_a_track_answers_as_the_version_it_followed_then() -> None:
    rows, y, X = _stream(400)
    memo, honest = _models()
    honest.learn_many(X, y)
    w = CommonWindow("binary", 1000)
    w.add_candidate("memo", memo, learned_until=None)
    w.add_candidate("honest", honest, learned_until=399.0)  # (it learned the first 400)
    w.follow("track", "memo")
    assert w.compare("track", "honest").n == 0  # a new track has answered nothing
    w.add_samples(rows[:100], y[:100], np.arange(100.0))  # before honest's labels: in sample
    w.follow("track", "honest")
    w.add_samples(rows[100:], y[100:], np.arange(400.0, 700.0))  # after them: out of sample
    track = w._preds["track"][: w.count]
    assert np.array_equal(track[:100], w._preds["memo"][:100])  # as memo answered then
    assert np.array_equal(track[100:400], w._preds["honest"][100:400])
    assert w.score("track")["count"] == 400  # memo learned nothing, honest the first 400
    w.follow("track", "gone")  # a version not loaded answers nothing
    w.add_samples(rows[:10], y[:10], np.arange(700.0, 710.0))
    assert w.score("track")["count"] == 400
    w.keep_tracks(set())
    assert "track" not in w
