"""The learning core without Redis: what is learned when, what is refused, and the gate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.helpers import manifest
from tideline.spec import parse
from tideline.training import Run, Training


def _training(params: dict[str, Any] | None = None, **learning: Any) -> Training:
    doc = manifest(name="fraud")
    doc["spec"]["learning"] = {"replay": {"size": 0, "fraction": 0.0}, **learning}
    doc["spec"]["model"]["params"] = params or {}
    spec = parse(doc).spec
    return Training(spec.model, spec.learning, clock=lambda: 0.0)


def _grown(t: Training) -> Training:
    """``t`` with a model past its first samples (no ramp of its batch size: see ramp_size);
    learned outside the core, so no counter moved."""
    X, y = _rows(t, 300, seed=9)
    t.learner.learn_many(X, y)
    return t


def _rows(t: Training, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, t.schema.width))
    return X, (X[:, 0] > 0).astype(np.float64)


def _entries(n: int, each: int, start: int = 1_000) -> list[Run]:
    """``n`` entries of ``each`` rows, as a stream names them (its time in milliseconds)."""
    return [Run("samples", f"{start + i}-0".encode(), each) for i in range(n)]


@pytest.mark.parametrize(
    ("batch", "every", "rows", "force", "blocks"),
    [
        (64, 5000, 100, False, [(1, 64)]),
        (64, 5000, 100, True, [(1, 64), (1, 36)]),
        (10, 25, 60, False, [(0, 30), (0, 10), (0, 10), (0, 10)]),
    ],
    ids=[
        "a short last batch waits for more rows",
        "forced, it is learned too",
        "a block ends where a version is due (and, none published, each batch after it)",
    ],
)
def test_blocks_are_whole_batches_and_end_where_a_version_is_due(
    batch: int, every: int, rows: int, force: bool, blocks: list[tuple[int, int]]
) -> None:
    t = _grown(_training(batchSize=batch, publishEvery=every))
    X, y = _rows(t, rows)
    runs = _entries(rows, 1)
    t.add(X, y, runs)
    got = list(t.blocks(force))
    assert [b.learned for b in got] == [n for _, n in blocks]
    assert all(len(b.runs) == b.learned for b in got)  # (an entry a row)
    assert t.counters["samples"] == sum(n for _, n in blocks)
    assert len(t.pending) == rows - t.counters["samples"]


def test_a_version_is_due_after_publish_every_rows() -> None:
    t = _grown(_training(batchSize=10, publishEvery=25))
    X, y = _rows(t, 60)
    t.add(X, y, _entries(60, 1))
    got = []
    for block in t.blocks(force=False):
        got.append((block.learned, block.due))
        if block.due:
            t.counters["since_publish"] = 0  # (what a checkpoint that publishes does)
    assert got == [(30, True), (30, True)]


def test_a_packed_entry_is_never_split_across_blocks() -> None:
    t = _grown(_training(batchSize=10, publishEvery=20))
    X, y = _rows(t, 45)
    t.add(X, y, _entries(3, 15))  # (a version is due after 20 rows: in the second entry)
    got = [(len(b.runs), b.learned, b.due) for b in t.blocks(force=True)]
    assert got == [(2, 30, True), (1, 15, True)]


def test_a_row_that_would_make_the_model_non_finite_is_refused_and_the_rest_learned() -> None:
    t = _grown(_training(batchSize=8, publishEvery=1000))
    X, y = _rows(t, 16)
    X[5] = np.nan  # (past the schema, as a bug in an encoder would make it)
    t.add(X, y, _entries(2, 8))
    with np.errstate(invalid="ignore"):
        (block,) = list(t.blocks(force=False))
    assert block.learned == 15 and len(block.runs) == 2
    (bad,) = block.refused
    assert (bad.stream, bad.entry) == ("samples", b"1000-0")
    assert bad.reason.startswith("nonfinite")
    assert bad.fields == {b"row": b"[null,null,null]", b"label": repr(float(y[5])).encode()}
    assert t.counters["samples"] == 15
    assert np.isfinite(t.learner.predict_many(np.delete(X, 5, axis=0))).all()


@pytest.mark.parametrize(
    ("served_learned", "passes"),
    [(None, True), (0, True), (4000, False)],
    ids=[
        "no served version: the live learner is its own reference",
        "a served version that learned nothing: the live one is better",
        "a served version that learned well: the live one, at a rate of 1,000, loses",
    ],
)
def test_the_gate_compares_the_live_learner_with_the_served_version_on_the_holdout(
    served_learned: int | None, passes: bool
) -> None:
    reckless = {"optimizer": "sgd", "learningRate": 1000.0} if served_learned else {}
    t = _training(reckless, batchSize=50, publishEvery=500, gate={"holdout": 200})
    if served_learned is not None:
        other = _training()
        X, y = _rows(other, max(served_learned, 1), seed=1)
        if served_learned:
            other.learner.learn_many(X, y)
        t.served = other.learner
    X, y = _rows(t, 500, seed=2)
    t.add(X, y, _entries(500, 1))
    blocks = list(t.blocks(force=False))
    assert blocks[-1].due
    ok, info = t.gate()
    assert ok == passes
    assert info["holdout"] == 200 and len(t.gate_live) == len(t.gate_served) == 200


def test_a_reset_and_an_adaptation_forget_the_holdout() -> None:
    t = _training(batchSize=50, publishEvery=500, replay={"size": 100, "fraction": 0.2},
                  gate={"holdout": 200})  # fmt: skip
    X, y = _rows(t, 400)
    t.add(X, y, _entries(400, 1))
    list(t.blocks(force=True))
    assert len(t.gate_live) and t.replay.filled
    before = t.learner.get_state()
    t.adapt(0.05)
    assert not len(t.gate_live) and not t.replay.filled and t.counters["adaptations"] == 1
    t.add(X, y, _entries(400, 1, start=5_000))
    list(t.blocks(force=True))
    t.reset_to(before)
    assert not len(t.gate_live) and t.counters["since_publish"] == 0
    assert np.allclose(t.learner.predict_many(X), _same(t, before).predict_many(X))


def _same(t: Training, state: dict[str, Any]) -> Any:
    other = t.learner.copy()
    other.set_state(state)
    return other


def test_a_checkpoints_arrays_restore_the_model_the_holdout_and_the_counters() -> None:
    t = _training(batchSize=50, publishEvery=5000, gate={"holdout": 100})
    X, y = _rows(t, 300)
    t.add(X, y, _entries(300, 1))
    list(t.blocks(force=True))
    again = _training(batchSize=50, publishEvery=5000, gate={"holdout": 100})
    again.restore(t.arrays(), dict(t.counters))
    assert np.array_equal(again.learner.predict_many(X), t.learner.predict_many(X))
    assert np.array_equal(again.gate_live, t.gate_live) and again.counters == t.counters
    # when the newest label learned came: its entry's time on the stream
    assert t.counters["learned_until"] == pytest.approx(1.299)
