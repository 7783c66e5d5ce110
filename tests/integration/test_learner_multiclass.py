"""A multiclass model in the learner process, against a real redis-server: class names on the
samples and feedback streams, a probability per class in every version it publishes, and a
label that is no class dead-lettered with its reason."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from tests.helpers import LoggedRequest, learn_until, manifest, wait_until
from tideline.pods.learner import LearnerProcess
from tideline.samples import one, pack
from tideline.signing import KEY_ENV
from tideline.spec import SpecError, parse
from tideline.store import learner_to_blob

pytestmark = pytest.mark.integration
CLASSES = ["cat", "dog", "eel"]
FEATURES = [{"name": "a"}, {"name": "b"}, {"name": "shop", "type": "categorical", "buckets": 8}]
REASON = "invalid label: 'fox' is not a class of this model (classes: cat, dog, eel)"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "a-signing-key-for-the-tests-0123456789")


def _doc(model: dict, **learning) -> dict:  # type: ignore[no-untyped-def]
    doc = manifest(learning={"publishEvery": 500, "maxBatchDelay": "20ms", **learning})
    doc["spec"]["model"] = {"task": "multiclass", "classes": CLASSES, "features": FEATURES,
                            **model}  # fmt: skip
    return doc


def _proc(r, model: dict, **learning) -> LearnerProcess:  # type: ignore[no-untyped-def]
    p = LearnerProcess(parse(_doc(model, **learning)), r, checkpoint_seconds=0.0)
    p.start()
    return p


def _stream(n: int, seed: int = 0) -> tuple[list[dict], list[str]]:
    """Rows of three classes, linearly separable in (a, b); labels their class names."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = np.c_[X[:, 0], X[:, 1], -X[:, 0] - X[:, 1]].argmax(axis=1)
    shops = rng.integers(0, 5, n)
    rows = [{"a": a, "b": b, "shop": f"s{s}"} for (a, b), s in zip(X.tolist(), shops, strict=True)]
    return rows, [CLASSES[i] for i in y]


def _push(r, stream: str, rows: list[dict], labels: list, packed: int = 0) -> None:  # type: ignore[no-untyped-def]
    """One-row entries, or packed ones of ``packed`` rows (what ``:learn`` writes)."""
    pipe = r.pipeline(transaction=False)
    if packed:
        for i in range(0, len(rows), packed):
            pipe.xadd(stream, {"data": pack(rows[i : i + packed], labels[i : i + packed])})
    else:
        for row, label in zip(rows, labels, strict=True):
            pipe.xadd(stream, {"data": one(row, label)})
    pipe.execute()


def _letters(r, p: LearnerProcess) -> list[dict]:  # type: ignore[no-untyped-def]
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange(p.keys.deadletter)]


@pytest.mark.parametrize("packed", [0, 50], ids=["one-row entries", "packed entries"])
def test_a_multiclass_model_learns_class_names_and_publishes_a_probability_per_class(
    r, packed: int
) -> None:
    p = _proc(r, {"algorithm": "sgd"})
    rows, labels = _stream(3000)
    labels[1234] = "fox"  # no class of the model's: that row alone is refused
    _push(r, p.keys.samples, rows, labels, packed)
    learn_until(p, lambda: p.counters["samples"] + p.counters["invalid"] == 3000)
    assert (p.counters["samples"], p.counters["invalid"]) == (2999, 1)
    assert r.xpending(p.keys.samples, p.group)["pending"] == 0
    [letter] = _letters(r, p)
    assert letter["reason"] == REASON and letter["stream"] == p.keys.samples
    # the rolling quality and the gate read (n, k) scores
    quality = orjson.loads(r.hget(p.keys.learner(p.revision), "quality"))
    assert quality["accuracy"] > 0.9 and len(quality["recall"]) == 3
    assert len(p.training.gate_live) == len(p.training.gate_served) == 2000 and p.training.gate()[0]
    # every version published serves a probability per class
    latest = p.store.pointers(p.revision).latest
    assert latest is not None and latest >= 5
    version, meta = p.store.load(p.revision, latest)
    assert meta["model"]["classes"] == CLASSES and meta["quality_accuracy"] > 0.9
    probe, truth = _stream(500, seed=1)
    scores = version.predict_many(version.schema.encode(probe))
    assert scores.shape == (500, 3) and np.allclose(scores.sum(axis=1), 1.0)
    assert np.mean(scores.argmax(axis=1) == [CLASSES.index(c) for c in truth]) > 0.9


def test_feedback_labels_are_class_names_joined_with_their_predictions(r) -> None:
    p = _proc(r, {"algorithm": "sgd"})
    k = p.keys
    req = LoggedRequest([{"a": 2.0, "b": 0.0}, {"a": 0.0, "b": 2.0}, {"a": -2.0, "b": -2.0}],
                        scores=[[0.4, 0.3, 0.3]] * 3).write(r, k)  # fmt: skip
    r.xadd(k.feedback, {"data": orjson.dumps({"id": req.ids[0], "label": "cat"})})
    r.xadd(k.feedback, {"data": orjson.dumps({"id": req.ids[1], "label": 1})})  # (an index)
    bad = r.xadd(k.feedback, {"data": orjson.dumps({"id": req.ids[2], "label": "fox"})})
    learn_until(p, lambda: p.counters["samples"] + p.counters["invalid"] == 3)
    assert (p.counters["samples"], p.counters["invalid"]) == (2, 1)
    assert p.training.replay.y[: p.training.replay.filled].tolist() == [0.0, 1.0]
    [letter] = _letters(r, p)
    assert letter["entry"] == bad.decode()
    assert (
        letter["reason"] == "invalid: 'fox' is not a class of this model (classes: cat, dog, eel)"
    )
    assert r.xpending(k.feedback, p.group)["pending"] == 0


