"""The monitor of a multiclass model against a real redis-server: its logged answers are rows
of class probabilities, its labels class names; quality per track by class, concept drift on
the error, prediction drift on the predicted classes, versions compared by correctness."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from tests.helpers import LoggedRequest, manifest, monitor_for, summary_of
from tideline.algorithms import make_learner
from tideline.contracts import Keys
from tideline.monitoring.tracks import MIN_VERSIONS
from tideline.spec import parse
from tideline.store import ModelStore

pytestmark = pytest.mark.integration

CLASSES = ["cat", "dog", "fox", "owl"]
K = len(CLASSES)
FEATURES = [{"name": "a"}, {"name": "b"}, {"name": "c"}]
CENTRES = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0], [4.0, 4.0, 4.0]])


def _model(classes: list[str] = CLASSES, **spec):
    spec.setdefault("rollout", {"analysis": {"interval": "100ms", "minSamples": 200}})
    model = {"task": "multiclass", "algorithm": "sgd", "classes": classes, "features": FEATURES}
    return parse(manifest(name="zoo", model=model, **spec))


def keys(model) -> Keys:
    return Keys(model.namespace, model.name)


def _blobs(n: int, seed: int) -> tuple[list[dict], np.ndarray]:
    """Rows of four Gaussian classes around CENTRES, and their classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, size=n)
    X = CENTRES[y] + rng.normal(size=(n, 3))
    return [dict(zip("abc", r, strict=True)) for r in X.tolist()], y.astype(np.float64)


def _trained(model, rows, y):
    m = make_learner(model.spec.model.to_dict())
    X = m.schema.encode(rows)
    for i in range(0, len(y), 64):
        m.learn_many(X[i : i + 64], y[i : i + 64])
    return m


def _answers(classes: np.ndarray, top: float = 0.7) -> list[list[float]]:
    """Each row's k probabilities as a server logs them: ``top`` on its answer."""
    p = np.full((len(classes), K), (1.0 - top) / (K - 1))
    p[np.arange(len(classes)), classes.astype(np.intp)] = top
    return p.tolist()


def _log(r, model, ids, scores, *, track="stable", revision=None, version=0, shadow=None) -> None:
    req = LoggedRequest([{"a": 1.0, "b": 2.0, "c": 3.0}] * len(ids), ids=ids, scores=scores,
                        track=track, revision=revision or model.revision, version=version)  # fmt: skip
    req.meta.shadow = shadow
    req.write(r, keys(model))


def _feedback(r, model, ids, labels) -> None:
    pipe = r.pipeline()
    for i, label in zip(ids, labels, strict=True):
        pipe.xadd(keys(model).feedback, {"data": orjson.dumps({"id": i, "label": label})})
    pipe.execute()


def _names(y: np.ndarray) -> list[str]:
    return [CLASSES[int(c)] for c in y]


def test_each_track_gets_its_accuracy_log_loss_and_recall_by_class_name(r) -> None:
    model = _model()
    mon = monitor_for(model, r)
    mon.start()
    rng = np.random.default_rng(0)
    y = rng.integers(0, K, size=400).astype(float)
    expected = {}
    for track, right in (("stable", 0.9), ("canary", 0.6)):
        hit = rng.random(400) < right
        answer = np.where(hit, y, (y + 1) % K)
        ids = [f"{track}-{i}" for i in range(403)]  # three more rows: their labels are wrong
        shadow = None
        if track == "stable":  # a shadow answered the same rows, right half the time
            shadow_answer = np.where(rng.random(400) < 0.5, y, (y + 2) % K)
            shadow = ("shadowrev", 3, _answers(np.concatenate([shadow_answer, [0, 0, 0]])))
            expected["shadow"] = np.mean(shadow_answer == y)
        _log(r, model, ids, _answers(np.concatenate([answer, [0, 0, 0]])), track=track,
             revision=model.revision if track == "stable" else "canaryrev", shadow=shadow)  # fmt: skip
        labels: list = _names(y)
        labels[:50] = [int(c) for c in y[:50]]  # a class's index is a label too
        _feedback(r, model, ids, [*labels, "wolf", 7, 1.5])  # not classes of the model
        expected[track] = (hit, answer)
    for _ in range(5):
        mon.step(block_ms=50)
    h = summary_of(mon)
    for track in ("stable", "canary"):
        hit, answer = expected[track]
        t = h["tracks"][track]
        assert t["labelled"] == 400 and t["window"] == 400
        assert t["accuracy"] == pytest.approx(hit.mean())
        assert t["logloss"] == pytest.approx(-np.mean(np.where(hit, np.log(0.7), np.log(0.1))))
        assert set(t["recall"]) == set(CLASSES)
        for c, name in enumerate(CLASSES):
            assert t["recall"][name] == pytest.approx(np.mean(answer[y == c] == c))
        got = mon.metrics.registry.get_sample_value(
            "tideline_monitor_recall", {"track": track, "class": "dog"}
        )
        assert got == pytest.approx(t["recall"]["dog"])
        assert mon.metrics.registry.get_sample_value(
            "tideline_monitor_accuracy", {"track": track}
        ) == pytest.approx(t["accuracy"])
    assert h["tracks"]["shadow"]["accuracy"] == pytest.approx(expected["shadow"])
    assert "canaryrev:0" in h["versions"] and "recall" not in h["versions"]["canaryrev:0"]
    bad = mon.metrics.registry.get_sample_value("tideline_monitor_bad_log_entries_total")
    assert bad == 6, "three labels that are no class, on each of two tracks, left out"


