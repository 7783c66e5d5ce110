"""The learner interface every algorithm implements (river's shape, numpy batches).

``__init__`` stores hyperparameters verbatim; learned state lives in private
attributes and round-trips through :meth:`Learner.get_state` /
:meth:`Learner.set_state` as a flat mapping of named numpy arrays, the
format the model store writes (never pickle).

Scores and labels by task: ``binary``, a probability of class 1 per row
(shape ``(n,)``) for 0/1 labels; ``regression``, the value (``(n,)``);
``multiclass``, the probability of each of the ``k`` classes (``(n, k)``, rows
summing to 1) for labels that are class indices ``0..k-1`` (as float64),
index ``i`` naming ``classes[i]``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from typing import Any, NoReturn

import numpy as np

from tideline import codec
from tideline.features import FeatureSchema
from tideline.spec import Params

State = dict[str, np.ndarray]

RAW_LIMIT = 1e12  # |value| a numeric feature may take before its statistics exist
CLIP_SD = 8.0  # afterwards, values are clipped to the mean +- this many standard deviations
WARMUP = 20  # rows before the running statistics are trusted for clipping
_CLIPPED_PASSES = 2  # Standardizer.update_designs: passes over a block before batch by batch
LABEL_LIMIT = 1e15  # |label| of a regression target


class NonFiniteUpdate(ValueError):
    """An update that would have made the learned state non-finite; it was not applied."""

    def __init__(self) -> None:
        super().__init__("the update would make the model non-finite; it was not applied")


class Standardizer:
    """Online mean and variance of the numeric columns (Chan et al.'s batch merge).

    A batch's squares are summed about its own mean before they are merged, so
    the sums stay exact for features whose mean dwarfs their spread
    (timestamps, amounts in cents), from the first batch on.

    Values are winsorised before they touch the statistics or the model: to
    the running mean +- ``CLIP_SD`` standard deviations once ``WARMUP`` rows
    were seen, to +-``RAW_LIMIT`` before. One row with ``amount: 1e308`` (a
    careless client, or an attacker) would otherwise turn the variance, and
    with it every weight, into inf and NaN for good.
    """

    def __init__(self, width: int) -> None:
        self.n = 0.0
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)
        self.scale = np.ones(width)  # 1 / standard deviation, kept in step with m2

    def _rescale(self) -> None:
        self.scale = 1.0 / _std(self.m2, self.n)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The range each numeric value is clipped to now (see the class docs)."""
        if self.n >= WARMUP:
            reach = CLIP_SD / self.scale
            return self.mean - reach, self.mean + reach
        limit = np.full_like(self.mean, RAW_LIMIT)
        return -limit, limit

    def _design(self, X: np.ndarray) -> np.ndarray:
        # Feature-major, so every broadcast below runs along a contiguous row of
        # n values rather than n short rows (3x faster for 20 features).
        A = np.empty((X.shape[1] + 1, X.shape[0]))
        Xc = A[:-1]
        Xc[...] = X.T
        A[-1] = 1.0
        lo, hi = self.bounds()
        # np.maximum/np.minimum in place (NaN passes through both, as through np.clip):
        # np.clip's Python wrapper took 2 of a 256-row batch's 50 us
        np.maximum(Xc, lo[:, None], out=Xc)
        np.minimum(Xc, hi[:, None], out=Xc)
        return A

    def update_design(self, X: np.ndarray) -> np.ndarray:
        """Fold the batch into the statistics; return the design ``[standardised X, 1]``, transposed.

        The result has one row per numeric feature plus a last row of ones (the
        bias), one column per sample.
        """
        n_b = X.shape[0]
        A = self._design(X)
        Xc = A[:-1]
        c = (Xc @ A[-1]) / n_b  # the batch's mean
        Xc -= c[:, None]
        n = self.n + n_b
        delta = c - self.mean
        # Chan et al.'s merge of (n, mean, m2) with the batch's own
        m2 = (Xc * Xc) @ A[-1]
        m2 += self.m2
        m2 += delta * delta * (self.n * n_b / n)
        self.m2 = m2
        self.mean = self.mean + delta * (n_b / n)
        self.n = n
        self._rescale()
        Xc += (c - self.mean)[:, None]
        Xc *= self.scale[:, None]
        return A

    def update_designs(self, X: np.ndarray, edges: np.ndarray) -> np.ndarray:
        """:meth:`update_design` of consecutive batches in one pass: batch ``i`` is rows
        ``edges[i]:edges[i + 1]`` of ``X`` (none empty), folded in and standardised in turn.

        The statistics after every batch come from running sums of the batches'
        own (count, mean, squares about the mean) (Chan et al.'s merge, in
        prefix form), so the per-batch work is a few array operations over the
        whole block. Clipping makes a batch depend on the statistics before it:
        the sums are taken on the values as they are, and the first batch with a
        value outside its bounds (from the exact statistics before it) is clipped
        and the sums taken again from there, so the result is
        :meth:`update_design`'s, batch by batch, up to rounding. A block that
        clips again and again (heavy tails) has its remaining batches folded in
        one at a time, as :meth:`update_design` does.
        """
        X = X.copy()  # (a batch's values are clipped in place)
        m, k = len(edges) - 1, X.shape[1]
        sizes = np.diff(edges)
        means, scales = np.empty((m, k)), np.empty((m, k))
        n0, mean0, m20 = self.n, self.mean, self.m2
        s = 0  # the first batch whose statistics are not known yet
        for _ in range(_CLIPPED_PASSES):
            at = edges[s:] - edges[s]  # batches s.. within the rows from edges[s]
            with np.errstate(over="ignore", invalid="ignore"):  # (past a value to clip)
                # each batch's mean and squares about it; the means' sums taken from a
                # point near them (the first batch's), the rows before s with their own
                size = sizes[s:, None].astype(np.float64)
                means_b = np.add.reduceat(X[edges[s] :], at[:-1], axis=0) / size
                per_row = np.repeat(np.arange(m - s), sizes[s:])
                D = X[edges[s] :] - means_b[per_row]
                e = means_b - means_b[0]
                before = mean0 - means_b[0]
                w1 = n0 * before + np.cumsum(size * e, axis=0)
                w2 = n0 * before * before + np.cumsum(size * e * e, axis=0)
                q = np.cumsum(np.add.reduceat(D * D, at[:-1], axis=0), axis=0)
                n = n0 + at[1:, None].astype(np.float64)
                mean = means_b[0] + w1 / n
                m2 = np.maximum(m20 + q + w2 - w1 * w1 / n, 0.0)
            std = _std(m2, n)
            means[s:], scales[s:] = mean, 1.0 / std
            # each batch's bounds: the statistics before it (the first: those before s)
            n_before = np.concatenate([[n0], n[:-1, 0]])
            centre = np.vstack([mean0, mean[:-1]])
            reach = CLIP_SD * np.vstack([_std(m20, n0), std[:-1]])
            young = (n_before < WARMUP)[:, None]  # (within RAW_LIMIT of zero instead)
            lo = np.where(young, -RAW_LIMIT, centre - reach)
            hi = np.where(young, RAW_LIMIT, centre + reach)
            out = (X[edges[s] :] < lo[per_row]) | (X[edges[s] :] > hi[per_row])
            # the first batch to clip (none: every batch's statistics are known)
            f = s + int(per_row[np.argmax(out.any(axis=1))]) if out.any() else m
            if f < m:
                rows = slice(edges[f], edges[f + 1])
                np.clip(X[rows], lo[f - s], hi[f - s], out=X[rows])
            if f > s:
                n0, mean0, m20 = float(n[f - s - 1, 0]), mean[f - s - 1], m2[f - s - 1]
            s = f
            if s == m:
                break
        # batches before s from their statistics; s.. one at a time, from those before s
        self.n, self.mean, self.m2 = n0, mean0.copy(), m20.copy()
        self._rescale()
        A = np.empty((k + 1, X.shape[0]))
        per_row = np.repeat(np.arange(s), sizes[:s])
        A[:-1, : edges[s]] = ((X[: edges[s]] - means[per_row]) * scales[per_row]).T
        A[-1, : edges[s]] = 1.0
        for a, b in zip(edges[s:-1], edges[s + 1 :], strict=True):
            A[:, a:b] = self.update_design(X[a:b])
        return A

    def design(self, X: np.ndarray) -> np.ndarray:
        """The design ``[standardised X, 1]``, transposed, with the current statistics."""
        A = self._design(X)
        A[:-1] -= self.mean[:, None]
        A[:-1] *= self.scale[:, None]
        return A

    def get_state(self) -> State:
        return {"scaler.n": np.array(self.n), "scaler.mean": self.mean, "scaler.m2": self.m2}

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.n = float(state["scaler.n"])
        self.mean = np.array(state["scaler.mean"], dtype=np.float64)
        self.m2 = np.array(state["scaler.m2"], dtype=np.float64)
        self._rescale()


def _std(m2: np.ndarray, n: Any) -> np.ndarray:
    """Standard deviations from sums of squares ``m2`` over ``n`` rows (a number, or one per
    row of ``m2``): 1 where there is no spread to scale by, or fewer than two rows."""
    if isinstance(n, float):  # (a batch at a time: as few numpy calls as can be)
        if n < 2:
            return np.ones_like(m2)
        std = np.sqrt(m2 / n)
        std[std < 1e-12] = 1.0
        return std
    std = np.sqrt(m2 / np.maximum(n, 1.0))
    std[(std < 1e-12) | (n < 2)] = 1.0
    return std


def check_targets(task: str, y: Any, n_classes: int = 0) -> np.ndarray:
    """Targets as float64; binary labels must be 0/1 (or booleans), multiclass labels class
    indices ``0..n_classes - 1``.

    >>> check_targets("multiclass", [2, 0.0], n_classes=3).tolist()
    [2.0, 0.0]
    >>> check_targets("multiclass", [1, 3], n_classes=3)
    Traceback (most recent call last):
    ...
    ValueError: multiclass labels must be class indices 0 to 2 (got 3)
    """
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if task == "multiclass":
        bad = (y != np.floor(y)) | (y < 0.0) | (y >= _known_classes(n_classes))  # (NaN: first)
        if bad.any():
            _bad_class(float(y[bad][0]), n_classes)
        return y
    if task == "binary":
        if np.count_nonzero(y * (1.0 - y)):  # also true for NaN and inf
            if not np.all(np.isfinite(y)):
                raise ValueError("labels must be finite numbers")
            bad = y[(y != 0.0) & (y != 1.0)][0]
            raise ValueError(f"binary labels must be 0 or 1 (got {bad:g})")
        return y
    top = float(np.max(np.abs(y))) if len(y) else 0.0
    if not math.isfinite(top):
        raise ValueError("labels must be finite numbers")
    if top > LABEL_LIMIT:
        raise ValueError(f"labels must be within +-{LABEL_LIMIT:g}")
    return y


def check_target(task: str, value: Any, n_classes: int = 0) -> float:
    """One target as :func:`check_targets` takes many, without an array (the per-entry path).

    >>> check_target("binary", True), check_target("regression", -2.5)
    (1.0, -2.5)
    >>> check_target("binary", 3)
    Traceback (most recent call last):
    ...
    ValueError: binary labels must be 0 or 1 (got 3)
    """
    y = float(value)
    if task == "binary" and (y == 0.0 or y == 1.0):
        return y
    if task == "multiclass":
        if not (0.0 <= y < _known_classes(n_classes) and y == math.floor(y)):  # (NaN, inf too)
            _bad_class(y, n_classes)
        return y
    if not math.isfinite(y):
        raise ValueError("labels must be finite numbers")
    if task == "binary":
        raise ValueError(f"binary labels must be 0 or 1 (got {y:g})")
    if abs(y) > LABEL_LIMIT:
        raise ValueError(f"labels must be within +-{LABEL_LIMIT:g}")
    return y


def _known_classes(n_classes: int) -> int:
    if n_classes < 2:
        raise ValueError(
            f"multiclass labels need the number of classes, 2 or more (got {n_classes})"
        )
    return n_classes


def _bad_class(y: float, n_classes: int) -> NoReturn:
    if not math.isfinite(y):
        raise ValueError("labels must be finite numbers")
    raise ValueError(f"multiclass labels must be class indices 0 to {n_classes - 1} (got {y:g})")


class Learner:
    """What the loop runs - the learner process, the servers, the monitor - whatever the model:
    schema handling, one/many dispatch, state as named arrays; and the base of the built-in
    learners (standardisation, undo of a refused update).

    The built-ins implement the public learner contract too (:mod:`tideline.model`:
    ``learn``, ``predict``, ``save``, ``load``, ``learn_predict``, ``soften``); a team's
    own model reaches the loop through :class:`tideline.algorithms.external.External`.
    """

    algorithm = "base"
    params_type: type[Params]
    rows = "matrix"  # (the learner contract's: built-ins take the encoded matrix)

    def __init__(
        self,
        features: Sequence[Mapping[str, Any]] | FeatureSchema,
        task: str = "binary",
        params: Params | None = None,
        *,
        classes: Sequence[str] | None = None,
        **overrides: Any,
    ) -> None:
        """``params``: the algorithm's typed hyperparameters (:data:`tideline.spec.PARAM_TYPES`;
        their defaults when None), ``overrides`` replacing some by name; ``classes``: the class
        names of a multiclass task (``spec.model.classes``), None for the others."""
        self.features = features
        self.task = task
        self.classes = tuple(classes) if classes is not None else None
        self.n_classes = len(self.classes) if self.classes is not None else 0  # (0: one score)
        if (task == "multiclass") != (self.classes is not None) or self.n_classes == 1:
            raise ValueError(f"classes: two or more with task multiclass, none with {task} "
                             f"(got {self.classes})")  # fmt: skip
        params = params if params is not None else self.params_type()  # type: ignore[call-arg]
        if not isinstance(params, self.params_type):
            raise TypeError(
                f"{type(self).__name__} takes {self.params_type.__name__}, not "
                f"{type(params).__name__}"
            )
        self.params = dataclasses.replace(params, **overrides) if overrides else params
        self.schema = (
            features if isinstance(features, FeatureSchema) else FeatureSchema.from_spec(features)
        )
        self._scaler = Standardizer(len(self.schema.num_idx))
        self._n_seen = 0
        self._init_state()

    # -- to implement -------------------------------------------------------------
    def _init_state(self) -> None:
        raise NotImplementedError

    def _learn(
        self, X: np.ndarray, A: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Update from raw rows ``X`` and the transposed design ``A`` (see ``Standardizer``),
        each row's loss weighted by ``w`` (given only to a learner that ``learns_weights``);
        the rows' predictions before the update, if it made them (``predicts_in_update``)."""
        raise NotImplementedError

    def _predict(self, X: np.ndarray, A: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _get_state(self) -> State:
        raise NotImplementedError

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        raise NotImplementedError

    # -- public interface -----------------------------------------------------------
    @property
    def n_seen(self) -> int:
        return self._n_seen

    def spec(self) -> dict[str, Any]:
        """The ``spec.model`` mapping this learner was made from."""
        out = {
            "task": self.task,
            "algorithm": self.algorithm,
            "features": self.schema.describe(),
            "params": dataclasses.asdict(self.params),
        }
        if self.classes is not None:
            out["classes"] = list(self.classes)
        return out

    def learn_many(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> None:
        """Learn rows ``X`` with labels ``y``; ``w``: each row's sample weight (its loss
        scaled), for a learner that ``learns_weights``."""
        self._update(X, y, w)

    def learn_predict_many(
        self, X: np.ndarray, y: np.ndarray, n: int | None = None, w: np.ndarray | None = None
    ) -> np.ndarray:
        """Predict the first ``n`` rows (all when None) with the model as it stands, then
        learn every row: prequential test-then-train of a mini-batch.

        A learner whose update makes these predictions in its own forward pass
        (the linear ones) shares it; their standardisation has then taken in the
        batch's feature values (never its labels), as the update does.
        """
        n = X.shape[0] if n is None else n
        if not self.predicts_in_update:
            before = self.predict_many(X[:n])
            self._update(X, y, w)
            return before
        p = self._update(X, y, w)
        return p[:n] if p is not None else self._blank(0)

    predicts_in_update = False  # whether _learn returns the batch's predictions before it
    learns_weights = False  # whether learning takes sample weights (w)

    def learn_predict_batches(
        self, X: np.ndarray, y: np.ndarray, edges: np.ndarray, w: np.ndarray | None = None
    ) -> np.ndarray:
        """:meth:`learn_predict_many` of consecutive mini-batches in turn (batch ``i`` is rows
        ``edges[i]:edges[i + 1]``, none empty, from ``edges[0] == 0`` to the last row): every
        row's prediction before its batch was learned.

        All or nothing: when a batch cannot be learned (a bad value, or an update
        that would make the model non-finite) the error is raised and the state is
        what it was before the first batch; the caller may then learn them one by one.
        Learners that can share work between the batches do so (the linear ones).
        """
        saved = self.snapshot()
        try:
            return np.concatenate([
                self.learn_predict_many(X[a:b], y[a:b], w=None if w is None else w[a:b])
                for a, b in pairwise(edges.tolist())
            ])  # fmt: skip
        except Exception:
            self.set_state(saved)
            raise

    def snapshot(self) -> State:
        """Its state, copied (what :meth:`set_state` takes back)."""
        return {k: np.array(v, copy=True) for k, v in self.get_state().items()}

    def _checked(
        self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and targets as an update takes them: the schema's width, the task's labels,
        as many of each, and as many sample weights (finite, not negative), if any."""
        X = self.schema.check_matrix(X)
        y = check_targets(self.task, y, self.n_classes)
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
        if w is not None:
            if not self.learns_weights:
                raise ValueError(f"{self.algorithm} does not learn sample weights")
            if w.shape != y.shape or not np.isfinite(w).all() or (w < 0).any():
                raise ValueError(f"sample weights: {y.shape[0]} finite values >= 0, one a row")
        return X, y

    def _update(
        self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
    ) -> np.ndarray | None:
        X, y = self._checked(X, y, w)
        if X.shape[0] == 0:
            return None
        scaler = self._scaler.get_state()
        undo = self._undo(X)
        A = self._scaler.update_design(self._numeric(X))
        with np.errstate(over="ignore", invalid="ignore"):  # checked right below
            p = self._learn(X, A, y) if w is None else self._learn(X, A, y, w)
            finite = self._finite(X)  # (its sums may overflow too)
        if not finite:
            # refused, not applied: the state is what it was before this batch
            self._scaler.set_state({k: np.array(v, copy=True) for k, v in scaler.items()})
            self._restore(undo)
            raise NonFiniteUpdate
        self._n_seen += X.shape[0]
        return p

    def _undo(self, X: np.ndarray) -> Any:
        """What :meth:`_restore` needs to take back an update on ``X`` (cheap: what it touches)."""
        return None

    def _restore(self, undo: Any) -> None:
        return None

    def _finite(self, X: np.ndarray) -> bool:
        """Whether the state an update on ``X`` touched is finite."""
        return True

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Probability of class 1 (binary), the predicted value (regression), shape ``(n,)``;
        or the probability of each class (multiclass), shape ``(n, k)``."""
        X = self.schema.check_matrix(X)
        if X.shape[0] == 0:
            return self._blank(0)
        return self._predict(X, self._scaler.design(self._numeric(X)))

    def _blank(self, n: int) -> np.ndarray:
        """Room for the scores of ``n`` rows, shaped as the task's (not initialised)."""
        return np.empty((n, self.n_classes)) if self.n_classes else np.empty(n)

    def learn_one(self, x: Mapping[str, Any], y: float) -> None:
        self.learn_many(self.schema.encode_one(x), np.array([y], dtype=np.float64))

    def predict_one(self, x: Mapping[str, Any]) -> Any:
        """A float (binary, regression), or the classes' probabilities (multiclass)."""
        p = self.predict_many(self.schema.encode_one(x))[0]
        return p if self.n_classes else float(p)

    def _numeric(self, X: np.ndarray) -> np.ndarray:
        return X if self.schema.all_numeric else X[:, self.schema.num_idx]

    # -- the public learner contract (tideline.model) ----------------------------------
    def learn(self, X: np.ndarray, y: np.ndarray) -> None:
        self.learn_many(X, y)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_many(X)

    def learn_predict(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.learn_predict_many(X, y)

    def save(self) -> bytes:
        """The learned state in the array format (:mod:`tideline.codec`), never pickle."""
        return codec.encode(self.get_state())

    def load(self, state: bytes) -> None:
        self.set_state(codec.decode(state)[0])

    def predictor(self) -> Callable[[np.ndarray], np.ndarray]:
        """A frozen prediction function for serving (rows encoded by the schema).

        Learners may fold their preprocessing into it; the learner must not
        learn while the function is in use.
        """
        return self.predict_many

    def soften(self, keep: float) -> None:
        """Keep only ``keep`` (0..1] of the confidence in what was learned; predictions do not move.

        After concept drift, old samples speak for a world that is gone: a
        learner that held on to them would need as many new samples to move.
        Softening makes the next updates count as if the learner had seen a
        ``keep`` fraction of its past (the rest is forgotten towards the
        prior), so it adapts at the speed of a young model from where it
        stands. Learners that keep no such confidence (a forest's leaves
        re-estimate from their own counts) leave it as is.
        """
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep must be in (0, 1] (got {keep})")
        self._soften(keep)

    def _soften(self, keep: float) -> None:
        return None

    def clone(self) -> Learner:
        """A fresh, untrained learner with the same hyperparameters (and features: a schema of
        its own, its counters at 0, of the same parsed features - not parsed again)."""
        return type(self)(FeatureSchema(self.schema.features), self.task, self.params,
                          classes=self.classes)  # fmt: skip

    def get_state(self) -> State:
        state = {"n_seen": np.array(self._n_seen, dtype=np.int64)}
        state.update(self._scaler.get_state())
        state.update(self._get_state())
        return state

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self._n_seen = int(state["n_seen"])
        self._scaler.set_state(state)
        self._set_state(state)

    def copy(self) -> Learner:
        """A learner with the same hyperparameters and the same learned state."""
        other = self.clone()
        other.set_state(self.snapshot())
        return other

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, params={self.params!r})"
