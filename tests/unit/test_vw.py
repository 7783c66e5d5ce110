"""Vowpal Wabbit (``algorithm: vw``): the manifest, the model, the loop's interface."""

from __future__ import annotations

import sys
import tempfile
from typing import Any

import numpy as np
import pytest

from tests.helpers import manifest
from tideline.algorithms import make_learner
from tideline.algorithms.external import ModelLoadError, VWLearner
from tideline.model import ModelInfo
from tideline.spec import Feature, SpecError, VWParams, parse, parse_model

pytest.importorskip("vowpalwabbit")
from tideline.algorithms.vw import VWModel  # noqa: E402 - (after the skip: an extra)

FEATURES = [{"name": "x"}, {"name": "w"}, {"name": "c", "type": "categorical", "buckets": 16}]
INFO = ModelInfo("binary", tuple(Feature(**f) for f in FEATURES))


def _vw(args: str = "", task: str = "binary", classes: list[str] | None = None) -> Any:
    return make_learner({"task": task, "algorithm": "vw", "features": FEATURES,
                         "vw": {"args": args}, "classes": classes})  # fmt: skip


def _stream(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows (x, w, c) with the label a separable function of all three (c: -1 is missing)."""
    rng = np.random.default_rng(seed)
    X = np.c_[rng.normal(size=(n, 2)), rng.integers(-1, 16, n)]
    y = (X[:, 0] - 2.0 * X[:, 1] + np.where(X[:, 2] % 2 == 0, 1.0, -1.0) > 0).astype(float)
    return X, y


def _edges(n: int, size: int = 64) -> np.ndarray:
    return np.r_[np.arange(0, n, size), n]


# -- the manifest ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"vw": {"args": "-d train.vw"}}, "spec.model.vw.args: -d (--data) is refused: tideline feeds VW the stream's rows"),
        ({"vw": {"args": "--data=train.vw"}}, "spec.model.vw.args: --data is refused"),
        ({"vw": {"args": "--passes 3 -c"}}, "spec.model.vw.args: --passes is refused: tideline feeds VW the stream's rows, in VW's text format, in one pass"),
        ({"vw": {"args": "-b 20 -cfoo"}}, "spec.model.vw.args: -c (--cache) is refused"),
        ({"vw": {"args": "-f model.vw"}}, "spec.model.vw.args: -f (--final_regressor) is refused: tideline keeps the model's state"),
        ({"vw": {"args": "-i model.vw"}}, "spec.model.vw.args: -i (--initial_regressor) is refused"),
        ({"vw": {"args": "--save_resume"}}, "spec.model.vw.args: --save_resume is refused: tideline keeps the model's state"),
        ({"vw": {"args": "--preserve_performance_counters"}}, "spec.model.vw.args: --preserve_performance_counters is refused"),
        ({"vw": {"args": "--quiet"}}, "spec.model.vw.args: --quiet is refused: it writes files or output"),
        ({"vw": {"args": "-p /dev/stdout"}}, "spec.model.vw.args: -p (--predictions) is refused: it writes files or output"),
        ({"vw": {"args": "--invert_hash readable.txt"}}, "spec.model.vw.args: --invert_hash is refused"),
        ({"vw": {"args": "--daemon --port 26542"}}, "spec.model.vw.args: --daemon is refused: a VW server or cluster"),
        ({"vw": {"args": "--dictionary c:words.txt"}}, "spec.model.vw.args: --dictionary is refused: it reads files"),
        ({"vw": {"args": "-t"}}, "spec.model.vw.args: -t (--testonly) is refused: VW would not learn"),
        ({"vw": {"args": "--link identity"}}, "spec.model.vw.args: --link is refused: tideline sets the link from the loss"),
        ({"vw": {"args": "--binary"}}, "spec.model.vw.args: --binary is refused"),
        ({"vw": {"args": "train.vw --adaptive"}}, "spec.model.vw.args: must start with an option: VW reads a leading word as a data file (got 'train.vw')"),
        ({"vw": {"args": "--loss_function hinge"}}, "spec.model.vw.args: --loss_function hinge does not fit task binary: it learns with logistic"),
        ({"task": "regression", "vw": {"args": "--loss_function=logistic"}}, "spec.model.vw.args: --loss_function logistic does not fit task regression: it learns with one of squared, classic, quantile, expectile, poisson"),
        ({"vw": {"args": "-b 30"}}, "spec.model.vw.args: -b (--bit_precision) must be 1 to 24 (got 30)"),
        ({"vw": {"args": "-bx"}}, "spec.model.vw.args: -b (--bit_precision) must be 1 to 24 (got x)"),
        ({"vw": {"args": ["-b", "20"]}}, "spec.model.vw.args: must be a string of VW's arguments (got list)"),
        ({"vw": {"arg": "-b 20"}}, "spec.model.vw.arg: unknown field (did you mean args?)"),
        ({"params": {"l2": 1}}, "spec.model.params: algorithm vw takes its parameters in spec.model.vw.args"),
        ({"task": "multiclass", "classes": ["a", "b", "c"], "vw": {"args": "--oaa 4"}}, "spec.model.vw.args: --oaa 4 does not fit the 3 classes of spec.model.classes: --oaa 3, or leave it out (tideline adds it)"),
        ({"task": "multiclass", "classes": ["a", "b", "c"], "vw": {"args": "--loss_function squared"}}, "spec.model.vw.args: --loss_function squared does not fit task multiclass: it learns with logistic"),
        ({"task": "multiclass", "classes": ["a", "b", "c"], "vw": {"args": "--oaa 3 --indexing 0"}}, "spec.model.vw.args: --indexing is refused: tideline writes a multiclass label as its class's index plus one"),
        ({"algorithm": "sgd", "vw": {"args": "-b 20"}}, "spec.model.vw: only with algorithm: vw (got sgd)"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)  # fmt: skip
def test_the_manifest_refuses_vw_arguments_tideline_owns_or_that_break_the_loop(
    model: dict, message: str
) -> None:
    doc = manifest()
    doc["spec"]["model"].update({"algorithm": "vw", **model})
    with pytest.raises(SpecError) as e:
        parse(doc)
    assert str(e.value).startswith(message)


def test_a_vw_model_parses_with_or_without_arguments_and_its_args_change_the_revision() -> None:
    def parsed(**model: Any):  # type: ignore[no-untyped-def]
        doc = manifest()
        doc["spec"]["model"].update(algorithm="vw", **model)
        return parse(doc)

    bare = parsed()
    assert bare.spec.model.params == VWParams("") and bare.spec.model.external
    assert bare.spec.model.to_dict()["vw"] == {"args": ""}
    tuned = parsed(vw={"args": "  -b 20   -q nc --l2 1e-6 "})
    assert tuned.spec.model.params.args == "-b 20 -q nc --l2 1e-6"  # whitespace collapsed
    assert tuned.revision == parsed(vw={"args": "-b 20 -q nc --l2 1e-6"}).revision
    assert len({bare.revision, tuned.revision, parsed(vw={"args": "-b 21"}).revision}) == 3
    assert parsed(vw={}).revision == bare.revision
    regression = parse_model({"task": "regression", "algorithm": "vw", "features": FEATURES,
                              "vw": {"args": "--loss_function quantile --quantile_tau 0.9"}})  # fmt: skip
    assert regression.params.loss("regression") == "quantile"


def test_the_spec_round_trips_through_make_learner() -> None:
    m = _vw("-b 20 --l2 1e-7")
    assert isinstance(m, VWLearner)
    assert m.spec()["vw"] == {"args": "-b 20 --l2 1e-7"}
    assert make_learner(m.spec()).spec() == m.spec() == parse_model(m.spec()).to_dict()


def test_a_canary_warm_starts_from_a_vw_model_only_when_its_arguments_are_unchanged() -> None:
    from tideline_operator.reconcile import warm_start_compatible

    def model(args: str | None):  # type: ignore[no-untyped-def]
        doc = manifest()
        doc["spec"]["model"].update(algorithm="vw")
        if args is not None:
            doc["spec"]["model"]["vw"] = {"args": args}
        return parse(doc)

    stable = model("-b 20")
    assert warm_start_compatible(stable, model("-b  20"))
    assert not warm_start_compatible(stable, model("-b 20 --l2 1e-6"))
    assert not warm_start_compatible(stable, model(None))
    assert warm_start_compatible(model(None), model(""))


# -- loading -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("--bogus", "RuntimeError: unrecognised option '--bogus'"),
        ("--loss_function logistic --l2", "RuntimeError: "),
        ("--adaptive no-such-file.vw", "RuntimeError: Failed to open input data file 'no-such-file.vw'"),
        ("--oaa 3", "ValueError: with --oaa 3, VW predicts MULTICLASS from MULTICLASS labels; a binary model needs SCALAR from SIMPLE (one-against-all is task: multiclass, with spec.model.classes)"),
        ("--cb 2", "ValueError: with --cb 2, VW predicts MULTICLASS from CONTEXTUAL_BANDIT labels; a binary model needs SCALAR from SIMPLE"),
    ],
    ids=["an option VW does not know", "an option without its value", "a word VW reads as a data file",
         "multiclass one-against-all", "a contextual bandit"],
)  # fmt: skip
def test_vw_arguments_that_vw_refuses_are_bad_params_with_its_last_line(
    args: str, message: str
) -> None:
    with pytest.raises(ModelLoadError) as e:
        _vw(args)
    assert e.value.reason == "BadParams"
    assert e.value.message.startswith(message) and "\n" not in e.value.message


def test_without_the_vw_extra_the_model_cannot_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tideline.algorithms.vw", None)
    with pytest.raises(ModelLoadError) as e:
        _vw()
    assert e.value.reason == "ImportFailed" and "install tideline[vw]" in e.value.message


# -- the model ---------------------------------------------------------------------------
def test_a_binary_model_learns_a_separable_problem_and_serves_probabilities() -> None:
    X, y = _stream(6000)
    m = _vw()
    p = m.learn_predict_batches(X, y, _edges(6000))
    assert np.mean((p[3000:] > 0.5) == y[3000:]) > 0.97
    Xt, yt = _stream(2000, seed=1)
    q = m.predict_many(Xt)
    assert np.mean((q > 0.5) == yt) > 0.97
    extreme = np.array([[1e12, -1e12, 3.0], [-1e12, 1e12, -1.0], [0.0, 0.0, -1.0]])
    r = m.predict_many(extreme)
    assert np.isfinite(r).all() and ((r >= 0.0) & (r <= 1.0)).all()
    assert r[0] > 0.99 and r[1] < 0.01


@pytest.mark.parametrize(
    ("args", "mae"),
    [
        ("", 0.05),
        ("--loss_function classic", 0.05),
        ("--ftrl", 0.01),
        ("--loss_function quantile", 0.05),
    ],
    ids=["squared loss, VW's defaults", "classic squared loss", "ftrl", "quantile loss"],
)
def test_a_regression_learns_a_linear_target(args: str, mae: float) -> None:
    rng = np.random.default_rng(2)
    X = np.c_[rng.normal(size=(8000, 2)), rng.integers(0, 16, 8000)]
    y = 3.0 * X[:, 0] - X[:, 1] + 1.0 + 0.5 * (X[:, 2] == 3)
    m = _vw(args, task="regression")
    p = m.learn_predict_batches(X, y, _edges(8000, 256))
    assert np.mean(np.abs(p[-2000:] - y[-2000:])) < mae


def test_the_adapter_feeds_vw_the_text_format_vw_would_read_on_its_own() -> None:
    from vowpalwabbit import Workspace

    X, y = _stream(1500)
    m = _vw("-q nc")
    p = m.learn_predict_many(X, y)
    own = Workspace("--loss_function logistic --link logistic --quiet -q nc")
    expected = []
    for (x, w, c), label in zip(X.tolist(), y.tolist(), strict=True):
        cat = f" c={int(c)}" if c >= 0 else ""
        ex = own.parse(f"{1 if label else -1} |n x:{x:.9g} w:{w:.9g} |c{cat}")
        own.learn(ex)
        expected.append(ex.get_simplelabel_prediction())
        own.finish_example(ex)
    np.testing.assert_array_equal(p, expected)  # (-q nc: the namespaces as documented)


def test_rows_are_written_in_vw_text_format_with_reserved_characters_escaped() -> None:
    info = ModelInfo("regression", (Feature("unit price|eur"), Feature("a:b%"),
                                    Feature("c", "categorical", buckets=8)))  # fmt: skip
    m = VWModel(info)
    X = np.array([[1.5, -2.0, 3.0], [1e-7, 0.0, -1.0]])
    assert m._labelled(X, np.array([2.5, -1.0])) == [
        "2.5 |n unit%20price%7Ceur:1.5 a%3Ab%25:-2 |c c=3",
        "-1 |n unit%20price%7Ceur:1e-07 a%3Ab%25:0 |c",
    ]


def test_learn_predict_gives_each_row_s_score_before_it_was_learned() -> None:
    X, y = _stream(600)
    a, b = VWModel(INFO), VWModel(INFO)
    a.learn(X[:500], y[:500])
    b.learn(X[:500], y[:500])
    before = []
    for i in range(500, 600):
        before.append(a.predict(X[i : i + 1])[0])
        a.learn(X[i : i + 1], y[i : i + 1])
    np.testing.assert_array_equal(b.learn_predict(X[500:], y[500:]), before)


@pytest.mark.parametrize(
    ("args", "same_bytes"),
    [("", True), ("-b 20 -q nc --l2 1e-7", True), ("--ftrl", True), ("--coin", True),
     ("--interactions nn --lrq nc2", False)],
    ids=["VW's defaults (adaptive, normalised, invariant)", "interactions and l2",
         "ftrl", "coin betting", "interactions and a low-rank quadratic"],
)  # fmt: skip
def test_a_saved_model_predicts_and_goes_on_learning_exactly_as_an_unbroken_one(
    args: str, same_bytes: bool
) -> None:
    X, y = _stream(3000)
    unbroken = VWModel(INFO, args)
    p_unbroken = unbroken.learn_predict(X, y)
    first = VWModel(INFO, args)
    p_first = first.learn_predict(X[:1500], y[:1500])
    loaded = VWModel(INFO, args)
    loaded.load(first.save())
    p_rest = loaded.learn_predict(X[1500:], y[1500:])
    np.testing.assert_array_equal(np.r_[p_first, p_rest], p_unbroken)
    # its counters too (--preserve_performance_counters); VW writes --lrq into the model
    # once more at every load (what it learns is the same)
    assert (loaded.save() == unbroken.save()) is same_bytes
    served = VWModel(INFO, args)
    served.load(unbroken.save())
    np.testing.assert_array_equal(served.predict(X), unbroken.predict(X))
    # predicting moves VW's counters of examples seen, never what it learned
    np.testing.assert_array_equal(served.learn_predict(X, y), unbroken.learn_predict(X, y))


def test_the_loop_s_interface_learns_in_batches_and_resumes_from_its_state() -> None:
    X, y = _stream(4000)
    unbroken = _vw("-b 19")
    p_unbroken = unbroken.learn_predict_batches(X, y, _edges(4000))
    m = _vw("-b 19")
    p = m.learn_predict_batches(X[:2000], y[:2000], _edges(2000))
    state = m.get_state()
    resumed = make_learner(m.spec())  # a fresh process: the spec, then the state
    resumed.set_state(state)
    assert resumed.n_seen == 2000
    p = np.r_[p, resumed.learn_predict_batches(X[2000:], y[2000:], _edges(2000))]
    np.testing.assert_array_equal(p, p_unbroken)
    assert resumed.n_seen == unbroken.n_seen == 4000
    np.testing.assert_array_equal(resumed.predict_many(X[:100]), unbroken.predict_many(X[:100]))
    copy = unbroken.copy()
    np.testing.assert_array_equal(copy.predict_many(X[:100]), unbroken.predict_many(X[:100]))


def test_vw_writes_nothing_to_stdout_or_stderr_and_nothing_outside_a_temporary_directory(
    capfd: pytest.CaptureFixture[str], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    X, y = _stream(500)
    m = _vw("-b 18")
    m.learn_predict_batches(X, y, _edges(500))
    m.set_state(m.get_state())
    m.predict_many(X)
    del m
    assert capfd.readouterr() == ("", "")
    assert list(tmp_path.iterdir()) == []


# -- multiclass ---------------------------------------------------------------------------
CLASSES = ["north", "east", "south"]


def _classes_stream(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows (x, w, c) of three classes, linearly separable: the largest of x, w and -(x + w)."""
    rng = np.random.default_rng(seed)
    X = np.c_[rng.normal(size=(n, 2)), rng.integers(-1, 16, n)]
    y = np.c_[X[:, 0], X[:, 1], -X[:, 0] - X[:, 1]].argmax(axis=1).astype(float)
    return X, y


@pytest.mark.parametrize(
    "args", ["", "--oaa 3", "--oaa 3 --probabilities -b 20"],
    ids=["--oaa left out: tideline adds it", "--oaa given", "--oaa and --probabilities given"],
)  # fmt: skip
def test_a_multiclass_model_learns_a_separable_stream_one_against_all(args: str) -> None:
    X, y = _classes_stream(9000)
    m = _vw(args, task="multiclass", classes=CLASSES)
    p = m.learn_predict_batches(X, y, _edges(9000))
    assert p.shape == (9000, 3) and np.allclose(p.sum(axis=1), 1.0) and (p >= 0.0).all()
    assert np.mean(p[4500:].argmax(axis=1) == y[4500:]) > 0.95
    Xt, yt = _classes_stream(2000, seed=1)
    q = m.predict_many(Xt)
    assert q.shape == (2000, 3) and np.mean(q.argmax(axis=1) == yt) > 0.95
    assert m.predict_many(Xt[:0]).shape == (0, 3)


@pytest.mark.parametrize(
    ("args", "exact"),
    [("-b 19 --adaptive", True), ("--ftrl", True), ("", False)],
    ids=["adaptive: exactly", "ftrl: exactly",
         "VW's defaults: close (its --normalized state under --oaa is not all in the file)"],
)  # fmt: skip
def test_a_multiclass_model_writes_labels_1_to_k_and_resumes_from_its_state(
    args: str, exact: bool
) -> None:
    X, y = _classes_stream(3000)
    m = _vw(args, task="multiclass", classes=CLASSES)
    lines = m.model._labelled(X[:3], np.array([0.0, 1.0, 2.0]))
    assert [line.split(" ")[0] for line in lines] == ["1", "2", "3"]
    unbroken = _vw(args, task="multiclass", classes=CLASSES)
    p_unbroken = unbroken.learn_predict_batches(X, y, _edges(3000))
    p = m.learn_predict_batches(X[:1500], y[:1500], _edges(1500))
    assert m.spec()["classes"] == CLASSES
    resumed = make_learner(m.spec())  # a fresh process: the spec, then the state
    resumed.set_state(m.get_state())
    p = np.r_[p, resumed.learn_predict_batches(X[1500:], y[1500:], _edges(1500))]
    if exact:
        np.testing.assert_array_equal(p, p_unbroken)
    else:
        np.testing.assert_allclose(p, p_unbroken, atol=0.01)


def test_vw_one_against_all_with_other_classes_than_the_manifest_s_cannot_load() -> None:
    info = ModelInfo("multiclass", INFO.features, tuple(CLASSES))
    with pytest.raises(RuntimeError, match="Disagreeing option values for 'oaa'"):
        VWModel(info, "--oaa 4")  # (the parser refuses it first: see the manifest's table)
