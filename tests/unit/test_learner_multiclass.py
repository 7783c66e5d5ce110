"""The learner process's reading and scoring of a multiclass model, in memory: a read of the
samples stream, a read of the feedback stream and the mini-batches learned from them, with a
store that fails any call (nothing here may reach Redis; the integration tests run the
whole process against a real one)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from tests.helpers import manifest
from tideline.pods.learner import LearnerProcess
from tideline.samples import one, pack
from tideline.signing import KEY_ENV
from tideline.spec import parse

CLASSES = ["cat", "dog", "eel"]
FEATURES = [{"name": "a"}, {"name": "b"}]
NOT_A_CLASS = "'fox' is not a class of this model (classes: cat, dog, eel)"


class NoStore:
    """A Redis client whose every command fails the test."""

    connection_pool = None  # (what the store asks to tell a cluster from one node)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the learner called Redis: {name}")


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "a-signing-key-for-the-tests-0123456789")


def _learner(
    model: dict | None = None, holdout: int = 200, publish_every: int = 10**9
) -> LearnerProcess:
    doc = manifest(learning={"publishEvery": publish_every, "maxBatchDelay": "20ms",
                             "gate": {"holdout": holdout}})  # fmt: skip
    doc["spec"]["model"] = {"task": "multiclass", "classes": CLASSES, "features": FEATURES,
                            **(model or {"algorithm": "sgd"})}  # fmt: skip
    return LearnerProcess(parse(doc), NoStore(), checkpoint_seconds=0.0)


def _rows(n: int, seed: int = 0) -> tuple[list[dict], list[str]]:
    """Rows of three classes, linearly separable; labels their class names."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = np.c_[X[:, 0], X[:, 1], -X[:, 0] - X[:, 1]].argmax(axis=1)
    return [{"a": a, "b": b} for a, b in X.tolist()], [CLASSES[i] for i in y]


def _entries(datas: list[bytes]) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return [(b"%d-0" % (i + 1), {b"data": d}) for i, d in enumerate(datas)]


@pytest.mark.parametrize("packed", [False, True], ids=["one-row entries", "packed entries"])
def test_samples_with_class_names_are_learned_and_scored_a_probability_per_class(
    packed: bool,
) -> None:
    p = _learner(publish_every=1200)  # (the gate's holdout: the 200 rows before a version)
    rows, labels = _rows(1200)
    labels[7] = "fox"
    if packed:
        datas = [pack(rows[i : i + 40], labels[i : i + 40]) for i in range(0, 1200, 40)]
    else:
        datas = [one(x, v) for x, v in zip(rows, labels, strict=True)]
    p._on_samples(_entries(datas))
    p.training.served = p.learner.copy()  # (the gate scores the served version beside the live one)
    p._learn_pending(force=True)
    assert (p.counters["samples"], p.counters["invalid"]) == (1199, 1)
    [dead] = p._dead
    assert dead.reason == f"invalid label: {NOT_A_CLASS}"
    report = p.training.quality.report()
    assert report["count"] == 1000 and report["accuracy"] > 0.9 and len(report["recall"]) == 3
    # the gate's holdout: a loss per row for the live learner and for the served version
    # (the rows the holdout holds when the version due at 1,200 updates is judged: 1,199
    # were learned, the one refused is no update)
    assert p.training.gate_live.shape == p.training.gate_served.shape == (199,)
    assert p.training.gate_live.mean() < p.training.gate_served.mean()  # (served learned nothing)
    ok, info = p.training.gate()
    assert ok and info["served_loss"] == pytest.approx(np.log(3))


def test_feedback_labels_are_read_as_the_task_reads_them() -> None:
    p = _learner()
    joined: list[tuple[str, str, float]] = []
    p.join.add = lambda name, pid, y, received: joined.append((name, pid, y))  # type: ignore[method-assign]
    labels = [{"id": "p1", "label": "eel"}, {"id": "p2", "label": 1},
              {"id": "p3", "label": "fox"}, {"id": "p4", "label": 1.5}]  # fmt: skip
    p._on_feedback(
        [
            (b"5-0", {b"data": orjson.dumps(labels[0])}),
            (b"6-0", {b"data": orjson.dumps({"feedback": labels[1:]})}),
        ]
    )
    assert joined == [("5-0", "p1", 2.0), ("6-0/0", "p2", 1.0)]
    assert [(d.entry, d.reason) for d in p._dead] == [
        ("6-0/1", f"invalid: {NOT_A_CLASS}"),
        ("6-0/2", "invalid: a class index must be a whole number (got 1.5)"),
    ]


def test_a_row_a_team_s_multiclass_model_cannot_learn_is_dead_lettered_with_its_class_name() -> (
    None
):
    p = _learner({"algorithm": "custom", "custom": {"class": "tests.models.teams:FaultyCentroids"}})
    rows, labels = _rows(300)
    rows[100]["a"], labels[100] = 13.0, "dog"  # FaultyCentroids raises on it
    p._on_samples(_entries([one(x, v) for x, v in zip(rows, labels, strict=True)]))
    p._learn_pending(force=True)
    assert p.counters["samples"] == 299
    [dead] = p._dead
    assert dead.reason == "poison: ValueError: unlucky row"
    assert dead.fields["label"] == "'dog'"
    assert p.training.quality.report()["count"] == 300  # (scored before it was learned, every row)


class Counting:
    """A served version that counts the rows it is asked to score."""

    def __init__(self, model: Any) -> None:
        self.model, self.rows = model, 0

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        self.rows += len(X)
        return self.model.predict_many(X)


@pytest.mark.parametrize(("publish_every", "holdout", "scored"),
                         [(1000, 300, 200), (400, 300, 300 + 300), (300, 500, 900)])  # fmt: skip
def test_the_served_version_scores_only_the_rows_the_gate_will_read(
    publish_every: int, holdout: int, scored: int
) -> None:
    """The gate reads the last ``holdout`` rows before each version due every
    ``publishEvery`` updates; the served version scores those alone (900 rows learned in
    blocks that stop where a version is due)."""
    p = _learner(holdout=holdout, publish_every=publish_every)
    rows, labels = _rows(900)
    p._on_samples(_entries([pack(rows[i : i + 50], labels[i : i + 50]) for i in range(0, 900, 50)]))
    p.training.served = served = Counting(p.learner.copy())

    def judged(*args: Any, **kwargs: Any) -> None:  # (the gate judged the version due)
        p.counters["since_publish"] = 0

    p._checkpoint = judged  # type: ignore[method-assign]
    p._learn_pending(force=True)
    assert served.rows == scored
    assert len(p.training.gate_live) == len(p.training.gate_served) == min(holdout, scored)