@pytest.mark.parametrize(
    ("permuted", "detected"),
    [(True, True), (False, False)],
    ids=["the world renames the classes halfway (each label the next class): concept drift",
         "the same classes throughout: none"],
)  # fmt: skip
def test_concept_drift_is_the_multiclass_error_rising(r, permuted, detected) -> None:
    # the flag holds for 10 analysis intervals: 20 s, longer than this test on a busy machine
    model = _model(rollout={"analysis": {"interval": "2s"}})
    mon = monitor_for(model, r)
    mon.start()
    rng = np.random.default_rng(3)
    n = 8000
    truth = rng.integers(0, K, size=n).astype(float)
    answer = np.where(rng.random(n) < 0.85, truth, rng.integers(0, K, size=n))
    labels = truth.copy()
    if permuted:
        labels[n // 2 :] = (truth[n // 2 :] + 1) % K  # the model answers as before: wrong
    ids = [f"p{i}" for i in range(n)]
    for i in range(0, n, 500):
        _log(r, model, ids[i : i + 500], _answers(answer[i : i + 500]))
        _feedback(r, model, ids[i : i + 500], _names(labels[i : i + 500]))
        mon.step(block_ms=20)
    h = summary_of(mon)
    assert h["tracks"]["stable"]["labelled"] == n
    assert h["drift"]["concept"]["detected"] is detected
    kinds = [orjson.loads(e[1][b"data"])["kind"] for e in r.xrange(keys(model).driftlog)]
    assert ("concept" in kinds) is detected


@pytest.mark.parametrize(
    ("method", "shifted", "detected"),
    [("psi", True, True), ("ks", True, True), ("psi", False, False), ("ks", False, False)],
    ids=["psi: the answers move from mostly cat to mostly owl: prediction drift, naming both",
         "ks (the total variation of the class shares): the same shift, the same event",
         "psi: the same shares throughout: none",
         "ks: the same shares throughout: none"],
)  # fmt: skip
def test_prediction_drift_reads_the_predicted_class_distribution(
    r, method, shifted, detected
) -> None:
    model = _model(drift={"predictions": {"method": method, "window": 1000,
                                          "threshold": 0.2 if method == "psi" else 0.1}})  # fmt: skip
    mon = monitor_for(model, r)
    mon.start()
    time.sleep(0.01)  # (the monitor follows the log from after the millisecond it started)
    rng = np.random.default_rng(5)
    before, after = [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]
    for i in range(12):
        shares = after if shifted and i >= 6 else before
        answer = rng.choice(K, size=250, p=shares)
        # the probabilities change, the answers alone carry the shift
        _log(r, model, [f"{i}-{j}" for j in range(250)], _answers(answer, top=0.4 + 0.05 * i))
        mon.step(block_ms=10)
    h = summary_of(mon)
    assert mon.tracks["stable"].predictions == 3000
    assert h["drift"]["predictions"]["method"] == method
    assert h["drift"]["predictions"]["detected"] is detected
    events = [orjson.loads(e[1][b"data"]) for e in r.xrange(keys(model).driftlog)]
    fired = [e for e in events if e["kind"] == "predictions"]
    assert len(fired) == int(detected)
    if detected:
        moved = fired[0]["classes"]
        assert {"cat", "owl"} <= set(moved)
        assert moved["cat"]["reference"] > moved["cat"]["now"]
        assert moved["owl"]["reference"] < moved["owl"]["now"]


def _served_answers(r, model, store, version, rows, y, prefix) -> None:
    """Requests answered by ``version`` (its class probabilities logged), then their labels by
    class name."""
    served, _ = store.load(model.revision, version)
    ids = [f"{prefix}{i}" for i in range(len(rows))]
    LoggedRequest(rows, ids=ids, scores=served.predict_many(served.schema.encode(rows)).tolist(),
                  revision=model.revision, version=version).write(r, keys(model))  # fmt: skip
    _feedback(r, model, ids, _names(y))


def _accuracy(store, model, version, rows, y) -> float:
    m, _ = store.load(model.revision, version)
    return float(np.mean(m.predict_many(m.schema.encode(rows)).argmax(axis=1) == y))


def test_a_better_version_is_proven_over_a_worse_one_and_the_majority_class(r) -> None:
    """v1, lastGood, learned every class as the next one (a poisoning); v2 learned the truth,
    served, and was replaced by v3 before its labels came: v2 is the recent version, compared
    with lastGood and with the constant on the same labels."""
    model = _model()
    store = ModelStore(r, model.namespace, model.name)
    rows, y = _blobs(3000, seed=1)
    store.publish(model.revision, 1, _trained(model, rows, (y + 1) % K))
    store.set_pointer(model.revision, "lastGood", 1)
    store.publish(model.revision, 2, _trained(model, rows, y))
    mon = monitor_for(model, r)
    mon.start()
    test_rows, test_y = _blobs(600, seed=2)
    _served_answers(r, model, store, 2, test_rows, test_y, "a")
    store.publish(model.revision, 3, _trained(model, rows[:2000], y[:2000]))
    mon.step(block_ms=50)
    q = summary_of(mon)["quality"]
    c = q["candidates"]
    assert c["served"]["version"] == 3 and (c["recent"]["version"], c["lastGood"]["version"]) == (
        2,
        1,
    )
    acc1, acc2 = (_accuracy(store, model, v, test_rows, test_y) for v in (1, 2))
    assert acc2 > 0.9 and acc1 < 0.1
    assert c["recent"]["accuracy"] == pytest.approx(acc2)
    good = c["recent"]["versus"]["lastGood"]
    # correct v2 - correct v1 on each of the same 600 labels: accuracy points
    assert good["samples"] == 600 and good["difference"] == pytest.approx(acc2 - acc1)
    assert good["lower"] > 0.5
    majority = np.bincount(test_y.astype(np.intp), minlength=K).max() / 600
    assert c["constant"]["accuracy"] == pytest.approx(majority)
    constant = c["recent"]["versus"]["constant"]
    assert constant["difference"] == pytest.approx(acc2 - majority) and constant["lower"] > 0.4


def test_a_worse_served_version_is_shown_worse_than_lastgood_on_the_same_labels(r) -> None:
    model = _model()
    store = ModelStore(r, model.namespace, model.name)
    rows, y = _blobs(3000, seed=3)
    store.publish(model.revision, 1, _trained(model, rows, y))
    store.set_pointer(model.revision, "lastGood", 1)
    store.publish(model.revision, 2, _trained(model, rows, (y + 2) % K))  # poisoned, served
    mon = monitor_for(model, r)
    mon.start()
    test_rows, test_y = _blobs(800, seed=4)
    _served_answers(r, model, store, 2, test_rows, test_y, "b")
    mon.step(block_ms=50)
    mon.write()  # loads the candidates: served v2, lastGood v1, the best constant
    h = summary_of(mon)
    c = h["quality"]["candidates"]
    acc1, acc2 = (_accuracy(store, model, v, test_rows, test_y) for v in (1, 2))
    assert h["tracks"]["stable"]["accuracy"] == pytest.approx(acc2)
    vs = c["lastGood"]["vsServed"]
    assert vs["samples"] == 800 and vs["difference"] == pytest.approx(acc1 - acc2)
    assert vs["lower"] > 0.5, "what the guardrail rolls back on"


def test_a_learner_only_multiclass_model_is_watched_from_samples_labelled_by_name(r) -> None:
    model = _model()
    store = ModelStore(r, model.namespace, model.name)
    rows, y = _blobs(2000, seed=5)
    store.publish(model.revision, 0, _trained(model, rows, y))
    mon = monitor_for(model, r)
    mon.start()
    test_rows, test_y = _blobs(500, seed=6)
    pipe = r.pipeline(transaction=False)
    for row, label in zip(test_rows, _names(test_y), strict=True):
        pipe.xadd(keys(model).samples, {"data": orjson.dumps({"features": row, "label": label})})
    pipe.xadd(keys(model).samples, {"data": orjson.dumps({"features": test_rows[0],
                                                          "label": "wolf"})})  # fmt: skip
    pipe.execute()
    for _ in range(3):
        mon.step(block_ms=50)
    h = summary_of(mon)
    stable = h["tracks"]["stable"]
    assert stable["labelled"] == 500 and stable["version"] == 0, "wolf is no class: left out"
    assert stable["accuracy"] == pytest.approx(_accuracy(store, model, 0, test_rows, test_y))
    assert set(stable["recall"]) == set(CLASSES)
    assert h["quality"]["source"] == "samples" and h["quality"]["window"] == 500


def test_a_model_of_a_thousand_classes_holds_the_quality_of_few_versions(r) -> None:
    classes = [f"c{i}" for i in range(1000)]
    model = _model(classes, rollout={"analysis": {"interval": "1h"}})
    mon = monitor_for(model, r)
    mon.start()
    for version in range(3 * MIN_VERSIONS):
        ids = [f"v{version}-{i}" for i in range(2)]
        scores = np.full((2, 1000), 1 / 1000).tolist()
        _log(r, model, ids, scores, version=version)
        _feedback(r, model, ids, ["c1", "c999"])
        mon.step(block_ms=20)
    assert mon.tracks["stable"].labelled == 6 * MIN_VERSIONS
    # 2,000-row windows of 1,000 probabilities: 16 MB each, 8 of them at most
    assert len(mon.versions) == MIN_VERSIONS
    assert f"{model.revision}:{3 * MIN_VERSIONS - 1}" in mon.versions
    # prediction drift reads 50 predictions a class at least: 50,000, not the default 5,000
    assert mon.prediction_drift.window == 50_000
