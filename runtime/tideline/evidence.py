"""Paired comparisons of two model versions on the same labelled samples, safe to look at often.

Every automatic decision (roll back, prove a version, unpin, judge a canary)
compares a candidate with the served version on the *same* samples: for
each labelled sample both are scored, and the difference of their quality
``d_i`` (accuracy, binary and multiclass: ``correct_candidate - correct_served``
in {-1, 0, 1}, a multiclass answer being its top class; regression:
``sq_err_served - sq_err_candidate``) is one paired observation.
Pairing removes what the two have in common (the sample's difficulty), so
a 3-point difference shows on far fewer samples than comparing two
accuracies measured on different traffic.

The operator looks at the comparison every analysis interval, forever. A
fixed-sample test (a z-test, McNemar's) checked again at every look rejects a
true null eventually: at 50 looks its false alarm rate is several times its
nominal alpha. So the interval on the mean difference is a *confidence
sequence*: it holds at every sample count at once with probability
``1 - alpha``, however often it is read and whenever one stops. We use the
Gaussian-mixture asymptotic confidence sequence of Waudby-Smith, Arnold, Wu,
Ramdas and Zhou (2021, "Time-uniform central limit theory and asymptotic
confidence sequences", Theorem 2.2), with the sample variance plugged in::

    radius_t = sqrt( 2 (t v rho^2 + 1) / (t^2 rho^2) * log( sqrt(t v rho^2 + 1) / alpha ) )

where ``v`` is the sample variance of ``d`` and ``rho`` tunes where the
sequence is tightest (``rho^2 = (-2 log alpha + log(-2 log alpha + 1)) / t_opt``).
It uses the empirical variance (two versions that agree on most samples have
a small one, so it is far tighter than Hoeffding's bound on [-1, 1]) and needs
no cap on the number of looks, unlike an alpha-spending plan.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> p = Paired()
>>> # the candidate is right where the served version is wrong on 10 % of samples, the reverse on 4 %
>>> d = rng.choice([1.0, -1.0, 0.0], size=3000, p=[0.10, 0.04, 0.86])
>>> p.update(d)
>>> lo, hi = p.interval()
>>> bool(lo > 0), round(p.mean, 3)
(True, 0.069)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from tideline.evaluate import scores
from tideline.tasks import Task

ALPHA = 0.05  # two-sided: each decision (better / worse) errs with at most 2.5 % over all looks
T_OPT = 2000  # the confidence sequence is tightest near this many samples


def cs_radius(n: int, variance: float, alpha: float = ALPHA, t_opt: int = T_OPT) -> float:
    """Half-width of the time-uniform confidence sequence after ``n`` paired samples.

    >>> round(cs_radius(2000, 0.1), 4)
    0.0273
    >>> cs_radius(0, 0.1)
    inf
    """
    if n <= 0:
        return math.inf
    la = -2.0 * math.log(alpha)
    rho2 = (la + math.log(la + 1.0)) / t_opt
    tv = n * variance * rho2 + 1.0
    return math.sqrt(2.0 * tv / (n * n * rho2) * math.log(math.sqrt(tv) / alpha))


class Paired:
    """Running sums of paired differences ``d`` (candidate minus reference), and their interval.

    ``reference`` optionally accumulates the reference's own loss (regression:
    its squared error), so a difference can be read relative to it.
    """

    __slots__ = ("n", "_s", "_ss", "_ref")

    def __init__(self) -> None:
        self.n = 0
        self._s = 0.0
        self._ss = 0.0
        self._ref = 0.0

    def update(self, d: np.ndarray, reference_loss: np.ndarray | None = None) -> None:
        d = np.asarray(d, dtype=np.float64)
        self.n += len(d)
        self._s += float(d.sum())
        self._ss += float(d @ d)
        if reference_loss is not None:
            self._ref += float(np.sum(reference_loss))

    @property
    def mean(self) -> float:
        return self._s / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        if self.n < 2:
            return 1.0  # no estimate yet: the largest a difference in [-1, 1] can have
        m = self.mean
        return max(self._ss / self.n - m * m, 0.0) * self.n / (self.n - 1)

    @property
    def reference_loss(self) -> float:
        """Mean loss of the reference over the pair's samples (0 when not recorded)."""
        return self._ref / self.n if self.n else 0.0

    def interval(self, alpha: float = ALPHA) -> tuple[float, float]:
        """The confidence sequence's interval for the mean difference now (valid at every look)."""
        r = cs_radius(self.n, self.variance, alpha)
        return self.mean - r, self.mean + r


