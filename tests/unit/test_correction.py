"""Late labels learned as corrections of their defaults (``lateLabel: correct``): the
weights undo the lean the late labels give the rows, and the learners take weights."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import manifest
from tideline.algorithms import make_learner
from tideline.correction import LateCorrection
from tideline.spec import parse
from tideline.training import Run, Training


@pytest.mark.parametrize("default", [0.0, 1.0])
@pytest.mark.parametrize("p", [0.01, 0.3, 0.9])
@pytest.mark.parametrize("q", [0.0, 0.2, 1.0])
def test_the_weighted_rows_have_the_true_share_of_labels(
    default: float, p: float, q: float
) -> None:
    """Of a prediction's rows, one is its label in time or its default, and a late label
    adds a second: weighted, the rows' share of the other label is its true chance."""
    other = 1.0 - default
    c = LateCorrection(default)
    c.count(np.array([other] * 10), late=int(q * 10))
    assert c.q == pytest.approx(q)
    p_model = np.array([p if default == 0.0 else 1.0 - p] * 2)  # the model's P(class 1)
    w_other, w_default = c.weights(p_model, np.array([other, default]))
    # per prediction: the other label once (in time or late), the default when it was
    # learned (no label in time: the others, and the late ones)
    rows_other, rows_default = p, (1.0 - p) + p * q
    weighted_other = rows_other * w_other
    assert weighted_other / (weighted_other + rows_default * w_default) == pytest.approx(p)
    assert rows_other / (rows_other + rows_default) == pytest.approx(p / (1.0 + p * q))


def _stream(n: int, p: float, q: float, seed: int) -> list[tuple[np.ndarray, list[Run]]]:
    """Chunks of labelled rows of ``n`` predictions with a ``p`` click rate, ``q`` of the clicks
    late: each chunk's clicks in time and defaults, then the late clicks of the one before
    it. Rows: one constant feature; labels and runs (a late click's run says so)."""
    rng = np.random.default_rng(seed)
    out, late_before, at = [], 0, 1000
    for _ in range(0, n, 500):
        clicks = rng.random(500) < p
        late = clicks & (rng.random(500) < q)
        y = np.concatenate([np.ones(int((clicks & ~late).sum())),
                            np.zeros(int((~clicks | late).sum())), np.ones(late_before)])  # fmt: skip
        runs = [Run("feedback", f"{at + i}-0".encode(), 1, late=i >= len(y) - late_before)
                for i in range(len(y))]  # fmt: skip
        at += len(y)
        out.append((y, runs))
        late_before = int(late.sum())
    return out


@pytest.mark.parametrize("algorithm", ["sgd", "ftrl"])
def test_a_model_learned_with_corrections_predicts_the_true_rate(algorithm: str) -> None:
    """A 30 % click rate, half of the clicks past 'after': learned as they come, the rows
    say 26 % (0.3 / 1.15); weighted, the model says 30 %."""
    params = {"optimizer": "newton", "forgetting": 1.0} if algorithm == "sgd" else {"l1": 0.0}
    said = {}
    for late in ("ignore", "correct"):
        doc = manifest(learning={"labelDefault": {"value": 0, "after": "1m"}, "lateLabel": late,
                                 "replay": {"size": 0, "fraction": 0.0}})  # fmt: skip
        doc["spec"]["model"] = {"algorithm": algorithm, "features": [{"name": "x"}],
                                "params": params}  # fmt: skip
        spec = parse(doc).spec
        t = Training(spec.model, spec.learning, clock=lambda: 0.0)
        for y, runs in _stream(40_000, p=0.3, q=0.5, seed=3):
            t.add(np.zeros((len(y), 1)), y, runs)
            list(t.blocks(force=True))
        said[late] = float(t.learner.predict_many(np.zeros((1, 1)))[0])
        if late == "correct":
            assert t.correction is not None and t.correction.q == pytest.approx(0.5, abs=0.02)
            assert t.counters["corrected"] == t.correction.late > 5000
    assert said["ignore"] == pytest.approx(0.3 / 1.15, abs=0.01)  # (the late rows, unweighted)
    assert said["correct"] == pytest.approx(0.3, abs=0.01)


@pytest.mark.parametrize(
    "model",
    [
        {"task": "binary", "algorithm": "sgd", "params": {"optimizer": "newton"}},
        {"task": "binary", "algorithm": "sgd", "params": {"optimizer": "adagrad"}},
        {"task": "regression", "algorithm": "sgd", "params": {"optimizer": "sgd"}},
        {"task": "binary", "algorithm": "ftrl"},
        {"task": "multiclass", "algorithm": "sgd", "classes": ["a", "b", "c"]},
        {"task": "multiclass", "algorithm": "ftrl", "classes": ["a", "b", "c"]},
    ],
    ids=lambda m: f"{m['task']} {m['algorithm']} {m.get('params', {}).get('optimizer', '')}",
)
def test_a_row_of_weight_0_is_not_learned_and_weights_scale_the_rest(model: dict) -> None:
    feats = [{"name": "a"}, {"name": "b"}, {"name": "c", "type": "categorical", "buckets": 8}]
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.normal(size=(64, 2)), rng.integers(0, 8, 64)])
    y = rng.integers(0, 2, 64).astype(float)
    other = y.copy()
    other[::2] = 1.0 - other[::2]  # the rows of weight 0 say otherwise
    w = np.where(np.arange(64) % 2 == 0, 0.0, 1.5)
    a, b, plain = (make_learner({**model, "features": feats}) for _ in range(3))
    a.learn_predict_batches(X, y, np.array([0, 32, 64]), w)
    b.learn_many(X[:32], other[:32], w[:32])
    b.learn_many(X[32:], other[32:], w[32:])
    for k, v in a.get_state().items():
        np.testing.assert_allclose(v, b.get_state()[k], err_msg=k)
    plain.learn_many(X[:32], y[:32])
    differs = [not np.allclose(v, plain.get_state()[k]) for k, v in a.get_state().items()]
    assert any(differs), "weights of 1.5 learned as if they were 1"


def test_a_learner_that_takes_no_weights_refuses_them_and_bad_weights_are_refused() -> None:
    feats = [{"name": "a"}]
    X, y = np.zeros((2, 1)), np.array([0.0, 1.0])
    with pytest.raises(ValueError, match="forest does not learn sample weights"):
        make_learner({"algorithm": "forest", "features": feats}).learn_many(X, y, np.ones(2))
    sgd = make_learner({"algorithm": "sgd", "features": feats})
    for bad in (np.array([1.0, -1.0]), np.array([1.0, np.nan]), np.ones(3)):
        with pytest.raises(ValueError, match="sample weights: 2 finite values >= 0, one a row"):
            sgd.learn_many(X, y, bad)
    assert sgd.n_seen == 0
