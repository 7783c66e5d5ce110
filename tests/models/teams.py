"""Learners of the contract (:mod:`tideline.model`) as teams write them, and broken ones.

The tests load them by reference (``tests.models.teams:Name``), as the pods do.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from typing import Any

import numpy as np
from river import feature_extraction, linear_model, multiclass, optim, preprocessing, stats

from tideline.model import ModelInfo, OnlineLearner

IMPORTS = 0  # how many times this module was imported (a pod imports it once)
IMPORTS += 1


class Mean(OnlineLearner):
    """The running mean of the label, whatever the row: the smallest honest learner."""

    def __init__(self, info: ModelInfo, prior: float = 0.5) -> None:
        self.n, self.mean = 0, float(prior)

    def learn(self, X: Any, y: np.ndarray) -> None:
        for v in y.tolist():
            self.n += 1
            self.mean += (v - self.mean) / self.n

    def predict(self, X: Any) -> np.ndarray:
        return np.full(len(X), self.mean)

    def save(self) -> bytes:
        return json.dumps([self.n, self.mean]).encode()

    def load(self, state: bytes) -> None:
        self.n, self.mean = json.loads(state)


class DictMean(Mean):
    """:class:`Mean` over rows as dicts, recording the keys and values it was given."""

    rows = "dicts"

    def __init__(self, info: ModelInfo, prior: float = 0.5) -> None:
        super().__init__(info, prior)
        self.seen: list[dict[str, Any]] = []

    def learn(self, X: Any, y: np.ndarray) -> None:
        self.seen.extend(X)
        super().learn(X, y)


class Tally(OnlineLearner):
    """Counts what it learns, exactly: the samples and their labels' sum per bucket of one
    categorical feature (the last: missing), and a fingerprint of the rows (see
    :func:`fingerprint`). A sample learned twice or never shows in them."""

    def __init__(self, info: ModelInfo, feature: str) -> None:
        self.feature = feature
        self._column = info.names.index(feature)
        buckets = info.features[self._column].buckets
        self.n, self.positives, self.fingerprint = [0] * (buckets + 1), [0] * (buckets + 1), 0

    def learn(self, X: Any, y: np.ndarray) -> None:
        for b, label in zip(X[:, self._column].astype(int).tolist(), y.tolist(), strict=True):
            self.n[b] += 1  # (a missing value, -1, counts in the last)
            self.positives[b] += int(label)
        self.fingerprint = (self.fingerprint + fingerprint(X, y)) % 2**64

    def predict(self, X: Any) -> np.ndarray:
        b = X[:, self._column].astype(int)
        return (np.array(self.positives)[b] + 1.0) / (np.array(self.n)[b] + 2.0)

    def save(self) -> bytes:
        return json.dumps([self.n, self.positives, self.fingerprint]).encode()

    def load(self, state: bytes) -> None:
        self.n, self.positives, self.fingerprint = json.loads(state)


def fingerprint(X: np.ndarray, y: np.ndarray) -> int:
    """The sum of a 64-bit hash of each row and its label, mod 2**64: the same for two sets
    of samples that hold the same ones as many times; a lost sample and a repeated one
    cancel out only if they are the same (or with a chance of 2**-64)."""
    rows = np.c_[np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)]
    return sum(int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
               for row in rows) % 2**64  # fmt: skip


class Faulty(Mean):
    """Raises in ``learn`` on a row whose first value is 13, in ``predict`` on 99."""

    def learn(self, X: Any, y: np.ndarray) -> None:
        if (X[:, 0] == 13.0).any():
            raise ValueError("unlucky row")
        super().learn(X, y)

    def predict(self, X: Any) -> np.ndarray:
        if (X[:, 0] == 99.0).any():
            raise RuntimeError("cannot score 99")
        return super().predict(X)


class Sleepy(Mean):
    """Sleeps ``nap`` seconds in ``predict`` on a row whose first value is 77 (a model that
    hangs on some input); counts its calls across copies of itself, per process."""

    calls = 0

    def __init__(self, info: ModelInfo, prior: float = 0.5, nap: float = 0.5) -> None:
        super().__init__(info, prior)
        self.nap = nap

    def predict(self, X: Any) -> np.ndarray:
        type(self).calls += 1
        if (X[:, 0] == 77.0).any():
            time.sleep(self.nap)
        return super().predict(X)


class Moody(Mean):
    """Good scores for most rows (the defaults a probe sends among them): NaN for a row whose
    first value is 98, two scores a row for a request with a row whose first value is 97."""

    def predict(self, X: Any) -> np.ndarray:
        p = super().predict(X)
        if (X[:, 0] == 97.0).any():
            return np.c_[p, p]
        return np.where(X[:, 0] == 98.0, np.nan, p)


class Shapeless(Mean):
    """Scores of the wrong shape."""

    def predict(self, X: Any) -> np.ndarray:
        return np.full((len(X), 2), 0.5)


class NaNs(Mean):
    def predict(self, X: Any) -> np.ndarray:
        return np.full(len(X), np.nan)


class NoSave:
    """Not a learner: no ``save``."""

    def __init__(self, info: ModelInfo) -> None: ...

    def learn(self, X: Any, y: Any) -> None: ...

    def predict(self, X: Any) -> Any: ...

    def load(self, state: bytes) -> None: ...


def scaled_logistic(lr: float = 0.05) -> Any:
    """A River pipeline as teams write one."""
    return preprocessing.StandardScaler() | linear_model.LogisticRegression(optim.SGD(lr))


def scaled_linear(lr: float = 0.01) -> Any:
    return preprocessing.StandardScaler() | linear_model.LinearRegression(optim.SGD(lr))


def target_counts(by: str = "merchant") -> Any:
    """A River pipeline whose state counts exactly what it learned: per value of ``by`` (a
    categorical feature every row has), the samples and the positive labels (``TargetAgg``
    with ``stats.Count`` and ``stats.Sum``); the regression on top, its updates
    (``optimizer.n_iterations``)."""
    agg = feature_extraction.TargetAgg
    return ((agg(by, stats.Sum()) + agg(by, stats.Count())) | preprocessing.StandardScaler()
            | linear_model.LogisticRegression(optim.SGD(0.01)))  # fmt: skip


ESTIMATOR = linear_model.LogisticRegression()  # an estimator itself, not a factory


class Centroids(OnlineLearner):
    """A multiclass model: each class's mean row; a row's probabilities the softmax of minus
    its squared distance to each (``y``: the classes' indices, ``info.classes`` their names)."""

    def __init__(self, info: ModelInfo) -> None:
        self.k, self.width = info.n_classes, len(info.features)
        self.sums, self.counts = np.zeros((self.k, self.width)), np.zeros(self.k)

    def learn(self, X: Any, y: np.ndarray) -> None:
        c = y.astype(np.intp)
        np.add.at(self.sums, c, X)
        np.add.at(self.counts, c, 1.0)

    def predict(self, X: Any) -> np.ndarray:
        means = self.sums / np.maximum(self.counts, 1.0)[:, None]
        d = ((np.asarray(X)[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
        e = np.exp(-(d - d.min(axis=1, keepdims=True)))
        return e / e.sum(axis=1, keepdims=True)

    def save(self) -> bytes:
        return json.dumps([self.sums.tolist(), self.counts.tolist()]).encode()

    def load(self, state: bytes) -> None:
        sums, counts = json.loads(state)
        self.sums, self.counts = np.array(sums), np.array(counts)


class Votes(Centroids):
    """Each class's count of samples as its scores: rows that do not sum to 1 (the adapter
    scales them)."""

    def predict(self, X: Any) -> np.ndarray:
        return np.tile(self.counts, (len(X), 1))


class NegativeVotes(Votes):
    def predict(self, X: Any) -> np.ndarray:
        return -super().predict(X) - 1.0


def one_vs_rest(lr: float = 0.1) -> Any:
    """A River multiclass pipeline as teams write one: a binary classifier per class."""
    return preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(
        linear_model.LogisticRegression(optim.SGD(lr))
    )


class FaultyCentroids(Centroids):
    """:class:`Centroids` raising in ``learn`` on a row whose first value is 13."""

    def learn(self, X: Any, y: np.ndarray) -> None:
        if (np.asarray(X)[:, 0] == 13.0).any():
            raise ValueError("unlucky row")
        super().learn(X, y)


class SoftmaxTeam(OnlineLearner):
    """A team's multiclass model as it might write one: a softmax regression with AdaGrad
    steps on running-standardised numeric features and one weight row per categorical
    bucket value (``X`` as the schema encodes it: a categorical column holds its bucket)."""

    def __init__(self, info: ModelInfo, learning_rate: float = 0.3) -> None:
        self.lr, self.k = float(learning_rate), info.n_classes
        self.num = np.array([f.type == "numeric" for f in info.features])
        self.buckets = [f.buckets for f in info.features if f.type != "numeric"]
        width = int(self.num.sum()) + 1 + sum(self.buckets)
        self.w, self.g2 = np.zeros((width, self.k)), np.zeros((width, self.k))
        self.n, self.sum, self.sq = 0, np.zeros(int(self.num.sum())), np.zeros(int(self.num.sum()))

    def _design(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        mean = self.sum / max(self.n, 1)
        sd = np.sqrt(np.maximum(self.sq / max(self.n, 1) - mean**2, 0.0)) + 1e-9
        Z = np.clip((X[:, self.num] - mean) / sd, -8, 8)
        cats = [np.eye(b)[X[:, j].astype(np.intp) % b]
                for j, b in zip(np.flatnonzero(~self.num), self.buckets, strict=True)]  # fmt: skip
        return np.hstack([Z, np.ones((len(X), 1)), *cats])

    def learn(self, X: Any, y: np.ndarray) -> None:
        numeric = np.asarray(X, dtype=np.float64)[:, self.num]
        self.n += len(numeric)
        self.sum += numeric.sum(axis=0)
        self.sq += (numeric**2).sum(axis=0)
        A = self._design(X)
        onehot = np.eye(self.k)[y.astype(np.intp)]
        grad = A.T @ (self.predict(X) - onehot) / len(y)
        self.g2 += grad**2
        self.w -= self.lr * grad / (np.sqrt(self.g2) + 1e-8)

    def predict(self, X: Any) -> np.ndarray:
        z = self._design(X) @ self.w
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def save(self) -> bytes:
        out = io.BytesIO()
        np.savez(out, w=self.w, g2=self.g2, n=self.n, sum=self.sum, sq=self.sq)
        return out.getvalue()

    def load(self, state: bytes) -> None:
        z = np.load(io.BytesIO(state))
        self.w, self.g2, self.n = z["w"], z["g2"], int(z["n"])
        self.sum, self.sq = z["sum"], z["sq"]


class Memorizer(OnlineLearner):
    """A team's own class that memorises: a lookup table of the rows it has seen, perfect on
    them, 0.5 elsewhere (class 1: right as often as the labels are 1)."""

    def __init__(self, info: Any) -> None:
        self.table: dict[str, float] = {}

    def learn(self, X: np.ndarray, y: np.ndarray) -> None:
        for row, label in zip(X.tolist(), y.tolist(), strict=True):
            self.table[json.dumps(row)] = label

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.array([self.table.get(json.dumps(row), 0.5) for row in X.tolist()])

    def save(self) -> bytes:
        return json.dumps(self.table).encode()

    def load(self, state: bytes) -> None:
        self.table = json.loads(state)