class Constant:
    """A constant answer: every row gets ``value`` (a number, or a multiclass row's scores).

    :meth:`best` is the best constant on a window's labels: a cold model's first
    version is proven against it, for a version that cannot beat a constant has
    learned nothing worth rolling back to.

    >>> Constant.best(Task("binary"), np.array([1.0, 0.0, 1.0])).predict_many([{}] * 2).tolist()
    [1.0, 1.0]
    >>> Constant.best(Task("multiclass", ("a", "b", "c")), np.array([2.0, 0.0, 2.0])).value.tolist()
    [0.0, 0.0, 1.0]
    """

    schema = None

    def __init__(self, value: float | np.ndarray) -> None:
        self.value = value

    @classmethod
    def best(cls, task: Task, y: np.ndarray) -> Constant:
        """The majority class (binary; multiclass: its one-hot row, :meth:`Task.constant`), or
        the mean (regression); with no labels, 0.5 (binary: 1). By log loss
        (``metric: logloss``): the positive rate, or each class's share.

        >>> Constant.best(Task("binary", metric="logloss"), np.array([1.0, 0.0, 0.0, 0.0])).value
        array(0.25)
        """
        if task.multiclass or task.metric == "logloss":
            return cls(task.constant(y))
        value = float(np.mean(y)) if len(y) else 0.5
        if task.name == "binary":
            value = 1.0 if value >= 0.5 else 0.0
        return cls(value)

    def predict_many(self, X: Any) -> np.ndarray:
        value = np.asarray(self.value, dtype=np.float64)
        return np.broadcast_to(value, (len(X), *value.shape)).copy()


