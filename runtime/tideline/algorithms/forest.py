"""An online random forest: extremely randomised trees grown from a stream.

Each tree sees every sample with a Poisson(``poissonRate``) weight (online
bagging, as in Oza & Russell and River's ARF). A leaf keeps the last samples
that reached it in its tree's bounded buffer; once it holds ``gracePeriod``
weighted samples it draws ``nCandidates`` random tests (a feature, and a
threshold uniform between that feature's minimum and maximum at the leaf,
as extremely randomised trees do) and splits on the one that most reduces
the squared error, if it reduces it by at least ``minGain`` (relative).
Squared error is the Gini impurity for 0/1 labels, so one criterion serves
both tasks. A leaf predicts the mean of its labels, shrunk towards its
parent's. Each tree watches its own prequential error with a Page-Hinkley
test (its 0/1 error for ``binary`` and ``multiclass``, its squared error over
the label variance for ``regression``): when the test fires (concept drift),
the tree is regrown from scratch, as ARF replaces a tree whose drift
detector fired.

``multiclass`` (``k`` classes) is the same forest on one-hot labels: a node
keeps its weighted count per class (``(nodes, k)``), the squared error of
one-hot labels is again the Gini impurity (``n - sum_c s_c^2 / n``), and a
leaf predicts its class frequencies shrunk towards its parent's (the root's
towards the uniform ``1 / k``): probabilities that sum to 1, never 0 for a
class. A class count per node makes a tree ``k`` times the binary one.

Everything is vectorised over the rows of a batch; trees are flat arrays
(feature, threshold, children, counts), so the state round-trips as arrays.

Examples
--------
>>> import numpy as np
>>> from tideline.algorithms import make_learner
>>> m = make_learner({"task": "binary", "algorithm": "forest",
...                   "features": [{"name": "a"}, {"name": "b"}]})
>>> rng = np.random.default_rng(1)
>>> X = rng.uniform(-1, 1, size=(4000, 2)); y = ((X[:, 0] * X[:, 1]) > 0).astype(float)
>>> for i in range(0, 4000, 64): m.learn_many(X[i:i + 64], y[i:i + 64])
>>> float(np.mean((m.predict_many(X) > 0.5) == y)) > 0.9
True

Four classes, by quadrant:

>>> m = make_learner({"task": "multiclass", "algorithm": "forest", "classes": list("abcd"),
...                   "features": [{"name": "a"}, {"name": "b"}]})
>>> y = (2 * (X[:, 0] > 0) + (X[:, 1] > 0)).astype(float)
>>> for i in range(0, 4000, 64): m.learn_many(X[i:i + 64], y[i:i + 64])
>>> float(np.mean(m.predict_many(X).argmax(axis=1) == y)) > 0.9
True
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tideline.algorithms.base import Learner, State
from tideline.spec import ForestParams

_BUFFER = 2048  # samples kept per tree for growing leaves
_SHRINK = 1.0  # pseudo-count pulling a leaf's mean towards its parent's
# Page-Hinkley on each tree's error (river's defaults): tolerance, alarm level, warm-up.
_PH_DELTA, _PH_LAMBDA, _PH_MIN = 0.005, 50.0, 30


def _rng_state(rng: np.random.Generator) -> np.ndarray:
    s = rng.bit_generator.state
    m = (1 << 64) - 1
    st, inc = s["state"]["state"], s["state"]["inc"]
    return np.array(
        [st >> 64, st & m, inc >> 64, inc & m, s["has_uint32"], s["uinteger"]], dtype=np.uint64
    )


def _set_rng_state(rng: np.random.Generator, arr: np.ndarray) -> None:
    a = [int(v) for v in arr]
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": (a[0] << 64) | a[1], "inc": (a[2] << 64) | a[3]},
        "has_uint32": a[4],
        "uinteger": a[5],
    }


class _Tree:
    FIELDS = ("feat", "thr", "left", "right", "n", "s", "prior", "depth", "tries")
    BUFFER_FIELDS = ("bx", "by", "bw", "bleaf")

    def __init__(self, width: int, root_prior: float | np.ndarray) -> None:
        """``root_prior``: a number, or the ``k`` classes' (multiclass: ``s`` and ``prior``
        then keep ``k`` numbers a node)."""
        cap = 64
        self.size = 1
        self.feat = np.zeros(cap, dtype=np.int64)
        self.thr = np.zeros(cap)
        self.left = np.full(cap, -1, dtype=np.int64)
        self.right = np.full(cap, -1, dtype=np.int64)
        self.n = np.zeros(cap)
        self.s = np.zeros((cap, *np.shape(root_prior)))  # sum of labels (multiclass: per class)
        self.prior = np.full((cap, *np.shape(root_prior)), root_prior)
        self.depth = np.zeros(cap, dtype=np.int64)
        self.tries = np.zeros(cap)  # buffered weight at which the leaf next tries to split
        self.bx = np.zeros((_BUFFER, width))
        self.by = np.zeros(_BUFFER)
        self.bw = np.zeros(_BUFFER)
        self.bleaf = np.full(_BUFFER, -1, dtype=np.int64)
        self.bpos = 0
        self.err = np.array([0.0, 0.0, 0.0, 0.0])  # Page-Hinkley: n, mean, sum, min of sum

    def grow(self, need: int) -> None:
        cap = len(self.feat)
        if self.size + need <= cap:
            return
        new = max(cap * 2, self.size + need)
        for name, fill in (("feat", 0), ("thr", 0.0), ("left", -1), ("right", -1), ("n", 0.0),
                           ("s", 0.0), ("prior", 0.0), ("depth", 0), ("tries", 0.0)):  # fmt: skip
            old = getattr(self, name)
            arr = np.full((new, *old.shape[1:]), fill, dtype=old.dtype)
            arr[:cap] = old
            setattr(self, name, arr)

    def route(self, X: np.ndarray) -> np.ndarray:
        node = np.zeros(X.shape[0], dtype=np.int64)
        rows = np.arange(X.shape[0])
        while True:
            inner = self.left[node] >= 0
            if not inner.any():
                return node
            go_left = X[rows, self.feat[node]] <= self.thr[node]
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)

    def value(self, leaves: np.ndarray) -> np.ndarray:
        n = self.n[leaves] + _SHRINK
        return (self.s[leaves] + _SHRINK * self.prior[leaves]) / (
            n if self.s.ndim == 1 else n[:, None]
        )


class ForestLearner(Learner):
    """Online extremely randomised forest with online bagging (see module docs)."""

    algorithm = "forest"
    params_type = ForestParams
    params: ForestParams

    def _init_state(self) -> None:
        p = self.params
        self._rng = np.random.default_rng(p.seed)
        k = self.n_classes
        self._root_prior: float | np.ndarray = (
            np.full(k, 1.0 / k) if k else 0.5 if self.task == "binary" else 0.0
        )
        self._trees = [_Tree(self.schema.width, self._root_prior) for _ in range(p.nTrees)]
        self._resets = 0
        self._y_n = self._y_mean = self._y_m2 = 0.0

    def _predict(self, X: np.ndarray, A: np.ndarray) -> np.ndarray:
        out = np.zeros((X.shape[0], self.n_classes) if self.n_classes else X.shape[0])
        for t in self._trees:
            out += t.value(t.route(X))
        return out / len(self._trees)

    def _learn(
        self, X: np.ndarray, A: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
    ) -> None:  # (w: never given, it does not learn weights)
        if self.task == "regression":  # label variance, to scale the drift test's errors
            n_b = len(y)
            mean_b = float(y.mean())
            m2_b = float(((y - mean_b) ** 2).sum())
            n = self._y_n + n_b
            delta = mean_b - self._y_mean
            self._y_mean += delta * n_b / n
            self._y_m2 += m2_b + delta**2 * self._y_n * n_b / n
            self._y_n = n
        rate = self.params.poissonRate
        weights = self._rng.poisson(rate, size=(len(self._trees), X.shape[0])).astype(np.float64)
        for i, t in enumerate(self._trees):
            leaves = t.route(X)
            if self._drifted(t, t.value(leaves), y):
                t = self._trees[i] = _Tree(self.schema.width, self._root_prior)
                self._resets += 1
                leaves = np.zeros(X.shape[0], dtype=np.int64)
            w = weights[i]
            t.n[: t.size] += np.bincount(leaves, weights=w, minlength=t.size)
            if k := self.n_classes:  # each leaf's weight per class
                at = leaves * k + y.astype(np.int64)
                t.s[: t.size] += np.bincount(at, weights=w, minlength=t.size * k).reshape(-1, k)
            else:
                t.s[: t.size] += np.bincount(leaves, weights=w * y, minlength=t.size)
            self._buffer(t, X, y, w, leaves)

    def _drifted(self, t: _Tree, pred: np.ndarray, y: np.ndarray) -> bool:
        """Page-Hinkley over the batch, vectorised; the same as feeding errors one by one."""
        if self.task == "binary":
            e = ((pred >= 0.5) != (y >= 0.5)).astype(np.float64)
        elif self.task == "multiclass":
            e = (pred.argmax(axis=1) != y).astype(np.float64)
        else:
            var = self._y_m2 / self._y_n if self._y_n > 1 else 1.0
            e = np.minimum((pred - y) ** 2 / max(var, 1e-12), 4.0)
        n0, mean0, sum0, min0 = t.err
        n = n0 + np.arange(1, len(e) + 1)
        means = (mean0 * n0 + np.cumsum(e)) / n
        sums = sum0 + np.cumsum(e - means - _PH_DELTA)
        mins = np.minimum(np.minimum.accumulate(sums), min0)
        t.err[:] = (n[-1], means[-1], sums[-1], mins[-1])
        return bool(np.any((sums - mins > _PH_LAMBDA) & (n >= _PH_MIN)))

    def _buffer(
        self, t: _Tree, X: np.ndarray, y: np.ndarray, w: np.ndarray, leaves: np.ndarray
    ) -> None:
        max_depth = self.params.maxDepth
        keep = (w > 0) & (t.depth[leaves] < max_depth)
        m = int(keep.sum())
        if m == 0:
            return
        slots = (t.bpos + np.arange(m)) % _BUFFER
        t.bpos = int((t.bpos + m) % _BUFFER)
        t.bx[slots] = X[keep]
        t.by[slots] = y[keep]
        t.bw[slots] = w[keep]
        t.bleaf[slots] = leaves[keep]
        grace = self.params.gracePeriod
        touched = np.unique(leaves[keep])
        buffered = np.bincount(t.bleaf[t.bleaf >= 0], weights=t.bw[t.bleaf >= 0], minlength=t.size)
        for leaf in touched[buffered[touched] >= np.maximum(grace, t.tries[touched])]:
            self._try_split(t, int(leaf), grace)

    def _try_split(self, t: _Tree, leaf: int, grace: float) -> None:
        rows = np.flatnonzero(t.bleaf == leaf)
        Xl, yl, wl = t.bx[rows], t.by[rows], t.bw[rows]
        k = self.params.nCandidates
        feats = self._rng.integers(0, Xl.shape[1], size=k)
        lo, hi = Xl[:, feats].min(axis=0), Xl[:, feats].max(axis=0)
        thr = lo + self._rng.random(k) * (hi - lo)
        go_left = Xl[:, feats] <= thr  # (rows, k)
        if self.n_classes:  # one-hot labels: their squared error is the Gini impurity
            yl = np.eye(self.n_classes)[yl.astype(np.int64)]
            sse, sse_tot, n_tot = _gini(yl, wl, go_left)
        else:
            sse, sse_tot, n_tot = _squared_error(yl, wl, go_left)
        sse[hi <= lo] = np.inf
        best = int(np.argmin(sse))
        gain = (sse_tot - sse[best]) / sse_tot if sse_tot > 1e-12 else 0.0
        if not np.isfinite(sse[best]) or gain < self.params.minGain:
            t.tries[leaf] = n_tot + grace  # try again once as many new samples arrived
            return
        t.grow(2)
        a, b = t.size, t.size + 1
        t.size += 2
        t.feat[leaf], t.thr[leaf], t.left[leaf], t.right[leaf] = feats[best], thr[best], a, b
        parent_mean = (t.s[leaf] + _SHRINK * t.prior[leaf]) / (t.n[leaf] + _SHRINK)
        for child, mask in ((a, go_left[:, best]), (b, ~go_left[:, best])):
            t.n[child] = wl[mask].sum()
            t.s[child] = wl[mask] @ yl[mask]  # (multiclass: per class)
            t.prior[child] = parent_mean
            t.depth[child] = t.depth[leaf] + 1
            t.left[child] = t.right[child] = -1
            t.tries[child] = 0.0
            t.bleaf[rows[mask]] = child

    # -- state ----------------------------------------------------------------------
    def _get_state(self) -> State:
        state: State = {
            "forest.rng": _rng_state(self._rng),
            "forest.resets": np.array(self._resets),
            "forest.y": np.array([self._y_n, self._y_mean, self._y_m2]),
        }
        for i, t in enumerate(self._trees):
            for f in _Tree.FIELDS:
                state[f"forest.{i}.{f}"] = getattr(t, f)[: t.size]
            for f in _Tree.BUFFER_FIELDS:
                state[f"forest.{i}.{f}"] = getattr(t, f)
            state[f"forest.{i}.bpos"] = np.array(t.bpos)
            state[f"forest.{i}.err"] = t.err
        return state

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        _set_rng_state(self._rng, state["forest.rng"])
        self._resets = int(state["forest.resets"])
        self._y_n, self._y_mean, self._y_m2 = (float(v) for v in state["forest.y"])
        for i, t in enumerate(self._trees):
            size = len(state[f"forest.{i}.feat"])
            t.size = 1
            t.grow(size - 1)
            t.size = size
            for f in _Tree.FIELDS:
                getattr(t, f)[:size] = state[f"forest.{i}.{f}"]
            for f in _Tree.BUFFER_FIELDS:
                getattr(t, f)[:] = state[f"forest.{i}.{f}"]
            t.bpos = int(state[f"forest.{i}.bpos"])
            t.err = np.array(state[f"forest.{i}.err"], dtype=np.float64)


def _squared_error(
    y: np.ndarray, w: np.ndarray, go_left: np.ndarray
) -> tuple[np.ndarray, float, float]:
    """The weighted squared error of labels ``y`` about their mean on the two sides of each
    candidate split (columns of ``go_left``; inf where a side is empty), at the node, and
    the node's weight."""
    n_tot, s_tot, q_tot = w.sum(), w @ y, w @ (y * y)
    n_l = w @ go_left
    s_l = (w * y) @ go_left
    q_l = (w * y * y) @ go_left
    n_r, s_r, q_r = n_tot - n_l, s_tot - s_l, q_tot - q_l
    with np.errstate(divide="ignore", invalid="ignore"):
        sse = (q_l - s_l**2 / n_l) + (q_r - s_r**2 / n_r)
    sse[(n_l < 1) | (n_r < 1)] = np.inf
    return sse, q_tot - s_tot**2 / n_tot, n_tot


def _gini(Y: np.ndarray, w: np.ndarray, go_left: np.ndarray) -> tuple[np.ndarray, float, float]:
    """:func:`_squared_error` of one-hot labels ``Y`` (rows, classes): ``n - sum_c s_c^2 / n``
    a side, the Gini impurity times the side's weight."""
    n_tot, s_tot = w.sum(), w @ Y
    n_l = w @ go_left
    s_l = (w[:, None] * Y).T @ go_left  # (classes, candidates)
    n_r, s_r = n_tot - n_l, s_tot[:, None] - s_l
    with np.errstate(divide="ignore", invalid="ignore"):
        sse = (n_l - (s_l**2).sum(axis=0) / n_l) + (n_r - (s_r**2).sum(axis=0) / n_r)
    sse[(n_l < 1) | (n_r < 1)] = np.inf
    return sse, n_tot - float(s_tot @ s_tot) / n_tot, n_tot