def test_a_river_multiclass_pipeline_learns_exactly_what_river_learns_alone(r) -> None:
    from tests.models.teams import one_vs_rest

    p = _proc(r, {"algorithm": "river", "features": FEATURES[:2],  # (numbers: scaled)
                  "river": {"pipeline": "tests.models.teams:one_vs_rest", "params": {"lr": 0.1}}},
              replay={"size": 0, "fraction": 0.0})  # fmt: skip
    rows, labels = _numeric(*_stream(2000))
    _push(r, p.keys.samples, rows, labels, packed=40)
    learn_until(p, lambda: p.counters["samples"] == 2000)
    own = one_vs_rest(lr=0.1)
    for x, label in zip(rows, labels, strict=True):
        own.learn_one(x, label)  # River's own shape: the class names
    probe, truth = _numeric(*_stream(300, seed=1))
    mine = p.learner.predict_many(p.schema.encode(probe))
    expected = []
    for x in probe:
        proba = own.predict_proba_one(x)
        row = np.array([proba.get(c, 0.0) for c in CLASSES])
        expected.append(row / row.sum())
    np.testing.assert_allclose(mine, expected)
    assert np.mean(mine.argmax(axis=1) == [CLASSES.index(c) for c in truth]) > 0.9
    # the versions are River's own state, signed, and load as the same model
    latest = p.store.pointers(p.revision).latest
    assert latest is not None and latest >= 3
    loaded, meta = p.store.load(p.revision, latest)
    assert type(loaded).__name__ == "RiverLearner" and meta["model"]["classes"] == CLASSES
    scores = loaded.predict_many(p.schema.encode(probe))
    assert scores.shape == (300, 3) and np.allclose(scores.sum(axis=1), 1.0)


def _numeric(rows: list[dict], labels: list[str]) -> tuple[list[dict], list[str]]:
    return [{"a": x["a"], "b": x["b"]} for x in rows], labels


def test_a_warm_start_with_the_classes_in_another_order_is_refused(r, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tideline.algorithms import make_learner

    base = make_learner({"task": "multiclass", "classes": ["dog", "cat", "eel"],
                         "algorithm": "sgd", "features": FEATURES})  # fmt: skip
    path = tmp_path / "baseline.tdl"
    path.write_bytes(learner_to_blob(base))
    with pytest.raises(
        SpecError, match="other classes than spec.model.classes, or in another order"
    ):
        _proc(r, {"algorithm": "sgd", "warmStart": {"file": str(path)}})


def test_a_river_multiclass_pipeline_is_served_over_v1_and_v2_and_learns_its_feedback(
    r, redis_server
) -> None:  # type: ignore[no-untyped-def]
    """Learned by the learner process from the stream, published, served by a server over V1
    and V2 (class names, probabilities on request), its answers' labels sent back through
    /feedback as class names and learned."""
    from tests.helpers import Served

    doc = _doc({"algorithm": "river", "features": FEATURES[:2],
                "river": {"pipeline": "tests.models.teams:one_vs_rest", "params": {"lr": 0.1}}},
               replay={"size": 0, "fraction": 0.0})  # fmt: skip
    p = LearnerProcess(parse(doc), r, checkpoint_seconds=0.0)
    p.start()
    rows, labels = _numeric(*_stream(1500))
    _push(r, p.keys.samples, rows, labels, packed=50)
    learn_until(p, lambda: p.counters["samples"] == 1500)
    latest = p.store.pointers(p.revision).latest
    assert latest is not None
    p.store.set_pointer(p.revision, "served", latest)
    s = Served(redis_server.url, doc)
    probe, truth = _numeric(*_stream(40, seed=3))
    served, _ = p.store.load(p.revision, latest)
    expected = served.predict_many(served.schema.encode(probe))
    with s.client:
        wait_until(lambda: s.dp.ready)
        name = p.model.name
        v1 = s.client.post(f"/v1/models/{name}:predict",
                           json={"instances": probe, "probabilities": True}).json()  # fmt: skip
        assert v1["predictions"] == [CLASSES[i] for i in expected.argmax(axis=1)]
        np.testing.assert_allclose(v1["probabilities"], expected, rtol=1e-6, atol=1e-7)
        assert np.mean(np.array(v1["predictions"]) == np.array(truth)) > 0.8
        inputs = [{"name": f, "datatype": "FP64", "shape": [len(probe)],
                   "data": [x[f] for x in probe]} for f in ("a", "b")]  # fmt: skip
        v2 = s.client.post(f"/v2/models/{name}/infer", json={"inputs": inputs}).json()
        out = {o["name"]: o for o in v2["outputs"]}
        assert out["predict"]["datatype"] == "BYTES" and out["predict"]["data"] == v1["predictions"]
        assert out["probabilities"]["shape"] == [len(probe), len(CLASSES)]
        np.testing.assert_allclose(np.reshape(out["probabilities"]["data"], expected.shape),
                                   expected, rtol=1e-6, atol=1e-7)  # fmt: skip
        feedback = [{"id": i, "label": y} for i, y in zip(v1["ids"], truth, strict=True)]
        assert s.client.post(f"/v1/models/{name}/feedback",
                             json={"feedback": feedback}).status_code == 202  # fmt: skip
    learn_until(p, lambda: p.counters["samples"] == 1540)
    assert p.counters["invalid"] == 0
