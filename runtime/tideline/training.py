"""The learning core: rows in, a model learned test-then-train, the gate's holdout - no I/O.

:class:`Training` is what :class:`tideline.pods.learner.LearnerProcess` decides
with, and nothing it reads or writes: rows come in (:meth:`Training.add`) with
the entries they came from, and leave as :class:`Block` s learned
(:meth:`Training.blocks`): which entries are done with, which rows were refused
and why, and whether a version is due. The process around it reads the streams,
writes the dead letters, acknowledges the entries and publishes, all in the
checkpoint's transaction; so every decision here has a unit test without Redis
(``tests/unit/test_training.py``).

* Rows are learned in mini-batches of ``batchSize`` (a fresh model ramps its
  batch from 1 up, :func:`tideline.evaluate.ramp_size`), taken in blocks of
  whole entries (up to ``BLOCK_ROWS``) and never past the next version due: a
  packed entry is never half learned at a checkpoint.
* Each mini-batch is scored before it is learned (prequential), with replayed
  past samples beside it (``replay.fraction``); a batch the model cannot learn
  (an update that would make it non-finite, or one that raises) is learned row
  by row, and the rows that still fail are refused.
* With ``lateLabel: correct`` every row is weighted so that a late label
  learned beside its default biases nothing (:mod:`tideline.correction`).
* The gate: the live learner's prequential loss on the last ``gate.holdout``
  rows before a version is due, against the served version's on the same rows;
  a version may be published when the first exceeds the second by at most
  ``gate.maxLossIncrease`` (relative).

Examples
--------
>>> from tideline.spec import parse
>>> spec = parse({"apiVersion": "tideline.dev/v1alpha1", "kind": "OnlineModel",
...               "metadata": {"name": "m"}, "spec": {"model": {"features": [{"name": "x"}]},
...               "learning": {"batchSize": 2, "publishEvery": 4}}}).spec
>>> t = Training(spec.model, spec.learning, clock=lambda: 0.0)
>>> t.add(np.array([[1.0], [-1.0], [2.0], [-2.0]]), np.array([1.0, 0.0, 1.0, 0.0]),
...       [Run("samples", b"1-0", 4)])
>>> [(len(b.runs), b.learned, b.due) for b in t.blocks(force=False)]
[(1, 4, True)]
>>> t.counters["samples"], t.counters["since_publish"]
(4, 4)
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from tideline import predlog
from tideline.algorithms import Learner, make_learner
from tideline.algorithms.base import NonFiniteUpdate
from tideline.correction import LateCorrection
from tideline.evaluate import RollingMetrics, ramp_size
from tideline.spec import LearningSpec, ModelSpec
from tideline.tasks import Task

log = logging.getLogger("tideline.learner")

# rows learned between checkpoints at most, as mini-batches (the served version scores
# them at once; a checkpoint never falls inside one, so a packed entry is learned whole)
BLOCK_ROWS = 4096


@dataclass
class Run:
    """An entry's rows waiting in :class:`Pending`: learned together, acknowledged together."""

    stream: str
    entry: bytes
    rows: int
    # the predictions its labels took: their slice of time and keys (the join's marks; a
    # joined label's one prediction, a request's default labels all of its own)
    marks: tuple[int, list[str]] | None = None
    late: bool = False  # a label after its prediction's default, learned to correct it


