"""Multiclass in the library: spec.model.classes, class-index labels, (n, k) scores from the
built-in learners (softmax sgd, one-vs-rest ftrl, the forest), their state and metrics."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from tests.helpers import manifest
from tideline import codec
from tideline.algorithms import make_learner
from tideline.algorithms.base import check_target, check_targets
from tideline.evaluate import RollingMetrics, log_loss, prequential, recall, scores
from tideline.spec import MAX_CLASSES, Spec, SpecError, parse, parse_model, revision

CLASSES = ["cat", "dog", "fox", "owl"]
FEATURES = [
    {"name": "a"},
    {"name": "b", "default": 1.0},
    {"name": "c"},
    {"name": "shop", "type": "categorical", "buckets": 16},
]


def _model(**changes: object) -> dict:
    return {"task": "multiclass", "algorithm": "sgd", "classes": CLASSES,
            "features": FEATURES} | changes  # fmt: skip


LEARNERS = [
    ("sgd", {}),
    ("sgd", {"optimizer": "adagrad"}),
    ("sgd", {"optimizer": "sgd"}),
    ("ftrl", {}),
    ("forest", {"nTrees": 4}),
]
IDS = ["softmax sgd, newton", "softmax sgd, adagrad", "softmax sgd, plain sgd",
       "one-vs-rest ftrl", "forest of class counts"]  # fmt: skip


@pytest.fixture(params=LEARNERS, ids=IDS)
def learner(request):
    algorithm, params = request.param
    return make_learner(_model(algorithm=algorithm, params=params))


def _blobs(n: int, seed: int = 0, k: int = len(CLASSES), spread: float = 1.0
           ) -> tuple[list[dict], np.ndarray]:  # fmt: skip
    """Rows of k Gaussian classes (well separated at ``spread`` 1); the shop says the class
    half the time."""
    rng = np.random.default_rng(seed)
    centres = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0], [4.0, 4.0, 4.0]])[:k]
    y = rng.integers(0, k, size=n)
    X = centres[y] + spread * rng.normal(size=(n, 3))
    shop = np.where(rng.random(n) < 0.5, y, rng.integers(0, 8, size=n))
    rows = [{"a": r[0], "b": r[1], "c": r[2], "shop": f"s{s}"}
            for r, s in zip(X.tolist(), shop.tolist(), strict=True)]  # fmt: skip
    return rows, y.astype(np.float64)


def _trained(m, n: int = 1200, seed: int = 0, spread: float = 1.0):  # type: ignore[no-untyped-def]
    rows, y = _blobs(n, seed, spread=spread)
    X = m.schema.encode(rows)
    for i in range(0, n, 64):
        m.learn_many(X[i : i + 64], y[i : i + 64])
    return X, y


# --------------------------------------------------------------------------- spec
def test_a_multiclass_model_reads_its_classes_and_make_learner_rebuilds_it_from_to_dict() -> None:
    model = parse_model(_model())
    assert model.task == "multiclass" and model.classes == tuple(CLASSES)
    assert model.to_dict()["classes"] == CLASSES
    m = make_learner(model.to_dict())
    assert (m.task, m.classes, m.n_classes) == ("multiclass", tuple(CLASSES), 4)
    assert m.spec()["classes"] == CLASSES and make_learner(m.spec()).classes == m.classes
    assert "classes" not in parse_model(_model(task="binary", classes=None)).to_dict()


def test_the_revision_changes_with_the_classes_and_a_binary_models_stays_as_it_was() -> None:
    def rev(model: dict) -> str:
        return revision(Spec(model=parse_model(model)))

    assert rev(_model()) != rev(_model(classes=["cat", "dog", "fox", "emu"]))
    assert rev(_model()) != rev(_model(classes=["dog", "cat", "fox", "owl"]))  # (label order)
    binary = manifest()
    assert rev(binary["spec"]["model"]) == parse(binary).revision


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [
        ({"classes": None}, "spec.model.classes", "required with task: multiclass"),
        ({"classes": "cat,dog"}, "spec.model.classes", "must be a list of names"),
        ({"classes": ["cat"]}, "spec.model.classes", "must hold 2 to 1000 names .got 1."),
        ({"classes": [f"c{i}" for i in range(MAX_CLASSES + 1)]}, "spec.model.classes",
         "must hold 2 to 1000 names .got 1001."),
        ({"classes": ["cat", "dog", "cat"]}, r"spec.model.classes\[2\]", "duplicate name 'cat'"),
        ({"classes": ["cat", ""]}, r"spec.model.classes\[1\]", "must be a non-empty string"),
        ({"classes": ["cat", 7]}, r"spec.model.classes\[1\]", "must be a non-empty string .got 7."),
        ({"task": "binary"}, "spec.model.classes", "only with task: multiclass .got binary."),
        ({"task": "regression"}, "spec.model.classes", "only with task: multiclass"),
        ({"algorithm": "vw", "vw": {"args": "--oaa 5"}}, "spec.model.vw.args",
         "--oaa 5 does not fit the 4 classes"),
        ({"classes": [f"c{i}" for i in range(600)],
          "features": [{"name": f"x{i}"} for i in range(100)]}, "spec.model.classes",
         "sgd's newton keeps a 101x101 matrix per class"),
        ({"classes": [f"c{i}" for i in range(600)], "features": [{"name": "shop",
          "type": "categorical", "buckets": 10_000}]}, "spec.model.classes",
         "600 classes x 10000 categorical buckets"),
    ],
    ids=[
        "a multiclass model without classes is refused",
        "classes that are not a list are refused",
        "a single class is refused",
        "more than 1,000 classes are refused",
        "a class named twice is refused at its second place",
        "an empty class name is refused",
        "a class name that is not a string is refused",
        "classes for a binary model are refused",
        "classes for a regression model are refused",
        "vw's --oaa must count the classes",
        "newton's matrices for many classes and features are bounded as a binary model's",
        "a weight per class and bucket is bounded as a binary model's buckets",
    ],
)  # fmt: skip
def test_spec_model_classes_errors_name_the_field(changes: dict, path: str, message: str) -> None:
    with pytest.raises(SpecError, match=f"^{path}: .*{message}"):
        parse_model(_model(**changes))


def test_many_classes_fit_with_adagrad_and_with_the_forest() -> None:
    many = {"classes": [f"c{i}" for i in range(600)],
            "features": [{"name": f"x{i}"} for i in range(100)]}  # fmt: skip
    parse_model(_model(**many, params={"optimizer": "adagrad"}))
    parse_model(_model(**many, algorithm="forest"))


def test_a_multiclass_manifest_parses_with_its_fallback_a_class() -> None:
    doc = manifest(model=_model(), serving={"fallback": {"class": "dog"}})
    m = parse(doc)
    assert m.spec.model.classes == tuple(CLASSES)
    assert m.spec.serving.fallback == 1.0  # (its index: label i names classes[i])


@pytest.mark.parametrize(
    ("fallback", "message"),
    [
        (
            {"class": "wolf"},
            r"spec.serving.fallback.class: 'wolf' is not one of spec.model.classes",
        ),
        ({"value": 0.5}, r"spec.serving.fallback.value: a multiclass model's fallback is \{class"),
        ("dog", r"spec.serving.fallback: must be lastGood or \{class: NAME\}"),
    ],
)
def test_a_multiclass_fallback_must_name_a_class(fallback, message) -> None:
    with pytest.raises(SpecError, match=message):
        parse(manifest(model=_model(), serving={"fallback": fallback}))


def test_a_binary_fallback_is_a_value_not_a_class() -> None:
    model = {"task": "binary", "algorithm": "sgd", "features": [{"name": "x"}]}
    with pytest.raises(SpecError, match=r"spec.serving.fallback.class: only with task: multiclass"):
        parse(manifest(model=model, serving={"fallback": {"class": "dog"}}))


# --------------------------------------------------------------------------- labels
@pytest.mark.parametrize(
    ("label", "error"),
    [
        (0, None), (3, None), (2.0, None), (True, None),
        (4, "class indices 0 to 3 .got 4."),
        (-1, "class indices 0 to 3 .got -1."),
        (1.5, "class indices 0 to 3 .got 1.5."),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
    ],
    ids=["the first class", "the last class", "a whole float", "true as class 1",
         "one past the last class", "a negative index", "a fraction", "NaN", "infinity"],
)  # fmt: skip
def test_multiclass_labels_are_class_indices(label: float, error: str | None) -> None:
    if error is None:
        assert check_target("multiclass", label, 4) == float(label)
        assert check_targets("multiclass", [0, label], 4).tolist() == [0.0, float(label)]
        return
    with pytest.raises(ValueError, match=error):
        check_target("multiclass", label, 4)
    with pytest.raises(ValueError, match=error):
        check_targets("multiclass", [0, 1, label], 4)


def test_multiclass_labels_need_the_number_of_classes() -> None:
    with pytest.raises(ValueError, match="number of classes"):
        check_targets("multiclass", [0, 1])


def test_a_learner_takes_classes_with_multiclass_only() -> None:
    from tideline.algorithms import SoftmaxLearner

    with pytest.raises(ValueError, match="classes"):
        SoftmaxLearner(FEATURES, "multiclass")
    with pytest.raises(ValueError, match="classes"):
        SoftmaxLearner(FEATURES, "binary", classes=CLASSES)
    assert "classes" not in make_learner(_model(task="binary", classes=None)).spec()


# --------------------------------------------------------------------------- learners
def test_each_learner_learns_separable_classes(learner) -> None:
    _trained(learner)
    rows, y = _blobs(1000, seed=1)
    p = learner.predict_many(learner.schema.encode(rows))
    assert p.shape == (1000, 4)
    assert np.mean(p.argmax(axis=1) == y) > 0.95


def test_scores_are_probabilities_of_each_class_on_every_path(learner) -> None:
    X, y = _trained(learner, 300)
    for p in (learner.predict_many(X), learner.predictor()(X),
              learner.copy().learn_predict_many(X[:100], y[:100], 40),
              learner.copy().learn_predict_batches(X[:100], y[:100], np.array([0, 7, 100]))):  # fmt: skip
        assert p.ndim == 2 and p.shape[1] == 4
        assert np.all(p >= 0.0) and np.all(np.isfinite(p))
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    assert learner.predict_many(X[:0]).shape == (0, 4)
    assert learner.learn_predict_many(X[:0], y[:0]).shape == (0, 4)
    one = learner.predict_one({"a": 4.0, "b": 0.0, "c": 0.0})
    assert one.shape == (4,) and int(np.argmax(one)) == 0


def test_state_round_trips_through_the_store_format_and_learning_goes_on_alike(learner) -> None:
    X, y = _trained(learner, 600)
    blob = codec.encode(learner.get_state(), {"model": learner.spec()})
    arrays, meta = codec.decode(blob)
    restored = make_learner(meta["model"])
    restored.set_state(arrays)
    np.testing.assert_array_equal(restored.predict_many(X), learner.predict_many(X))
    other = make_learner(learner.spec())
    other.load(learner.save())  # (the learner contract's save and load)
    np.testing.assert_array_equal(other.predict_many(X), learner.predict_many(X))
    for i in range(0, 600, 50):  # ... and both keep learning identically (RNG state included)
        learner.learn_many(X[i : i + 50], y[i : i + 50])
        restored.learn_many(X[i : i + 50], y[i : i + 50])
    np.testing.assert_array_equal(restored.predict_many(X), learner.predict_many(X))


def test_learn_predict_batches_is_learn_predict_many_of_each_batch_in_turn(learner) -> None:
    each = learner.clone()
    rows, y = _blobs(700, seed=2)
    X = learner.schema.encode(rows)
    edges = [0, 1, 3, 7, 15, 31, 95, 159, 223, 287, 300, 364, 428, 492, 556, 620, 684, 700]
    p = learner.learn_predict_batches(X, y, np.array(edges))
    expected = np.concatenate([each.learn_predict_many(X[a:b], y[a:b]) for a, b in pairwise(edges)])
    np.testing.assert_allclose(p, expected, rtol=1e-9, atol=1e-9)
    for k, v in each.get_state().items():
        np.testing.assert_allclose(learner.get_state()[k], v, rtol=1e-7, atol=1e-9, err_msg=k)


def test_a_class_index_out_of_range_leaves_the_state_as_it_was(learner) -> None:
    X, y = _trained(learner, 400)
    before = learner.copy().get_state()
    bad = y.copy()
    bad[250] = 4.0  # one past the last class
    with pytest.raises(ValueError, match=r"class indices 0 to 3 \(got 4\)"):
        learner.learn_predict_batches(X, bad, np.arange(0, 401, 50))
    with pytest.raises(ValueError, match=r"class indices 0 to 3 \(got 4\)"):
        learner.learn_many(X, bad)
    assert learner.n_seen == 400
    for k, v in before.items():
        np.testing.assert_array_equal(learner.get_state()[k], v, err_msg=k)


def test_softening_keeps_the_predictions(learner) -> None:
    X, _ = _trained(learner, 600)
    soft = learner.copy()
    soft.soften(0.05)
    np.testing.assert_allclose(soft.predict_many(X), learner.predict_many(X), atol=1e-12)


@pytest.mark.parametrize("algorithm, params", [("sgd", {}), ("sgd", {"optimizer": "adagrad"}),
                                               ("ftrl", {})], ids=["newton", "adagrad", "ftrl"])  # fmt: skip
def test_a_softened_linear_learner_moves_further_on_the_next_samples(algorithm, params) -> None:
    m = make_learner(_model(algorithm=algorithm, params=params))
    X, y = _trained(m, 3000, spread=3.0)  # (classes that overlap: a posterior that hardened)
    soft = m.copy()
    soft.soften(0.05)
    before = m.predict_many(X[-500:])
    swapped = (y + 1) % 4  # the world changes: every class now looks like the next
    for i in range(0, 96, 32):
        m.learn_many(X[i : i + 32], swapped[i : i + 32])
        soft.learn_many(X[i : i + 32], swapped[i : i + 32])
    moved = [float(np.abs(x.predict_many(X[-500:]) - before).mean()) for x in (m, soft)]
    assert moved[1] > 1.5 * moved[0], moved


def test_the_serving_predictor_agrees_with_predict_many(learner) -> None:
    X, _ = _trained(learner, 400)
    X = np.vstack([X, learner.schema.encode([{}])])  # the last row has no values at all
    X[5, 0] = 1e9  # past the clipping bounds
    predict = learner.predictor()
    np.testing.assert_allclose(predict(X), learner.predict_many(X), rtol=1e-9, atol=1e-12)
    for i in (0, 5, len(X) - 1):  # (one or two rows: a path of its own in the binary learner)
        np.testing.assert_allclose(predict(X[i : i + 1]), learner.predict_many(X[i : i + 1]),
                                   rtol=1e-9, atol=1e-12)  # fmt: skip
        np.testing.assert_allclose(predict(X[i : i + 2]), learner.predict_many(X[i : i + 2]),
                                   rtol=1e-9, atol=1e-12)  # fmt: skip


def test_clone_is_fresh_with_the_same_classes(learner) -> None:
    _trained(learner, 200)
    c = learner.clone()
    assert c.n_seen == 0 and c.classes == learner.classes and c.spec() == learner.spec()
    np.testing.assert_allclose(c.predict_many(learner.schema.encode([{}])), 0.25)


def test_one_vs_rest_probabilities_stay_finite_when_every_class_says_no() -> None:
    m = make_learner(_model(algorithm="ftrl"))
    m._w[:] = -1000.0  # (every class's margin far below zero)
    p = m.predict_many(m.schema.encode([{"a": 1.0, "b": 2.0, "c": 3.0}]))
    assert np.all(np.isfinite(p)) and p.sum() == pytest.approx(1.0)


# --------------------------------------------------------------------------- metrics
def test_scores_of_a_multiclass_model() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.0, 0.0, 1.0]])
    y = np.array([0.0, 1.0, 1.0, 0.0])
    s = scores("multiclass", p, y)
    assert s["count"] == 4 and s["accuracy"] == 0.5
    assert s["recall"] == [0.5, 0.5, None]  # (no row of class 2: no recall)
    expected = -np.mean(np.log([0.7, 0.8, 0.4, 1e-7]))  # (a probability of 0 is clipped)
    assert s["logloss"] == pytest.approx(expected)
    np.testing.assert_allclose(log_loss(p, y), -np.log([0.7, 0.8, 0.4, 1e-7]))
    # top-class calibration: confidences .7 .8 .5 1 against hits 1 1 0 0
    assert s["calibration"] == pytest.approx((0.3 + 0.2 + 0.5 + 1.0) / 4)
    assert recall(p[:0], y[:0]) == [None, None, None] and scores("multiclass", p[:0], y[:0]) == {
        "count": 0
    }


def test_rolling_metrics_and_prequential_take_class_probabilities() -> None:
    m = RollingMetrics("multiclass", window=3, n_classes=3)
    m.update(np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]]), np.array([0, 2]))
    m.update(np.array([[0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]), np.array([2, 1]))
    r = m.report()
    assert r["count"] == 3 and r["accuracy"] == pytest.approx(1 / 3) and m.total == 4
    assert r["recall"] == [None, 0.0, 0.5]
    with pytest.raises(ValueError, match="n_classes"):
        RollingMetrics("multiclass", window=3)
    learner = make_learner(_model())
    rows, y = _blobs(500)
    p = prequential(learner, learner.schema.encode(rows), y)
    assert p.shape == (500, 4) and scores("multiclass", p, y)["accuracy"] > 0.9
