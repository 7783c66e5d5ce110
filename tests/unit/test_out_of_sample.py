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
