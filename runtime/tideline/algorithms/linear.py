"""Linear learners: logistic (binary), squared loss (regression), softmax or one-vs-rest
logistic (multiclass).

Coordinates are the standardised numeric features, a bias, and one weight per
hashed bucket of every categorical feature. Four update rules share the
forward pass:

``newton`` (the default for ``sgd``)
    A Laplace-approximated Bayesian update (recursive least squares for
    regression): a dense precision matrix over the numeric features and the
    bias, a diagonal one over the categorical buckets; each mini-batch adds
    its curvature ``X^T diag(h) X`` and takes one Newton step. A forgetting
    factor per sample keeps the posterior from hardening, so the model keeps
    tracking a drifting stream. Mini-batches of 64 learn about as much per
    sample as per-sample SGD, which a plain mini-batch gradient step does not
    (it loses 1-2 accuracy points on short streams).
``adagrad`` / ``sgd``
    Mini-batch gradient steps with per-coordinate AdaGrad rates, or a fixed rate.
``ftrl``
    FTRL-Proximal (McMahan et al., 2013) with L1 and L2, giving sparse weights.

Multiclass (``k`` classes) keeps a weight vector per class, every state array
gaining a last axis of ``k`` (``newton``'s precision matrix: one per class, a
first axis of ``k``); scores are the classes' probabilities, ``(n, k)``:

``sgd`` (:class:`SoftmaxLearner`)
    Multinomial logistic (softmax) regression. ``adagrad`` and ``sgd`` take
    its exact gradient per coordinate and class. ``newton`` keeps the diagonal
    blocks of the softmax's Hessian, class ``j``'s being
    ``sum_i p_ij (1 - p_ij) x_i x_i^T``, and drops the blocks between classes
    (``-p_ij p_il x_i x_i^T``): the full Hessian has ``(k d)^2`` entries and a
    Cholesky of ``(k d)^3`` work, the blocks ``k d^2`` and ``k`` solves of
    ``d^3``. Each class then steps as its own one-vs-rest Newton step would on
    the coupled (softmax) gradient. The blocks ``D`` are within a factor of two
    of the true curvature ``H`` (``H <= 2 D``: per row, ``2 D - H`` is
    ``diag(p(1 - p)) + p p^T - diag(p^2)``, diagonally dominant), so the step
    ``-D^-1 g`` never raises the loss's quadratic model
    (``g.s + s.H.s / 2 <= g.s + s.D.s = 0``); the prior and the forgetting
    then hold it as in the binary learner. In a prototype on River's
    ImageSegments (7 classes, prequential) the blocks scored 89.3% accuracy,
    one shared curvature matrix (``2 max_j p_ij (1 - p_ij)`` a row, a bound on
    ``H`` that keeps ``d^2`` numbers) 84.3%, the halved blocks (``2 D``, also a
    bound) 88.2%; on RandomRBF, Waveform and LED the three were within 0.3
    points. Their size, ``k (d + 1)^2``, is bounded by the spec
    (:data:`tideline.spec.MAX_NEWTON_SIZE`).
``ftrl`` (:class:`OneVsRestFTRL`)
    One FTRL-Proximal logistic model per class against the others, on one
    shared design; the classes' probabilities are normalised to sum to 1
    (in log space, so that no class underflows to nothing).

Examples
--------
>>> import numpy as np
>>> from tideline.algorithms import make_learner
>>> m = make_learner({"task": "binary", "algorithm": "sgd",
...                   "features": [{"name": "a"}, {"name": "b"}]})
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(2000, 2)); y = (X[:, 0] - X[:, 1] > 0).astype(float)
>>> for i in range(0, 2000, 64): m.learn_many(X[i:i + 64], y[i:i + 64])
>>> float(np.mean((m.predict_many(X) > 0.5) == y)) > 0.97
True

Three classes:

>>> m = make_learner({"task": "multiclass", "algorithm": "sgd", "classes": ["a", "b", "c"],
...                   "features": [{"name": "a"}, {"name": "b"}]})
>>> y = np.digitize(X[:, 0] - X[:, 1], [-1.0, 1.0]).astype(float)  # 0, 1 or 2
>>> for i in range(0, 2000, 64): m.learn_many(X[i:i + 64], y[i:i + 64])
>>> p = m.predict_many(X); p.shape, bool(np.allclose(p.sum(axis=1), 1.0))
((2000, 3), True)
>>> float(np.mean(p.argmax(axis=1) == y)) > 0.95
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from itertools import pairwise
from typing import Any

import numpy as np
from scipy.linalg.lapack import dposv
from scipy.special import expit, log_expit

from tideline.algorithms.base import Learner, NonFiniteUpdate, State
from tideline.spec import OPTIMIZERS, FTRLParams, SGDParams

_EPS = 1e-12


class LinearLearner(Learner):
    """A generalised linear model with a choice of update rule (see module docs)."""

    algorithm = "sgd"
    params_type: type[SGDParams] | type[FTRLParams] = SGDParams
    params: Any  # SGDParams here, FTRLParams in FTRLLearner (its optimizer is "ftrl")

    def _init_state(self) -> None:
        self.optimizer = getattr(self.params, "optimizer", "ftrl")
        if self.optimizer not in (*OPTIMIZERS, "ftrl"):  # (ftrl: FTRLLearner's own)
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}")
        k = len(self.schema.num_idx) + 1  # numeric weights + bias (last)
        c = self.schema.n_cat_total
        self._w = np.zeros(k)
        self._wc = np.zeros(c)
        if self.optimizer == "newton":
            prior = self.params.priorPrecision
            self._P = np.eye(k) * prior
            self._Pc = np.full(c, prior)
        elif self.optimizer in ("adagrad", "ftrl"):
            # AdaGrad: sum of squared gradients. FTRL: n (squared grads) and z.
            self._G = np.zeros(k)
            self._Gc = np.zeros(c)
            if self.optimizer == "ftrl":
                self._z = np.zeros(k)
                self._zc = np.zeros(c)

    # -- design ---------------------------------------------------------------------
    def _categorical(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (row, bucket) pairs of the categorical features that have a value."""
        if not len(self.schema.cat_idx):
            return _EMPTY_INT, _EMPTY_INT
        idx = X[:, self.schema.cat_idx].astype(np.int64)
        valid = idx >= 0
        rows = np.nonzero(valid)[0]
        cols = (idx + self.schema.cat_offsets)[valid]
        return rows, cols

    predicts_in_update = True
    learns_weights = True  # a row's weight scales its gradient (and its curvature: newton)

    def _margin(self, A: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        z = self._w @ A
        if len(cols):
            z += np.bincount(rows, weights=self._wc[cols], minlength=A.shape[1])
        return z

    def _link(self, z: np.ndarray) -> np.ndarray:
        # expit: the logistic function as one ufunc (it never overflows); a mini-batch's
        # 0.5 + 0.5 * tanh(z / 2) took three numpy calls, three times as long
        return expit(z) if self.task == "binary" else z

    def _predict(self, X: np.ndarray, A: np.ndarray) -> np.ndarray:
        rows, cols = self._categorical(X)
        return self._link(self._margin(A, rows, cols))

    # -- learning ---------------------------------------------------------------------
    def _learn(
        self, X: np.ndarray, A: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
    ) -> np.ndarray:
        # A is the transposed design: one row per coordinate, one column per sample.
        rows, cols = self._categorical(X)
        return self._step(A, rows, cols, y, w)

    def learn_predict_batches(
        self, X: np.ndarray, y: np.ndarray, edges: np.ndarray, w: np.ndarray | None = None
    ) -> np.ndarray:
        """The batches' designs and categorical buckets are worked out once for the block
        (:meth:`Standardizer.update_designs`), and the finite check made once at its end;
        each batch then costs its update alone."""
        X, y = self._checked(X, y, w)
        if edges[0] != 0 or edges[-1] != X.shape[0]:
            raise ValueError(f"batches from row {edges[0]} to {edges[-1]} of {X.shape[0]} rows")
        saved = self.snapshot()
        try:
            A = self._scaler.update_designs(self._numeric(X), edges)
            rows, cols = self._categorical(X)
            cut = np.searchsorted(rows, edges).tolist()  # (rows ascend)
            p = self._blank(len(y))
            with np.errstate(over="ignore", invalid="ignore"):  # checked right below
                for i, (a, b) in enumerate(pairwise(edges.tolist())):
                    r0, r1 = cut[i], cut[i + 1]
                    p[a:b] = self._step(A[:, a:b], rows[r0:r1] - a, cols[r0:r1], y[a:b],
                                        None if w is None else w[a:b])  # fmt: skip
            if not (np.isfinite(self._w).all() and np.isfinite(self._wc).all()):
                raise NonFiniteUpdate
        except Exception:
            self.set_state(saved)
            raise
        self._n_seen += X.shape[0]
        return p

    def _step(
        self, A: np.ndarray, rows: np.ndarray, cols: np.ndarray, y: np.ndarray,
        w: np.ndarray | None = None,
    ) -> np.ndarray:  # fmt: skip
        """One mini-batch's update from its transposed design and its (row, bucket) pairs,
        each row's loss weighted by ``w``; its predictions before it."""
        p = self._link(self._margin(A, rows, cols))
        r = p - y  # d loss / d margin, for both the logistic and the squared loss
        if w is not None:
            r *= w
        n = A.shape[1]
        c = self.schema.n_cat_total
        g = A @ r
        gc = np.bincount(cols, weights=r[rows], minlength=c) if len(cols) else None
        l2 = self.params.l2
        if self.optimizer == "newton":
            self._newton(A, rows, cols, p, g, gc, n, l2, w)
        elif self.optimizer == "ftrl":
            self._ftrl(A, rows, cols, r, g, gc)
        else:
            self._gradient(A, rows, cols, r, g, gc, n, l2)
        return p

    def _newton(self, A, rows, cols, p, g, gc, n, l2, w) -> None:  # type: ignore[no-untyped-def]
        h = p * (1.0 - p) if self.task == "binary" else np.ones_like(p)
        h = np.maximum(h, 1e-4)
        if w is not None:
            h = h * w
        prior = self.params.priorPrecision
        decay = self.params.forgetting**n
        # Forget towards the prior, not towards zero, so an unused direction
        # never becomes infinitely soft.
        P = self._P * decay  # (a new array: see _undo)
        P += (A * h) @ A.T
        P.flat[:: P.shape[0] + 1] += (1.0 - decay) * prior + l2 * n
        g = g + l2 * n * self._w
        # P is symmetric positive definite (prior + curvature): a Cholesky solve.
        # LAPACK's dposv directly costs a third of np.linalg.solve's checks.
        _, step, info = dposv(P, g)
        if info != 0:  # pragma: no cover - only if P lost definiteness to rounding
            step = np.linalg.lstsq(P, g, rcond=None)[0]
        self._P = P
        self._w = self._w - step
        if gc is not None:
            Pc = self._Pc * decay + (1.0 - decay) * prior + l2 * n
            Pc += np.bincount(cols, weights=h[rows], minlength=len(Pc))
            self._Pc = Pc
            self._wc = self._wc - (gc + l2 * n * self._wc) / Pc

    def _gradient(self, A, rows, cols, r, g, gc, n, l2) -> None:  # type: ignore[no-untyped-def]
        lr = self.params.learningRate
        g = g / n + l2 * self._w
        if self.optimizer == "adagrad":
            self._G = self._G + g**2
            self._w = self._w - lr * g / (np.sqrt(self._G) + 1e-8)
        else:
            self._w = self._w - lr * g
        if gc is not None:
            gc = gc / n + l2 * self._wc
            if self.optimizer == "adagrad":
                self._Gc = self._Gc + gc**2
                self._wc = self._wc - lr * gc / (np.sqrt(self._Gc) + 1e-8)
            else:
                self._wc = self._wc - lr * gc

    def _ftrl(self, A, rows, cols, r, g, gc) -> None:  # type: ignore[no-untyped-def]
        self._w, self._z, self._G = _ftrl_step(
            self.params, self._w, self._z, self._G, g, (A * A) @ (r * r)
        )
        if gc is not None:
            g2c = np.bincount(cols, weights=r[rows] ** 2, minlength=len(gc))
            self._wc, self._zc, self._Gc = _ftrl_step(
                self.params, self._wc, self._zc, self._Gc, gc, g2c
            )

    def predictor(self) -> Callable[[np.ndarray], np.ndarray]:
        """Predictions with the standardisation folded into the weights: one product per batch."""
        sch = self.schema
        scaled = self._w[:-1] * self._scaler.scale
        v = np.zeros(sch.width)
        v[sch.num_idx] = scaled
        c = float(self._w[-1] - scaled @ self._scaler.mean)
        binary = self.task == "binary"
        cat_idx, offsets = sch.cat_idx, sch.cat_offsets
        has_cat = len(cat_idx) > 0
        # A zero slot before each categorical feature's weights, so a code of -1 (no
        # value) reads 0 with no test; for a binary task the weights are halved
        # ahead, sigmoid(z) being 0.5 + 0.5 * tanh(z / 2).
        half = 0.5 if binary else 1.0
        vh, ch = v * half, c * half
        wc_pad = np.insert(self._wc, offsets, 0.0) * half
        pad_offsets = offsets + np.arange(1, len(cat_idx) + 1)
        ones = np.ones(len(cat_idx))

        # values are clipped where training clips them (see Standardizer): a huge input
        # answers like the largest one the model knows, never inf or NaN
        lo_num, hi_num = self._scaler.bounds()
        lo, hi = np.full(sch.width, -np.inf), np.full(sch.width, np.inf)
        lo[sch.num_idx], hi[sch.num_idx] = lo_num, hi_num
        num = [(j, float(vh[j]), float(lo[j]), float(hi[j])) for j in sch.num_idx.tolist()]
        cats = list(zip(cat_idx.tolist(), pad_offsets.tolist(), strict=True))
        wc_list = wc_pad.tolist()

        def predict_few(X: np.ndarray) -> np.ndarray:
            # One or two rows: plain floats beat numpy's per-call overhead 4 to 1.
            out = []
            for row in X.tolist():
                z = ch
                for j, w, a, b in num:
                    x = row[j]
                    z += w * (a if x < a else b if x > b else x)
                for j, off in cats:
                    z += wc_list[int(row[j]) + off]
                out.append(0.5 + 0.5 * math.tanh(z) if binary else z)
            return np.array(out)

        def predict(X: np.ndarray) -> np.ndarray:
            if X.shape[0] <= 2:
                return predict_few(X)
            # np.maximum/np.minimum: np.clip's Python wrapper costs as much again
            z = np.minimum(np.maximum(X, lo), hi) @ vh
            z += ch
            if has_cat:
                idx = X[:, cat_idx].astype(np.intp)
                idx += pad_offsets
                z += wc_pad.take(idx) @ ones
            if binary:
                np.tanh(z, out=z)
                z *= 0.5
                z += 0.5
            return z

        return predict

    # -- state ----------------------------------------------------------------------
    _STATE = {
        "newton": ("_w", "_wc", "_P", "_Pc"),
        "adagrad": ("_w", "_wc", "_G", "_Gc"),
        "sgd": ("_w", "_wc"),
        "ftrl": ("_w", "_wc", "_G", "_Gc", "_z", "_zc"),
    }

    def _undo(self, X: np.ndarray) -> Any:
        # Every update rule replaces its state arrays and never writes into them: the arrays
        # themselves are the undo, no copy. (A copy of the buckets a batch touched, kept for
        # hashed features past 8,192 buckets, missed what l2 and forgetting move in all the
        # others: a refused batch left them shrunk.)
        return [(a, getattr(self, a)) for a in self._STATE[self.optimizer]]

    def _restore(self, undo: Any) -> None:
        for a, value in undo:
            setattr(self, a, value)

    def _finite(self, X: np.ndarray) -> bool:
        # every bucket, not only those the batch touched: l2 and forgetting move them all
        return _all_finite(self._w) and _all_finite(self._wc)

    def _soften(self, keep: float) -> None:
        if self.optimizer == "newton":
            prior = self.params.priorPrecision
            self._P *= keep
            self._P.flat[:: self._P.shape[0] + 1] += (1.0 - keep) * prior
            self._Pc = self._Pc * keep + (1.0 - keep) * prior
        elif self.optimizer == "adagrad":
            self._G *= keep
            self._Gc *= keep
        elif self.optimizer == "ftrl":
            self._soften_ftrl(keep)

    def _soften_ftrl(self, keep: float) -> None:
        """Scale FTRL's squared-gradient sums; move z so that the weights stay where they are."""
        alpha = self.params.alpha
        beta = self.params.beta
        l1 = self.params.l1
        l2 = self.params.l2
        for z, G in ((self._z, self._G), (self._zc, self._Gc)):
            before = (beta + np.sqrt(G)) / alpha + l2
            G *= keep
            after = (beta + np.sqrt(G)) / alpha + l2
            shrunk = np.maximum(np.abs(z) - l1, 0.0)
            live = shrunk > 0
            z[live] = np.sign(z[live]) * (shrunk[live] * after[live] / before[live] + l1)

    def _get_state(self) -> State:
        return {f"linear.{a[1:]}": getattr(self, a) for a in self._STATE[self.optimizer]}

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        for a in self._STATE[self.optimizer]:
            current = getattr(self, a)
            value = np.array(state[f"linear.{a[1:]}"], dtype=np.float64)
            if value.shape != current.shape:
                raise ValueError(
                    f"state linear.{a[1:]} has shape {value.shape}, the schema needs {current.shape}"
                )
            setattr(self, a, value)

    @property
    def weights(self) -> dict[str, float]:
        """Numeric weights by feature name (standardised scale), plus ``_bias``."""
        names = [self.schema.names[i] for i in self.schema.num_idx]
        return dict(zip([*names, "_bias"], self._w.tolist(), strict=True))


class FTRLLearner(LinearLearner):
    algorithm = "ftrl"
    params_type = FTRLParams


def _ftrl_step(
    params: FTRLParams, w: np.ndarray, z: np.ndarray, G: np.ndarray, g: np.ndarray, g2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FTRL-Proximal's per-coordinate update of weights ``w`` (and its sums ``z``, ``G``) from
    the gradient ``g`` and the squared gradients ``g2``: the new ``w``, ``z``, ``G``, as new
    arrays (see :meth:`LinearLearner._undo`)."""
    alpha, beta, l1, l2 = params.alpha, params.beta, params.l1, params.l2
    G_new = G + g2
    sigma = (np.sqrt(G_new) - np.sqrt(G)) / alpha
    z_new = z + (g - sigma * w)
    shrunk = np.sign(z_new) * np.maximum(np.abs(z_new) - l1, 0.0)
    return -shrunk / ((beta + np.sqrt(G_new)) / alpha + l2), z_new, G_new


class SoftmaxLearner(LinearLearner):
    """``sgd`` for ``multiclass``: softmax regression, a weight vector per class (see the
    module docs); the binary learner's design, categorical buckets, undo and state names."""

    algorithm = "sgd"

    def _init_state(self) -> None:
        super()._init_state()  # (the optimizer checked, its arrays named: a column per class)
        k = self.n_classes
        for a in self._STATE[self.optimizer]:
            v = getattr(self, a)  # _P: (d, d) -> (k, d, d); the others: (m,) -> (m, k)
            setattr(self, a, np.stack([v] * k, axis=0 if a == "_P" else -1))

    def _margin(self, A: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        Z = A.T @ self._w
        if len(cols):
            Z += _sum_by(rows, self._wc[cols], A.shape[1])
        return Z

    def _link(self, z: np.ndarray) -> np.ndarray:
        return _softmax(z)

    def _probabilities(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each class's probability as its loss reads it, and the scores (here both the
        softmax); ``Z`` may be overwritten."""
        S = _softmax(Z)
        return S, S

    def _step(
        self, A: np.ndarray, rows: np.ndarray, cols: np.ndarray, y: np.ndarray,
        w: np.ndarray | None = None,
    ) -> np.ndarray:  # fmt: skip
        n = A.shape[1]
        S, p = self._probabilities(self._margin(A, rows, cols))
        R = S.copy()  # d loss / d margins: the probabilities less the one-hot label
        R[np.arange(n), y.astype(np.intp)] -= 1.0
        if w is not None:
            R *= w[:, None]
        g = A @ R
        gc = _sum_by(cols, R[rows], self.schema.n_cat_total) if len(cols) else None
        l2 = self.params.l2
        if self.optimizer == "newton":
            self._newton(A, rows, cols, S, g, gc, n, l2, w)
        elif self.optimizer == "ftrl":
            self._ftrl(A, rows, cols, R, g, gc)
        else:
            self._gradient(A, rows, cols, R, g, gc, n, l2)
        return p

    def _newton(self, A, rows, cols, p, g, gc, n, l2, w) -> None:  # type: ignore[no-untyped-def]
        h = np.maximum(p * (1.0 - p), 1e-4)  # (n, k): each class's own curvature
        if w is not None:
            h = h * w[:, None]
        prior = self.params.priorPrecision
        decay = self.params.forgetting**n
        P = self._P * decay  # (k, d, d): the diagonal blocks (see the module docs); new (_undo)
        P += (A * h.T[:, None, :]) @ A.T
        d = np.arange(P.shape[1])
        P[:, d, d] += (1.0 - decay) * prior + l2 * n
        g = g + l2 * n * self._w
        self._P = P
        self._w = self._w - np.linalg.solve(P, g.T[:, :, None])[:, :, 0].T
        if gc is not None:
            Pc = self._Pc * decay + (1.0 - decay) * prior + l2 * n
            Pc += _sum_by(cols, h[rows], len(Pc))
            self._Pc = Pc
            self._wc = self._wc - (gc + l2 * n * self._wc) / Pc

    def _ftrl(self, A, rows, cols, r, g, gc) -> None:  # type: ignore[no-untyped-def]
        self._w, self._z, self._G = _ftrl_step(
            self.params, self._w, self._z, self._G, g, (A * A) @ (r * r)
        )
        if gc is not None:
            g2c = _sum_by(cols, r[rows] ** 2, len(gc))
            self._wc, self._zc, self._Gc = _ftrl_step(
                self.params, self._wc, self._zc, self._Gc, gc, g2c
            )

    def _soften(self, keep: float) -> None:
        if self.optimizer != "newton":
            super()._soften(keep)  # (per coordinate: any shape)
            return
        prior = self.params.priorPrecision
        self._P *= keep
        d = np.arange(self._P.shape[1])
        self._P[:, d, d] += (1.0 - keep) * prior
        self._Pc = self._Pc * keep + (1.0 - keep) * prior

    def predictor(self) -> Callable[[np.ndarray], np.ndarray]:
        """The standardisation folded into the weights, as the binary learner's (numpy alone:
        no plain-float path for one or two rows)."""
        sch = self.schema
        scaled = self._w[:-1] * self._scaler.scale[:, None]
        V = np.zeros((sch.width, self.n_classes))
        V[sch.num_idx] = scaled
        c = self._w[-1] - self._scaler.mean @ scaled
        cat_idx, offsets = sch.cat_idx, sch.cat_offsets
        wc_pad = np.insert(self._wc, offsets, 0.0, axis=0)  # (a zero row for "no value")
        pad_offsets = offsets + np.arange(1, len(cat_idx) + 1)
        lo_num, hi_num = self._scaler.bounds()
        lo, hi = np.full(sch.width, -np.inf), np.full(sch.width, np.inf)
        lo[sch.num_idx], hi[sch.num_idx] = lo_num, hi_num
        link = self._link

        def predict(X: np.ndarray) -> np.ndarray:
            Z = np.minimum(np.maximum(X, lo), hi) @ V
            Z += c
            if len(cat_idx):
                idx = X[:, cat_idx].astype(np.intp)
                idx += pad_offsets
                Z += wc_pad[idx].sum(axis=1)
            return link(Z)

        return predict


class OneVsRestFTRL(SoftmaxLearner):
    """``ftrl`` for ``multiclass``: an FTRL-Proximal logistic model per class against the rest,
    their probabilities normalised (see the module docs)."""

    algorithm = "ftrl"
    params_type = FTRLParams

    def _link(self, z: np.ndarray) -> np.ndarray:
        return _softmax(log_expit(z))  # (normalised in log space: no class underflows to 0)

    def _probabilities(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return expit(Z), self._link(Z)  # (each class's own logistic loss)


# multiclass takes these in the algorithm's place (a forest takes every task itself)
MULTICLASS: dict[str, type[LinearLearner]] = {"sgd": SoftmaxLearner, "ftrl": OneVsRestFTRL}


def _softmax(Z: np.ndarray) -> np.ndarray:
    """Each row's softmax, in place."""
    Z -= Z.max(axis=1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=1, keepdims=True)
    return Z


def _sum_by(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """``out[index[i]] += values[i]`` for rows ``values`` of ``k`` numbers: ``(size, k)``."""
    k = values.shape[1]
    flat = (index[:, None] * k + np.arange(k)).ravel()
    return np.bincount(flat, weights=values.ravel(), minlength=size * k).reshape(size, k)


def _all_finite(a: np.ndarray) -> bool:
    """``np.isfinite(a).all()``, in one reduction when it holds (every batch but a refused one):
    a sum is finite only if every term is, NaN and inf carrying through it; the exact test
    only when it is not, as finite terms past 1e308 can overflow the sum. Called where
    overflow is ignored (the update's ``np.errstate``).

    >>> with np.errstate(over="ignore", invalid="ignore"):
    ...     print(_all_finite(np.array([1.0, 2.0])), _all_finite(np.array([1e308, 1e308])),
    ...           _all_finite(np.array([1.0, np.nan])), _all_finite(np.array([np.inf, -np.inf])))
    True True False False
    """
    return math.isfinite(np.add.reduce(a, axis=None)) or bool(np.isfinite(a).all())


_EMPTY_INT = np.zeros(0, dtype=np.int64)
