"""A team's own learner behind the loop's interface: the contract, the adapter, River."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.helpers import manifest
from tideline.algorithms import make_learner
from tideline.algorithms.external import BadScores, ModelLoadError
from tideline.model import missing_methods, token
from tideline.spec import SpecError, parse

FEATURES = [{"name": "x"}, {"name": "c", "type": "categorical", "buckets": 16}]


def _custom(ref: str, task: str = "binary", **params: Any):  # type: ignore[no-untyped-def]
    return make_learner({"task": task, "algorithm": "custom", "features": FEATURES,
                         "custom": {"class": f"tests.models.teams:{ref}", "params": params}})  # fmt: skip


def _river(ref: str, task: str = "binary", features: Any = None, **params: Any):  # type: ignore[no-untyped-def]
    return make_learner({"task": task, "algorithm": "river", "features": features or [{"name": "a"}, {"name": "b"}],
                         "river": {"pipeline": ref, "params": params}})  # fmt: skip


def _stream(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.c_[rng.normal(size=n), rng.integers(-1, 16, n)]
    return X, (X[:, 0] > 0).astype(float)


# -- the manifest ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "path"),
    [
        ({"algorithm": "custom"}, "spec.model.custom: required with algorithm: custom"),
        ({"algorithm": "custom", "custom": {}}, "spec.model.custom.class: required"),
        ({"algorithm": "custom", "custom": {"class": "teams.model"}}, "spec.model.custom.class: must be package.module:Name"),
        ({"algorithm": "custom", "custom": {"class": "a:B", "params": [1]}}, "spec.model.custom.params: must be an object"),
        ({"algorithm": "custom", "custom": {"class": "a:B", "params": {"not-a-name": 1}}}, "spec.model.custom.params.not-a-name: must be a Python identifier"),
        ({"algorithm": "custom", "custom": {"class": "a:B", "params": {"x": float("nan")}}}, "spec.model.custom.params: must hold JSON values"),
        ({"algorithm": "custom", "custom": {"class": "a:B", "rate": 1}}, "spec.model.custom.rate: unknown field"),
        ({"algorithm": "custom", "custom": {"class": "a:B"}, "params": {"l2": 1}}, "spec.model.params: algorithm custom takes its parameters in spec.model.custom.params"),
        ({"algorithm": "sgd", "custom": {"class": "a:B"}}, "spec.model.custom: only with algorithm: custom"),
        ({"algorithm": "river", "river": {"class": "a:B"}}, "spec.model.river.pipeline: required"),
    ],
)  # fmt: skip
def test_the_manifest_names_what_is_wrong_with_an_external_model(model: dict, path: str) -> None:
    doc = manifest()
    doc["spec"]["model"].update(model)
    with pytest.raises(SpecError) as e:
        parse(doc)
    assert str(e.value).startswith(path)


def test_an_external_model_changes_the_revision_with_its_class_and_params() -> None:
    def rev(**custom: Any) -> str:
        doc = manifest()
        doc["spec"]["model"].update(algorithm="custom", custom=custom)
        return parse(doc).revision

    a = rev(**{"class": "a:B"})
    assert a == rev(**{"class": "a:B", "params": {}})
    assert len({a, rev(**{"class": "a:C"}), rev(**{"class": "a:B", "params": {"k": 1}})}) == 3


# -- loading -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ref", "params", "reason", "message"),
    [
        ("nowhere.at.all:Model", {}, "ImportFailed", "ModuleNotFoundError: No module named 'nowhere'"),
        ("tests.models.teams:Absent", {}, "ImportFailed", "tests.models.teams has no attribute Absent"),
        ("tests.models.teams:scaled_logistic", {}, "ImportFailed", "is not a class (a function)"),
        ("tests.models.teams:NoSave", {}, "MissingMethod", "tests.models.teams:NoSave has no save"),
        ("tests.models.teams:Mean", {"rate": 1}, "BadParams", "TypeError: Mean.__init__() got an unexpected keyword argument 'rate'"),
    ],
)  # fmt: skip
def test_a_model_that_cannot_load_says_why_in_one_line(ref, params, reason, message) -> None:  # type: ignore[no-untyped-def]
    module, _, name = ref.partition(":")
    with pytest.raises(ModelLoadError) as e:
        make_learner({"task": "binary", "algorithm": "custom", "features": FEATURES,
                      "custom": {"class": ref, "params": params}})  # fmt: skip
    assert e.value.reason == reason
    assert message in e.value.message and "\n" not in e.value.message


def test_missing_methods_are_named_in_the_contract_s_order() -> None:
    from tests.models.teams import Mean, NoSave

    assert missing_methods(NoSave) == ["save"]
    assert missing_methods(Mean) == []


# -- the loop's interface ----------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["sgd", "ftrl", "forest"])
def test_the_built_ins_implement_the_public_contract(algorithm: str) -> None:
    m = make_learner({"task": "binary", "algorithm": algorithm, "features": FEATURES})
    X, y = _stream(400)
    before = m.learn_predict(X[:200], y[:200])
    m.learn(X[200:], y[200:])
    assert before.shape == (200,) and m.n_seen == 400
    other = m.clone()
    other.load(m.save())
    np.testing.assert_array_equal(other.predict(X), m.predict(X))
    assert not missing_methods(type(m))


def test_a_custom_model_learns_saves_and_loads_through_the_adapter() -> None:
    m = _custom("Mean", prior=0.2)
    X, y = _stream(300)
    p = m.learn_predict_many(X, y, n=100)
    assert p.shape == (100,) and p[0] == 0.2 and m.n_seen == 300
    np.testing.assert_allclose(m.predict_many(X[:3]), y.mean())
    copy = m.copy()
    assert copy.n_seen == 300 and copy.spec() == m.spec()
    np.testing.assert_array_equal(copy.predict_many(X), m.predict_many(X))
    assert m.spec()["custom"] == {"class": "tests.models.teams:Mean", "params": {"prior": 0.2}}
    assert make_learner(m.spec()).predict_many(X[:1])[0] == 0.2  # the spec rebuilds it fresh


def test_a_dicts_model_gets_numbers_and_categorical_tokens_and_no_missing_key() -> None:
    m = _custom("DictMean")
    X = np.array([[1.5, 3.0], [2.0, -1.0]])
    m.learn_many(X, np.array([1.0, 0.0]))
    assert m.model.seen == [{"x": 1.5, "c": token(3)}, {"x": 2.0}]
    assert m.info.token("c", "fr") == token(int(m.schema.encode([{"c": "fr"}])[0, 1]))


@pytest.mark.parametrize(
    ("ref", "what"), [("Shapeless", r"shape \(3, 2\)"), ("NaNs", "not finite")]
)
def test_scores_that_cannot_be_served_are_refused(ref: str, what: str) -> None:
    m = _custom(ref)
    with pytest.raises(BadScores, match=what):
        m.predict_many(np.zeros((3, 2)))


def test_a_block_whose_learning_raises_leaves_the_model_as_it_was() -> None:
    m = _custom("Faulty")
    X, y = _stream(200)
    m.learn_many(X[:100], y[:100])
    state = m.get_state()
    X[150, 0] = 13.0
    with pytest.raises(ValueError, match="unlucky row"):
        m.learn_predict_batches(X[100:], y[100:], np.array([0, 40, 80, 100]))
    assert m.n_seen == 100
    assert {k: v.tobytes() for k, v in m.get_state().items()} == {
        k: v.tobytes() for k, v in state.items()
    }


# -- River --------------------------------------------------------------------------------
def test_a_river_pipeline_learns_as_river_does_on_its_own() -> None:
    from tests.models.teams import scaled_logistic

    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 2)) * [100.0, 0.01]
    y = (X[:, 0] / 100 - X[:, 1] / 0.01 > 0).astype(float)
    m = _river("tests.models.teams:scaled_logistic", lr=0.1)
    p = m.learn_predict_batches(X, y, np.r_[np.arange(0, 3000, 64), 3000])
    own = scaled_logistic(lr=0.1)
    expected = []
    for (a, b), label in zip(X.tolist(), y.tolist(), strict=True):
        expected.append(own.predict_proba_one({"a": a, "b": b}).get(True, 0.5))
        own.learn_one({"a": a, "b": b}, label == 1.0)
    np.testing.assert_allclose(p, expected)
    assert np.mean((p[1000:] > 0.5) == y[1000:]) > 0.95
    again = m.copy()
    np.testing.assert_array_equal(again.predict_many(X[:50]), m.predict_many(X[:50]))


def test_a_river_regressor_and_an_estimator_given_as_such() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(2000, 2))
    y = 3.0 * X[:, 0] - X[:, 1] + 1.0
    m = _river("tests.models.teams:scaled_linear", task="regression", lr=0.02)
    p = m.learn_predict_batches(X, y, np.array([0, 1000, 2000]))
    assert np.mean((p[-500:] - y[-500:]) ** 2) < 0.05
    est = _river("tests.models.teams:ESTIMATOR")
    est.learn_many(X, (X[:, 0] > 0).astype(float))
    from tests.models import teams

    assert not teams.ESTIMATOR._weights  # cloned: the module's own learned nothing
    assert est.predict_many(np.array([[2.0, 0.0]]))[0] > 0.5


@pytest.mark.parametrize(
    ("ref", "task", "message"),
    [
        ("river.linear_model:LinearRegression", "binary", "a binary model needs a River classifier"),
        ("river.linear_model:LogisticRegression", "regression", "a regression model needs a River regressor"),
        ("tests.models.teams:scaled_logistic", "binary", "unexpected keyword argument 'nope'"),
    ],
)  # fmt: skip
def test_a_river_estimator_of_the_wrong_kind_is_bad_params(
    ref: str, task: str, message: str
) -> None:
    params = {"nope": 1} if "teams" in ref else {}
    with pytest.raises(ModelLoadError) as e:
        _river(ref, task=task, **params)
    assert e.value.reason == "BadParams" and message in e.value.message


def test_a_canary_warm_starts_from_the_same_class_and_from_a_river_model_only_unchanged() -> None:
    from tideline_operator.reconcile import warm_start_compatible

    def model(algorithm: str, ref: str, **params: Any):  # type: ignore[no-untyped-def]
        doc = manifest()
        doc["spec"]["model"].update(algorithm=algorithm)
        doc["spec"]["model"][algorithm] = {"class" if algorithm == "custom" else "pipeline": ref,
                                           "params": params}  # fmt: skip
        return parse(doc)

    stable = model("custom", "teams.a:Model", rate=1)
    assert warm_start_compatible(stable, model("custom", "teams.a:Model", rate=2))
    assert not warm_start_compatible(stable, model("custom", "teams.b:Model", rate=1))
    river = model("river", "teams.a:make", lr=0.1)
    assert warm_start_compatible(river, model("river", "teams.a:make", lr=0.1))
    assert not warm_start_compatible(river, model("river", "teams.a:make", lr=0.2))
    assert not warm_start_compatible(river, stable)


# -- multiclass ---------------------------------------------------------------------------
CLASSES = ["north", "east", "south"]


def _classes_stream(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows (a, b) of three classes around three centres."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(float)
    centres = np.array([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    return centres[y.astype(int)] + rng.normal(size=(n, 2)), y


def _multiclass(algorithm: str, ref: str, **params: Any):  # type: ignore[no-untyped-def]
    key = "class" if algorithm == "custom" else "pipeline"
    return make_learner({"task": "multiclass", "classes": CLASSES, "algorithm": algorithm,
                         "features": [{"name": "a"}, {"name": "b"}],
                         algorithm: {key: ref, "params": params}})  # fmt: skip


@pytest.mark.parametrize(
    ("algorithm", "ref"),
    [("custom", "tests.models.teams:Centroids"), ("river", "tests.models.teams:one_vs_rest"),
     ("river", "river.tree:HoeffdingTreeClassifier")],
    ids=["a team's class of the contract", "a River pipeline, one against the rest",
         "a River Hoeffding tree"],
)  # fmt: skip
def test_a_multiclass_model_of_a_team_s_own_learns_and_serves_a_probability_per_class(
    algorithm: str, ref: str
) -> None:
    X, y = _classes_stream(3000)
    m = _multiclass(algorithm, ref)
    assert m.info.classes == tuple(CLASSES) and m.spec()["classes"] == CLASSES
    p = m.learn_predict_batches(X, y, np.r_[np.arange(0, 3000, 64), 3000])
    assert p.shape == (3000, 3) and np.allclose(p.sum(axis=1), 1.0) and (p >= 0.0).all()
    np.testing.assert_allclose(p[0], 1 / 3)  # nothing learned: every class alike
    assert np.mean(p[1500:].argmax(axis=1) == y[1500:]) > 0.95
    Xt, yt = _classes_stream(500, seed=1)
    assert np.mean(m.predict_many(Xt).argmax(axis=1) == yt) > 0.95
    assert m.predict_many(Xt[:0]).shape == (0, 3)
    resumed = make_learner(m.spec())  # a fresh process: the spec, then the state
    resumed.set_state(m.get_state())
    np.testing.assert_array_equal(resumed.predict_many(Xt), m.predict_many(Xt))


def test_a_river_multiclass_pipeline_learns_class_names_as_river_does_on_its_own() -> None:
    from tests.models.teams import one_vs_rest

    X, y = _classes_stream(1000)
    m = _multiclass("river", "tests.models.teams:one_vs_rest", lr=0.05)
    p = m.learn_predict_batches(X, y, np.array([0, 500, 1000]))
    own, expected = one_vs_rest(lr=0.05), []
    for (a, b), label in zip(X.tolist(), y.tolist(), strict=True):
        proba = own.predict_proba_one({"a": a, "b": b})
        row = np.array([proba.get(c, 0.0) for c in CLASSES])
        expected.append(row / row.sum() if row.sum() > 0 else np.full(3, 1 / 3))
        own.learn_one({"a": a, "b": b}, CLASSES[int(label)])  # River's own shape: names
    np.testing.assert_allclose(p, expected)
    assert sorted(m.model.estimator[-1].classifiers) == sorted(CLASSES)


def test_a_class_river_has_not_seen_scores_0_and_rows_are_scaled_to_sum_to_1() -> None:
    m = _multiclass("river", "tests.models.teams:one_vs_rest")
    X, y = _classes_stream(400)
    seen = y != 1.0  # ("east" never learned)
    m.learn_many(X[seen], y[seen])
    p = m.predict_many(X[:20])
    assert (p[:, 1] == 0.0).all() and np.allclose(p.sum(axis=1), 1.0)


def test_a_custom_model_s_scores_are_scaled_to_sum_to_1() -> None:
    m = _multiclass("custom", "tests.models.teams:Votes")
    m.learn_many(np.zeros((4, 2)), np.array([0.0, 0.0, 2.0, 0.0]))
    np.testing.assert_array_equal(m.predict_many(np.zeros((2, 2))), [[0.75, 0.0, 0.25]] * 2)


@pytest.mark.parametrize(
    ("ref", "what"),
    [("Mean", r"scores of shape \(3,\) for 3 rows \(a multiclass model of 3 classes gives \(3, 3\)\)"),
     ("Shapeless", r"scores of shape \(3, 2\)"),
     ("NegativeVotes", "a negative probability"),
     ("Votes", "a row of probabilities that are all 0")],
    ids=["one score a row", "two scores a row for three classes", "negative probabilities",
         "a row of zeros: no class at all"],
)  # fmt: skip
def test_multiclass_scores_that_cannot_be_served_are_refused(ref: str, what: str) -> None:
    m = _multiclass("custom", f"tests.models.teams:{ref}")
    with pytest.raises(BadScores, match=what):
        m.predict_many(np.zeros((3, 2)))


def test_a_binary_river_classifier_cannot_be_a_multiclass_model() -> None:
    with pytest.raises(ModelLoadError) as e:
        _multiclass("river", "river.linear_model:LogisticRegression")
    assert e.value.reason == "BadParams"
    assert "a multiclass model needs a River classifier of many classes" in e.value.message
    assert "river.multiclass.OneVsRestClassifier" in e.value.message


@pytest.mark.parametrize("algorithm", ["custom", "river"])
def test_a_multiclass_manifest_of_a_team_s_own_model_parses(algorithm: str) -> None:
    doc = manifest()
    key = "class" if algorithm == "custom" else "pipeline"
    doc["spec"]["model"].update(task="multiclass", classes=CLASSES, algorithm=algorithm,
                                **{algorithm: {key: "teams.model:make"}})  # fmt: skip
    assert parse(doc).spec.model.classes == tuple(CLASSES)