class Pending:
    """Rows decoded and waiting for the next mini-batch, as blocks, with their entries.

    Rows come in blocks (a read's matrix) and leave in mini-batches of whole
    entries, so a packed entry is never split across a checkpoint.
    """

    def __init__(self) -> None:
        self.blocks: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque()
        self.runs: collections.deque[Run] = collections.deque()
        self.rows = 0
        self.first_at = 0.0

    def __len__(self) -> int:
        return self.rows

    def add(self, X: np.ndarray, y: np.ndarray, runs: list[Run]) -> None:
        if len(y):
            self.blocks.append((X, y))
            self.runs.extend(runs)
            self.rows += len(y)

    def take(self, size: int) -> tuple[np.ndarray, np.ndarray, list[Run]]:
        """The first whole entries holding at least ``size`` rows (or all there are)."""
        runs: list[Run] = []
        n = 0
        while self.runs and n < size:
            run = self.runs.popleft()
            runs.append(run)
            n += run.rows
        xs, ys, need = [], [], n
        while need:
            X, y = self.blocks.popleft()
            if len(y) > need:
                self.blocks.appendleft((X[need:], y[need:]))
                X, y = X[:need], y[:need]
            xs.append(X)
            ys.append(y)
            need -= len(y)
        self.rows -= n
        if len(xs) == 1:
            return xs[0], ys[0], runs
        return np.vstack(xs), np.concatenate(ys), runs