class CommonWindow:
    """The last ``size`` labelled samples, every loaded candidate's predictions on them, and
    the paired comparison of each candidate with a reference (the served version).

    A candidate is any object with ``predict_many(X)`` and ``schema`` (whose
    ``encode(rows)`` gives its X; None for :class:`Constant`). Its predictions are
    kept as it gives them: a row's probability of class 1 (binary), value
    (regression), or its ``k`` class probabilities (multiclass, ``task`` a
    :class:`tideline.tasks.Task` with the classes; the labels class indices).

    **Out of sample.** Labels are training data too: the newer versions have
    learned the window's older samples. Scored on them, a version that memorises
    (a tree, a nearest-neighbour or lookup model) would look as good as its
    memory and be proven, kept and promoted on its own training data. So each
    sample carries when its label arrived (``t``) and each candidate when the
    newest label it learned arrived (``learned_until``, from its version's
    metadata): a candidate is scored only on samples that came after it, and a
    comparison of two only on samples both have not learned - or, asked for
    (``whole``), on every sample the candidate has not learned, the reference
    scored on its own training data too: that flatters the reference, so a
    candidate found better than it is better still (what a rollback needs,
    and at once: the served version is judged on the whole window). When a
    candidate is added it is scored on the whole window at once; each later
    batch is scored by every candidate.

    **Tracks.** A learner publishes every few seconds, so a version has few
    samples it has not learned before the next replaces it. A *track*
    (:meth:`follow`) is a role's answers as they were: each new sample is
    scored, when it comes, by the version that plays the role then (a
    canary, the served version), and counts if that version had not learned
    it. Its comparisons grow across versions, as a canary's traffic does. A comparison opens when first asked
    for, seeded with the window's samples, and then grows with every new
    batch: a growing sequence of paired samples, which is what the
    confidence sequence's guarantee is about.

    Examples
    --------
    >>> w = CommonWindow("binary", size=100)
    >>> w.add_samples([{}] * 4, np.array([1.0, 1.0, 0.0, 1.0]))
    >>> w.add_candidate("one", Constant(1.0)); w.add_candidate("zero", Constant(0.0))
    >>> round(w.score("one")["accuracy"], 2), w.compare("zero", "one").mean
    (0.75, -0.5)
    """

    def __init__(self, task: Task | str, size: int) -> None:
        self.task = task if isinstance(task, Task) else Task(task)  # (a name: binary, regression)
        self.size = size
        self._rows: list[Any] = [None] * size
        self._y = np.zeros(size)
        self._t = np.full(size, np.inf)  # when each sample's label arrived (seconds)
        self._pos = 0
        self.count = 0  # samples in the window
        self.total = 0  # samples ever added
        self._candidates: dict[Hashable, Any] = {}
        self._preds: dict[Hashable, np.ndarray] = {}
        # the window's rows encoded once per schema (candidates of a revision share one)
        self._X: dict[str, np.ndarray] = {}
        self._schemas: dict[Hashable, str | None] = {}  # candidate -> its schema's key
        self._until: dict[Hashable, float] = {}  # candidate -> the newest label it learned
        self._tracks: dict[Hashable, Hashable | None] = {}  # track -> the candidate it follows
        self._ok: dict[Hashable, np.ndarray] = {}  # track -> the slots it scored out of sample
        # (candidate, reference, since, whole) -> their comparison (see compare)
        self._pairs: dict[tuple[Hashable, Hashable, int, bool], Paired] = {}

    # -- samples and candidates ---------------------------------------------------------
    def add_samples(self, rows: Sequence[Any], y: np.ndarray, t: Any = None) -> None:
        """Append labelled rows (``t``: when their labels arrived, seconds; None: after every
        candidate); every candidate scores them, every open comparison grows with those its
        two candidates have not learned."""
        rows, y = list(rows)[-self.size :], np.asarray(y, dtype=np.float64)[-self.size :]
        n = len(rows)
        if n == 0:
            return
        t = np.full(n, np.inf) if t is None else np.asarray(t, dtype=np.float64)[-self.size :]
        slots = (self._pos + np.arange(n)) % self.size
        for s, row in zip(slots.tolist(), rows, strict=True):
            self._rows[s] = row
        self._y[slots] = y
        self._t[slots] = t
        self._pos = int((self._pos + n) % self.size)
        self.count = min(self.count + n, self.size)
        self.total += n
        encoded: dict[str, np.ndarray] = {}
        for key, c in self._candidates.items():
            sk = self._schemas[key]
            if sk is not None and sk not in encoded:
                encoded[sk] = c.schema.encode(rows)
                self._X[sk][slots] = encoded[sk]
        new = {key: self._predict(c, rows, encoded.get(self._schemas[key] or ""))
               for key, c in self._candidates.items()}  # fmt: skip
        for key, p in new.items():
            self._preds[key][slots] = p
        for track, key in self._tracks.items():
            played = key is not None and key in new
            new[track] = new[key] if played else np.zeros(self.task.rows(n))
            self._preds[track][slots] = new[track]
            self._ok[track][slots] = self._fresh(key, slots) if played else False
        for (a, b, _, whole), pair in self._pairs.items():
            fresh = self._common(a, b, slots, whole)
            d, ref = self._difference(new[a][fresh], new[b][fresh], y[fresh])
            pair.update(d, ref)

    def add_candidate(
        self, key: Hashable, candidate: Any, learned_until: float | None = None
    ) -> None:
        """Score ``candidate`` on the whole window (replacing one of the same key);
        ``learned_until``: when the newest label it learned arrived (None: it learned none
        of the stream's, as a constant or a baseline trained elsewhere)."""
        self.drop(key)
        self._candidates[key] = candidate
        self._until[key] = -math.inf if learned_until is None else float(learned_until)
        preds = np.zeros(self.task.rows(self.size))
        idx = self._order()
        sk = self._schemas[key] = _schema_key(candidate)
        if sk is not None and sk not in self._X:
            X = np.zeros((self.size, candidate.schema.width))
            if len(idx):
                X[idx] = candidate.schema.encode([self._rows[i] for i in idx])
            self._X[sk] = X
        if len(idx):
            rows = [self._rows[i] for i in idx]
            preds[idx] = self._predict(
                candidate, rows, self._X[sk][idx] if sk is not None else None
            )
        self._preds[key] = preds

    def drop(self, key: Hashable) -> None:
        self._candidates.pop(key, None)
        self._until.pop(key, None)
        self._schemas.pop(key, None)
        self._preds.pop(key, None)
        for pair in [p for p in self._pairs if key in p[:2]]:
            del self._pairs[pair]

    def follow(self, track: Hashable, key: Hashable | None) -> None:
        """From the next batch on, ``track`` answers each sample as candidate ``key`` does
        (None, or a key not loaded: it answers none); a new track starts with no samples."""
        if track not in self._tracks:
            self._preds[track] = np.zeros(self.task.rows(self.size))
            self._ok[track] = np.zeros(self.size, dtype=bool)
        self._tracks[track] = key

    def keep_tracks(self, tracks: set[Hashable]) -> None:
        for track in [k for k in self._tracks if k not in tracks]:
            del self._tracks[track], self._ok[track], self._preds[track]
            for pair in [p for p in self._pairs if track in p[:2]]:
                del self._pairs[pair]

    def keep_only(self, keys: set[Hashable]) -> None:
        for key in [k for k in self._candidates if k not in keys]:
            self.drop(key)
        used = set(self._schemas.values())
        for sk in [k for k in self._X if k not in used]:
            del self._X[sk]

    def keep_since(self, since: set[int]) -> None:
        """Close the comparisons opened on later samples (``since`` > 0) at other points."""
        for pair in [p for p in self._pairs if p[2] and p[2] not in since]:
            del self._pairs[pair]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._candidates or key in self._tracks

    # -- reading ------------------------------------------------------------------------
    def labels(self) -> np.ndarray:
        """The window's labels, oldest first."""
        return self._y[self._order()]

    def score(self, key: Hashable, last: int | None = None) -> dict[str, float]:
        """The candidate's quality on the window's samples it has not learned, or on those of
        its ``last`` newest samples (see :func:`tideline.evaluate.scores`)."""
        idx = self._order() if last is None else self._newest(last)
        idx = idx[self._fresh(key, idx)]
        return scores(self.task.name, self._preds[key][idx], self._y[idx])

    def compare(
        self, candidate: Hashable, reference: Hashable, since: int = 0, whole: bool = False
    ) -> Paired:
        """The growing paired comparison of ``candidate`` with ``reference`` (opened if new),
        on the samples added after the first ``since`` (:attr:`total` then): 0 for all of
        them, seeded with the window; ``total`` now for those to come only. A comparison
        opened after some of its samples left the window is seeded with those still in it.
        On the samples neither has learned; ``whole``: on those ``candidate`` has not, the
        reference scored on all of them.

        >>> w = CommonWindow("binary", size=10)
        >>> w.add_candidate("one", Constant(1.0)); w.add_candidate("zero", Constant(0.0))
        >>> w.add_samples([{}] * 3, np.array([1.0, 1.0, 1.0]))
        >>> fresh = w.compare("zero", "one", since=w.total)
        >>> w.add_samples([{}], np.array([0.0]))
        >>> w.compare("zero", "one").n, fresh.n, fresh.mean
        (4, 1, 1.0)
        """
        key = (candidate, reference, since, whole)
        pair = self._pairs.get(key)
        if pair is None:
            pair = self._pairs[key] = Paired()
            idx = self._newest(self.total - since)
            idx = idx[self._common(candidate, reference, idx, whole)]
            d, ref = self._difference(self._preds[candidate][idx], self._preds[reference][idx],
                                      self._y[idx])  # fmt: skip
            pair.update(d, ref)
        return pair

    def relative(self, pair: Paired) -> tuple[float, float, float]:
        """(difference, lower, upper) in the task's decision units (see :class:`Paired`):
        accuracy points for a classifier, the relative reduction of the squared error for
        regression.

        On no samples - a version published a moment ago has learned every label there is -
        it is no evidence either way, written as ``(0, -1, 1)``: finite (the interval is
        infinite, and the health summary is JSON, where an infinity is no number), and
        neither better nor worse by any margin.

        >>> CommonWindow("regression", size=10).relative(Paired())
        (0.0, -1.0, 1.0)
        """
        return in_units(self.task, pair)

    # -- internals ----------------------------------------------------------------------
    def _fresh(self, key: Hashable, slots: np.ndarray) -> np.ndarray:
        """Which of the samples in ``slots`` ``key`` has not learned (a track: answered then
        by a version that had not)."""
        ok = self._ok.get(key)
        if ok is not None:
            return ok[slots]
        return self._t[slots] > self._until.get(key, -math.inf)

    def _common(self, a: Hashable, b: Hashable, slots: np.ndarray, whole: bool) -> np.ndarray:
        """Which samples in ``slots`` a comparison of ``a`` with ``b`` counts (see compare)."""
        fresh = self._fresh(a, slots)
        return fresh if whole else fresh & self._fresh(b, slots)

    def _order(self) -> np.ndarray:
        """Slots of the window's samples, oldest first."""
        if self.count < self.size:
            return np.arange(self.count)
        return (self._pos + np.arange(self.size)) % self.size

    def _newest(self, n: int) -> np.ndarray:
        """Slots of the window's ``n`` newest samples (those of them it holds), oldest first."""
        idx = self._order()
        n = max(0, min(n, len(idx)))
        return idx[len(idx) - n :]

    def _predict(
        self, candidate: Any, rows: Sequence[Any], X: np.ndarray | None = None
    ) -> np.ndarray:
        if candidate.schema is None:
            return np.asarray(candidate.predict_many(rows), dtype=np.float64)
        if X is None:
            X = candidate.schema.encode(rows)
        return np.asarray(candidate.predict_many(X), dtype=np.float64)

    def _difference(self, pa: np.ndarray, pb: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
        return paired_difference(self.task, pa, pb, y)


def paired_difference(
    task: Task, pa: np.ndarray, pb: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Paired differences (a's quality minus b's, each row) and b's loss (regression): what
    every comparison here counts, live or on history (:mod:`tideline.backtest`): right
    answers (accuracy), or a loss - log loss, squared error - with b's as the reference a
    reduction is relative to."""
    if task.relative:
        eb = task.loss(pb, y)
        return eb - task.loss(pa, y), eb
    if task.name == "binary":
        right = y >= 0.5
        return ((pa >= 0.5) == right).astype(np.float64) - ((pb >= 0.5) == right), None
    return task.wrong(pb, y) - task.wrong(pa, y), None  # (multiclass: correct a - correct b)


def in_units(task: Task, pair: Paired) -> tuple[float, float, float]:
    """A comparison's (difference, lower, upper) in the task's decision units (see
    :meth:`CommonWindow.relative`)."""
    if not pair.n:
        return 0.0, -1.0, 1.0
    lo, hi = pair.interval()
    if not task.relative:
        return pair.mean, lo, hi
    scale = max(pair.reference_loss, 1e-12)
    return pair.mean / scale, lo / scale, hi / scale


def _schema_key(candidate: Any) -> str | None:
    """What a candidate's rows are encoded by (None: it takes rows as they are)."""
    return None if candidate.schema is None else repr(candidate.schema.describe())
