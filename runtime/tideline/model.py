"""The learner contract: what a team's own model implements to run in tideline's loop.

tideline learns from the stream, publishes versions, serves them, watches
their quality and rolls them out; the model itself is any class with these
methods (subclassing :class:`OnlineLearner` is optional, it documents them and
gives the optional ones their defaults):

``__init__(self, info, **params)``
    ``info`` (:class:`ModelInfo`) says the task, the features and the
    classes; ``params`` are ``spec.model.custom.params`` as written.
``learn(self, X, y)``
    Learn a mini-batch. ``X`` is what the feature schema encodes: a float
    matrix, one row per sample and one column per feature in
    ``spec.model.features`` order (numeric: the value; categorical: the hashed
    bucket, -1 when missing); or, when the class sets ``rows = "dicts"``, a
    list of dicts (River's shape: numeric values as floats, categorical
    values as their bucket's token, ``info.token(name, value)``, missing ones
    left out). ``y`` is a float array: 0/1 for ``binary``, the target for
    ``regression``, the class's index for ``multiclass`` (``0.0`` for
    ``info.classes[0]``, whichever shape the rows take: the label's class
    name is ``info.classes[int(v)]``).
``predict(self, X) -> numpy array``
    Scores for rows shaped as ``learn`` takes them: ``binary``: the
    probability of class 1, shape ``(n,)``; ``regression``: the value,
    shape ``(n,)``; ``multiclass``: each class's probability, shape
    ``(n, k)``, column ``i`` for ``info.classes[i]`` (``spec.model.classes``
    order). Finite, and probabilities within [0, 1] (multiclass: not negative,
    each row scaled to sum to 1; a row of zeros is refused), or the version is
    refused.
``save(self) -> bytes`` and ``load(self, state: bytes)``
    The learned state; ``load`` is called on a fresh instance built with the
    same ``info`` and ``params``. tideline signs every version it publishes
    and verifies it before ``load`` sees it, so pickle is fine here.

Optional (:class:`OnlineLearner` has defaults):

``learn_predict(self, X, y) -> numpy array``
    Each row's score before it was learned (prequential test-then-train);
    the default predicts, then learns.
``soften(self, keep: float)``
    Concept drift was detected: keep only a ``keep`` (0..1] share of the
    confidence in what was learned, so the next samples move the model as
    they would a young one (``guardrails.onConceptDrift: adapt``). The
    default does nothing.

A model learns in one process and serves from a saved copy in others: it
must not keep state outside what ``save`` returns. Errors it raises in
``learn`` dead-letter that mini-batch's rows with the error, and learning
goes on; errors in ``predict`` answer the fallback.

Multiclass (``task: multiclass``, ``spec.model.classes``): class names are what
clients send and servers answer; the model sees the classes' indices in ``y``
and gives one column per class, and ``info.classes`` names them. River's own
shape (``learn_one(x, "cat")``, ``predict_proba_one(x)``) is kept by
``algorithm: river``: its adapter turns indices into names and back.

Examples
--------
A model of the running mean of the label (``algorithm: custom``, ``class:
"mean:Mean"``)::

    class Mean(OnlineLearner):
        def __init__(self, info, prior=0.5):
            self.n, self.mean = 0, prior
        def learn(self, X, y):
            for v in y:
                self.n += 1
                self.mean += (v - self.mean) / self.n
        def predict(self, X):
            return np.full(len(X), self.mean)
        def save(self):
            return json.dumps([self.n, self.mean]).encode()
        def load(self, state):
            self.n, self.mean = json.loads(state)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from tideline.features import bucket_of
from tideline.spec import Feature

Rows = Literal["matrix", "dicts"]
REQUIRED = ("learn", "predict", "save", "load")
OPTIONAL = ("learn_predict", "soften")


@dataclass(frozen=True)
class ModelInfo:
    """What a model is told about the data it learns from.

    >>> ModelInfo("multiclass", (Feature("x"),), ("cat", "dog")).n_classes
    2
    """

    task: str  # "binary", "regression" or "multiclass"
    features: tuple[Feature, ...]
    # multiclass: the class names (spec.model.classes), column i of predict's scores and
    # target i of learn's labels naming classes[i]; None for the other tasks
    classes: tuple[str, ...] | None = None

    @property
    def n_classes(self) -> int:
        """The number of classes: the width of a multiclass model's scores (0 otherwise)."""
        return len(self.classes) if self.classes is not None else 0

    @property
    def names(self) -> list[str]:
        """The feature names, in the order of ``X``'s columns."""
        return [f.name for f in self.features]

    def token(self, name: str, value: str | int) -> str:
        """The token a categorical ``value`` of feature ``name`` reaches a dicts model as.

        >>> info = ModelInfo("binary", (Feature("country", "categorical", buckets=8),))
        >>> info.token("country", "fr") == info.token("country", "fr")
        True
        """
        f = self.features[self.names.index(name)]
        if f.type != "categorical":
            raise ValueError(f"feature {name!r} is {f.type}, not categorical")
        return token(bucket_of(str(value), f.buckets))


def token(bucket: int) -> str:
    """A categorical bucket as a dicts model sees it: a string, so that one-hot encoders
    (River's ``OneHotEncoder``) treat it as a category, never as a number."""
    return f"#{bucket}"


class OnlineLearner:
    """The contract, with defaults for the optional methods (see the module docs)."""

    rows: ClassVar[Rows] = "matrix"

    def learn(self, X: Any, y: np.ndarray) -> None:
        raise NotImplementedError

    def predict(self, X: Any) -> np.ndarray:
        raise NotImplementedError

    def save(self) -> bytes:
        raise NotImplementedError

    def load(self, state: bytes) -> None:
        raise NotImplementedError

    def learn_predict(self, X: Any, y: np.ndarray) -> np.ndarray:
        before = np.asarray(self.predict(X), dtype=np.float64)
        self.learn(X, y)
        return before

    def soften(self, keep: float) -> None:
        return None


def missing_methods(cls: type) -> list[str]:
    """The contract's required methods ``cls`` lacks (or has as something not callable).

    >>> class Half:
    ...     def learn(self, X, y): ...
    >>> missing_methods(Half)
    ['predict', 'save', 'load']
    """
    return [m for m in REQUIRED if not callable(getattr(cls, m, None))
            or getattr(cls, m) is getattr(OnlineLearner, m)]  # fmt: skip


def rows_of(cls: type) -> Rows:
    """How ``cls`` takes rows: ``"matrix"`` unless it says ``rows = "dicts"``."""
    rows = getattr(cls, "rows", "matrix")
    if rows not in ("matrix", "dicts"):
        raise TypeError(f'{cls.__name__}.rows must be "matrix" or "dicts" (got {rows!r})')
    return rows  # type: ignore[return-value]


def as_dicts(info: ModelInfo, X: np.ndarray) -> Sequence[dict[str, Any]]:
    """Rows of an encoded matrix as a dicts model takes them (see the module docs)."""
    names = info.names
    cats = [j for j, f in enumerate(info.features) if f.type == "categorical"]
    if not cats:
        return [dict(zip(names, row)) for row in X.tolist()]  # noqa: B905 - (a third faster)
    out = []
    for row in X.tolist():
        d = dict(zip(names, row))  # noqa: B905
        for j in cats:
            code = row[j]
            if code < 0:
                del d[names[j]]
            else:
                d[names[j]] = token(int(code))
        out.append(d)
    return out