class ReplayBuffer:
    """A fixed-size buffer of past samples, each new sample replacing a random slot.

    Random replacement keeps recent samples more often than old ones (ages are
    geometric), so replay fights forgetting without anchoring the model to a
    concept that has drifted away.
    """

    def __init__(self, size: int, width: int, seed: int = 0) -> None:
        self.size = size
        self.X = np.zeros((size, width))
        self.y = np.zeros(size)
        self.filled = 0
        self.rng = np.random.default_rng(seed)

    def add(self, X: np.ndarray, y: np.ndarray) -> None:
        if self.size == 0:
            return
        for start in range(0, len(y), self.size):
            Xc, yc = X[start : start + self.size], y[start : start + self.size]
            free = min(self.size - self.filled, len(yc))
            if free:
                self.X[self.filled : self.filled + free] = Xc[:free]
                self.y[self.filled : self.filled + free] = yc[:free]
                self.filled += free
            rest = len(yc) - free
            if rest:
                slots = self.rng.integers(0, self.size, size=rest)
                self.X[slots] = Xc[free:]
                self.y[slots] = yc[free:]

    def sample(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k <= 0 or self.filled == 0:
            return self.X[:0], self.y[:0]
        idx = self.rng.integers(0, self.filled, size=k)
        return self.X[idx], self.y[idx]

    def clear(self) -> None:
        """Forget every stored sample (after concept drift they speak for a world that is gone)."""
        self.filled = 0

    def get_state(self) -> dict[str, np.ndarray]:
        return {"replay.X": self.X[: self.filled], "replay.y": self.y[: self.filled]}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        n = len(state["replay.y"])
        self.filled = min(n, self.size)
        self.X[: self.filled] = state["replay.X"][: self.filled]
        self.y[: self.filled] = state["replay.y"][: self.filled]


@dataclass
class Refused:
    """A row the model could not learn: a dead letter of its entry's, with the reason."""

    stream: str
    entry: bytes
    fields: dict[bytes, bytes]
    reason: str


@dataclass
class Block:
    """Rows learned together: their entries (done with, in order), the rows refused,
    how many rows were learned in how many mini-batches and seconds, and whether a
    version is due now (``publishEvery`` updates since the last)."""

    runs: list[Run]
    refused: list[Refused] = field(default_factory=list)
    learned: int = 0
    batches: int = 0
    seconds: float = 0.0
    due: bool = False
    # each row's prediction before it was learned (prequential; refused rows' too), in order
    predictions: np.ndarray | None = None


class Training:
    """The model, what waits to be learned, the replay buffer, the rolling quality and the
    gate's holdout, and the counters a checkpoint keeps (see the module docs)."""

    def __init__(
        self, model: ModelSpec, learning: LearningSpec, clock: Callable[[], float] = time.time
    ) -> None:
        self.learning = learning
        self.clock = clock
        self.learner: Learner = make_learner(model.to_dict())
        self.schema = self.learner.schema
        self.task = Task.of(model)  # what a label and a row's scores mean
        self.replay = ReplayBuffer(learning.replay.size, self.schema.width)
        self.pending = Pending()
        self.quality = RollingMetrics(self.task.name, window=max(learning.gate.holdout, 1000),
                                      n_classes=self.task.n_classes)  # fmt: skip
        self.gate_live = np.zeros(0)  # prequential losses of the live learner (holdout window)
        self.gate_served = np.zeros(0)  # losses of the served version on the same samples
        self.served: Learner | None = None  # the served version, for the gate
        default = learning.labelDefault
        self.correction = (  # the weights of late labels' corrections (lateLabel: correct)
            LateCorrection(self.task.target(default.value))
            if default is not None and learning.lateLabel == "correct"
            else None
        )
        self.newest = 0.0  # when the newest label learned or pending arrived
        self.counters: dict[str, Any] = {
            "samples": 0,
            "label_sum": 0.0,
            "batches": 0,
            "next_version": 0,
            "since_publish": 0,
            "gate_rejections": 0,
            "late": 0,
            "unmatched": 0,
            "duplicate": 0,
            "invalid": 0,
            # when the newest label the state has learned arrived (seconds, the streams' own
            # clock): a version is scored only on labels after it (tideline.evidence)
            "learned_until": 0.0,
        }

    # -- in ------------------------------------------------------------------------------
    def add(self, X: np.ndarray, y: np.ndarray, runs: list[Run]) -> None:
        """Rows with their checked labels, for the next mini-batches."""
        if not self.pending:
            self.pending.first_at = self.clock()
        self.pending.add(X, y, runs)
        newest = max(predlog.entry_seconds(run.entry) for run in runs)
        self.newest = max(self.newest, newest)
        # (from when they are pending: a version is never said to lack what it learned)
        self.counters["learned_until"] = max(self.counters["learned_until"], newest)

    def waited(self) -> float:
        """Seconds the oldest pending row has waited (0 with none)."""
        return self.clock() - self.pending.first_at if self.pending else 0.0

    # -- learning ------------------------------------------------------------------------
    def blocks(self, force: bool) -> Iterator[Block]:
        """Learn the pending rows in mini-batches of ``batchSize`` (a short last one when
        ``force``d), a block at a time; each block is given to the caller before the next
        is learned (a version due after it is published first)."""
        bs, every = self.learning.batchSize, self.learning.publishEvery
        while self.pending:
            size = ramp_size(self.learner.n_seen, bs)
            if len(self.pending) < size and not force:
                return
            # full mini-batches, up to a block, and no further than the next version is due
            due = every - self.counters["since_publish"]
            n = min(len(self.pending) // size, BLOCK_ROWS // size, -(-due // size))
            X, y, runs = self.pending.take(max(1, n) * size)
            block = self._learn_block(X, y, runs)
            block.due = self.counters["since_publish"] >= every
            yield block
            if self.pending:
                self.pending.first_at = self.clock()

    def _learn_block(self, X: np.ndarray, y: np.ndarray, runs: list[Run]) -> Block:
        """Learn a block a mini-batch at a time, each tested before it is learned, with past
        samples replayed beside it; its scores into the quality and the gate's holdout.

        Replayed samples are drawn for the whole block at once, from what was learned
        before it; the block's rows join the replay buffer at its end. The batches are
        handed to the learner together (``learn_predict_batches``: all or nothing). When
        that fails they are learned again one by one: an update that would make the
        model non-finite, or that raises, is not applied, that batch is learned row by
        row, and the rows that still fail are refused - one hostile row must not stop
        learning, nor come back at every restart.
        """
        bs = self.learning.batchSize
        n, seen = len(y), self.learner.n_seen
        bounds: list[tuple[int, int]] = []
        while not bounds or bounds[-1][1] < n:  # (a fresh model's batches grow: see ramp_size)
            a = bounds[-1][1] if bounds else 0
            bounds.append((a, min(a + ramp_size(seen + a, bs), n)))
        rf = self.learning.replay.fraction
        ks = [int(round((b - a) * rf / (1.0 - rf))) if self.replay.filled >= b - a else 0
              for a, b in bounds]  # fmt: skip
        Xr, yr = self.replay.sample(sum(ks))
        # the block's batches end to end, each followed by its replayed rows
        order, r = [], n  # (rows of X, then of Xr, stacked below it)
        for (a, b), k in zip(bounds, ks, strict=True):
            order += [np.arange(a, b), np.arange(r, r + k)]
            r += k
        rows = np.concatenate(order)
        Xs, ys = np.vstack([X, Xr])[rows], np.concatenate([y, yr])[rows]
        edges = np.cumsum([0] + [b - a + k for (a, b), k in zip(bounds, ks, strict=True)])
        refused: dict[int, str] = {}
        t0 = time.perf_counter()
        ws = self._weights(Xs, ys)
        try:
            p_live = self.learner.learn_predict_batches(Xs, ys, edges, ws)[rows < n]
        except Exception:  # a hostile row, or a bug it hits: find it batch by batch
            p_live = self._learn_batches(X, y, bounds, Xs, ys, edges, refused, ws)
        seconds = time.perf_counter() - t0
        self._score(X, y, p_live)
        block = Block(runs, self._refused(X, y, runs, refused), batches=len(bounds),
                      seconds=seconds, predictions=p_live)  # fmt: skip
        if refused:
            keep = np.ones(n, dtype=bool)
            keep[list(refused)] = False
            X, y = X[keep], y[keep]
        self.replay.add(X, y)
        c = self.counters
        if self.correction is not None:
            late = sum(run.rows for run in runs if run.late)
            self.correction.count(y, late)
            c["corrected"] = self.correction.late
            c["not_default"] = self.correction.other
        c["samples"] += len(y)
        c["label_sum"] += float(y.sum())
        c["batches"] += len(bounds)
        c["since_publish"] += len(y)
        block.learned = len(y)
        return block

    def _refused(
        self, X: np.ndarray, y: np.ndarray, runs: list[Run], refused: dict[int, str]
    ) -> list[Refused]:
        """The refused rows as dead letters of the entries they came in."""
        out: list[Refused] = []
        at = 0
        for run in runs if refused else ():
            for i in range(at, at + run.rows):
                if i in refused:
                    row = {b"row": orjson.dumps(X[i].tolist()),
                           b"label": repr(self.task.label(float(y[i]))).encode()}  # fmt: skip
                    out.append(Refused(run.stream, run.entry, row, refused[i]))
            at += run.rows
        return out

    def _learn_batches(
        self,
        X: np.ndarray,
        y: np.ndarray,
        bounds: list[tuple[int, int]],
        Xs: np.ndarray,
        ys: np.ndarray,
        edges: np.ndarray,
        refused: dict[int, str],
        ws: np.ndarray | None,
    ) -> np.ndarray:
        """A block one mini-batch at a time (batch i: rows ``edges[i]:edges[i + 1]`` of ``Xs``,
        rows ``bounds[i]`` of ``X`` and then their replayed ones); a batch that cannot be
        learned is learned row by row, and the rows that fail go to ``refused``."""
        p_live = np.empty(self.task.rows(len(y)))
        for (a, b), e0, e1 in zip(bounds, edges[:-1], edges[1:], strict=True):
            try:
                w = None if ws is None else ws[e0:e1]
                p_live[a:b] = self.learner.learn_predict_many(Xs[e0:e1], ys[e0:e1], b - a, w)
            except Exception:  # a hostile row, or a bug it hits: find it, learn the rest
                p_live[a:b] = self.learner.predict_many(X[a:b])
                w = None if ws is None else ws[e0 : e0 + b - a]  # (the batch's own rows lead)
                for i, reason in self._learn_rows(X[a:b], y[a:b], w).items():
                    refused[a + i] = reason
        return p_live

    def _weights(self, X: np.ndarray, y: np.ndarray) -> np.ndarray | None:
        """The rows' sample weights (:mod:`tideline.correction`): none until a late label has
        been learned, and then from the model's scores before the block."""
        c = self.correction
        if c is None or not c.late:
            return None
        return c.weights(self.learner.predict_many(X), y)

    def _learn_rows(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> dict[int, str]:
        refused: dict[int, str] = {}
        for i in range(len(y)):
            try:
                wi = None if w is None else w[i : i + 1]
                self.learner.learn_many(X[i : i + 1], y[i : i + 1], wi)
            except NonFiniteUpdate:
                refused[i] = "nonfinite: the update would make the model non-finite"
            except Exception as e:
                log.exception("learning a row failed; it is dead-lettered")
                refused[i] = f"poison: {type(e).__name__}: {e}"[:500]
        return refused

    def _score(self, X: np.ndarray, y: np.ndarray, p_live: np.ndarray) -> None:
        """A block's prequential scores (the live learner's, each batch's before it was
        learned) into the rolling quality and the gate's holdout, beside the served
        version's scores of the same rows (one prediction: it does not change in a block).

        The gate reads its holdout when a version is due, every ``publishEvery`` updates: the
        last ``holdout`` rows before it. Only those are scored by the served version (with the
        defaults 2,000 of every 5,000 rows): the rows before them would have left the holdout
        by then (a River pipeline's served scoring took 13-15 % of the learner's time)."""
        self.quality.update(p_live, y)
        holdout = self.learning.gate.holdout
        if not holdout:
            return
        start = self.counters["since_publish"]  # (the block's place in the period)
        needed = len(y) - max(0, self.learning.publishEvery - holdout - start)
        keep = min(holdout, needed)
        if keep <= 0:
            return
        loss = self.task.loss  # (a row's loss, whatever the shape of its scores)
        X, y, p_live = X[-keep:], y[-keep:], p_live[-keep:]
        p_served = self.served.predict_many(X) if self.served is not None else p_live
        self.gate_live = np.concatenate([self.gate_live, loss(p_live, y)])[-holdout:]
        self.gate_served = np.concatenate([self.gate_served, loss(p_served, y)])[-holdout:]

    # -- the gate, and the operator's commands ----------------------------------------------
    def gate(self) -> tuple[bool, dict[str, float]]:
        """Whether the live learner may be published: its holdout loss vs the served version's."""
        if not len(self.gate_live):
            return True, {}
        live, served = float(self.gate_live.mean()), float(self.gate_served.mean())
        limit = served * (1.0 + self.learning.gate.maxLossIncrease) + 1e-12
        return live <= limit, {
            "holdout_loss": live,
            "served_loss": served,
            "holdout": len(self.gate_live),
        }

    def reset_to(self, state: dict[str, Any]) -> None:
        """The model's state replaced (a rollback's reset): the holdout judged the old one."""
        self.learner.set_state(state)
        self.gate_live = self.gate_served = np.zeros(0)
        self.counters["since_publish"] = 0

    def adapt(self, keep: float) -> None:
        """Concept drift: the replay buffer goes and past confidence is softened to ``keep``,
        so the next updates move the model as much as a young one's would."""
        self.replay.clear()
        self.learner.soften(keep)
        self.gate_live = self.gate_served = np.zeros(0)  # the old holdout judged the old world
        self.counters["adaptations"] = self.counters.get("adaptations", 0) + 1

    # -- state ---------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The model's state and the gate's holdout, as a checkpoint keeps them."""
        arrays = {f"learner.{k}": v for k, v in self.learner.get_state().items()}
        arrays["gate.live"] = self.gate_live
        arrays["gate.served"] = self.gate_served
        return arrays

    def restore(self, arrays: dict[str, np.ndarray], counters: dict[str, Any]) -> None:
        """A checkpoint's :meth:`arrays` (and replay buffer, when it holds one) and counters."""
        self.learner.set_state({k[8:]: v for k, v in arrays.items() if k.startswith("learner.")})
        if "replay.y" in arrays:
            self.replay.set_state(arrays)
        self.gate_live = arrays["gate.live"]
        self.gate_served = arrays["gate.served"]
        self.counters.update(counters)
        if self.correction is not None:
            self.correction.other = int(self.counters.get("not_default", 0))
            self.correction.late = int(self.counters.get("corrected", 0))
