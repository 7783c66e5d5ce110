"""A team's own learner in the loop: any class of the learner contract (:mod:`tideline.model`),
a River estimator or Vowpal Wabbit, run behind the interface the learner process, the
servers and the monitor use for every model (:class:`tideline.algorithms.base.Learner`).

The class is imported in the model's pods, from their image (``spec.image``: the team's
image built ``FROM`` the runtime image); the operator never calls this. What cannot be
loaded raises :class:`ModelLoadError` with a reason a condition can carry
(``ImportFailed``, ``MissingMethod``, ``BadParams``) and the error's last line.

The adapter checks what the model returns: scores of the wrong shape (``(n,)``; a
multiclass model's ``(n, k)``, one column per class of ``spec.model.classes``), not finite,
or probabilities out of range raise :class:`BadScores` (the version that gave them is not
served); a multiclass model's rows are scaled to sum to 1. An update that
raises leaves the model as it was before the block (:meth:`External.learn_predict_batches`
saves the state first), so the learner process can learn the block again batch by batch
and dead-letter the rows that fail, exactly once.

Examples
--------
>>> from tideline.algorithms import make_learner
>>> m = make_learner({"task": "binary", "algorithm": "custom", "features": [{"name": "x"}],
...                   "custom": {"class": "tideline.model:Mean", "params": {}}})
Traceback (most recent call last):
...
tideline.algorithms.external.ModelLoadError: ImportFailed: tideline.model has no attribute Mean
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tideline import signing
from tideline.algorithms.base import Learner, State
from tideline.model import ModelInfo, as_dicts, missing_methods, rows_of
from tideline.spec import ExternalParams, VWParams
from tideline.tasks import Task

STATE = "external.state"  # the model's own bytes (save()), as a uint8 array


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded: ``reason`` names what (a condition's reason), ``message``
    is the error's last line."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


class BadScores(ValueError):
    """Scores a model returned that cannot be served (wrong shape, not finite, a probability
    out of range)."""


def last_line(e: BaseException) -> str:
    """An exception as its traceback's last line (``ModuleNotFoundError: No module named 'x'``)."""
    return traceback.format_exception_only(type(e), e)[-1].strip()


def load_object(ref: str) -> Any:
    """The object ``package.module:Name`` names (``Name`` may be dotted: an attribute's)."""
    module, _, name = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module)
    except Exception as e:  # anything the module raises while it is imported
        raise ModelLoadError("ImportFailed", last_line(e)) from e
    for i, part in enumerate(name.split(".")):
        if not hasattr(obj, part):
            where = ".".join([module, *name.split(".")[:i]])
            raise ModelLoadError("ImportFailed", f"{where} has no attribute {part}")
        obj = getattr(obj, part)
    return obj


class External(Learner):
    """A model of the learner contract behind the loop's interface (see the module docs)."""

    params_type: type[ExternalParams] | type[VWParams] = ExternalParams
    params: ExternalParams | VWParams

    def _make(self, info: ModelInfo) -> Any:
        """A fresh model, untrained."""
        raise NotImplementedError

    def _init_state(self) -> None:
        self.info = ModelInfo(self.task, self.schema.features, self.classes)
        self._task = Task(self.task, self.classes)
        self.model = self._make(self.info)
        self._rows = rows_of(type(self.model))

    def _input(self, X: np.ndarray) -> Any:
        return as_dicts(self.info, X) if self._rows == "dicts" else X

    def _scores(self, scores: Any, n: int) -> np.ndarray:
        """The model's scores checked (:meth:`Task.checked`; multiclass rows then scaled to
        sum to 1); :class:`BadScores` naming the model and what is wrong."""
        try:
            p = self._task.checked(scores, n, probabilities=not self.n_classes)
        except ValueError as e:
            raise BadScores(f"{self.params.ref} returned {e}") from None
        if self.n_classes:
            return self._rows_of_probabilities(p)
        return p

    def _rows_of_probabilities(self, p: np.ndarray) -> np.ndarray:
        """A multiclass model's scores, each row scaled to sum to 1 (a model whose rows sum
        to 1 but for rounding, or one-against-all scores); refused when a row cannot be."""
        if (p < 0.0).any():
            raise BadScores(f"{self.params.ref} returned a negative probability")
        total = p.sum(axis=1, keepdims=True)
        if (total <= 0.0).any():
            raise BadScores(f"{self.params.ref} returned a row of probabilities that are all 0")
        return p / total

    # -- the loop's interface -----------------------------------------------------------
    def _update(
        self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
    ) -> np.ndarray | None:
        X, y = self._checked(X, y, w)
        if X.shape[0]:
            self.model.learn(self._input(X), y)
            self._n_seen += X.shape[0]
        return None

    def learn_predict_many(
        self, X: np.ndarray, y: np.ndarray, n: int | None = None, w: np.ndarray | None = None
    ) -> np.ndarray:
        X, y = self._checked(X, y, w)
        n = X.shape[0] if n is None else n
        if not X.shape[0]:
            return self._blank(0)
        p = self._scores(self.model.learn_predict(self._input(X), y), X.shape[0])
        self._n_seen += X.shape[0]
        return p[:n]

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        X = self.schema.check_matrix(X)
        if X.shape[0] == 0:
            return self._blank(0)
        return self._scores(self.model.predict(self._input(X)), X.shape[0])

    def predictor(self) -> Callable[[np.ndarray], np.ndarray]:
        return self.predict_many

    def _soften(self, keep: float) -> None:
        self.model.soften(keep)

    def get_state(self) -> State:
        blob = self.model.save()
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise TypeError(f"{self.params.ref}.save() must return bytes, not "
                            f"{type(blob).__name__}")  # fmt: skip
        return {"n_seen": np.array(self._n_seen, dtype=np.int64),
                STATE: np.frombuffer(bytes(blob), dtype=np.uint8)}  # fmt: skip

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Load a saved state into a fresh model (the contract's ``load``), as this one; never
        state that was neither verified nor trusted (:mod:`tideline.signing`): a team's
        ``load`` may unpickle it."""
        if signing.loading_untrusted():
            raise signing.ForgedBlob(f"state of {self.params.ref} that was not verified: "
                                     "not loaded")  # fmt: skip
        model = self._make(self.info)
        model.load(np.asarray(state[STATE], dtype=np.uint8).tobytes())
        self.model, self._n_seen = model, int(state["n_seen"])

    def spec(self) -> dict[str, Any]:
        out = {"task": self.task, "algorithm": self.algorithm,
               "features": self.schema.describe(),
               self.algorithm: self.params.to_dict(self.algorithm)}  # fmt: skip
        if self.classes is not None:
            out["classes"] = list(self.classes)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params.ref!r}, task={self.task!r})"


class CustomLearner(External):
    """``algorithm: custom``: ``spec.model.custom.class``, built with ``custom.params``."""

    algorithm = "custom"
    params: ExternalParams

    def _make(self, info: ModelInfo) -> Any:
        cls = load_object(self.params.ref)
        if not isinstance(cls, type):
            raise ModelLoadError("ImportFailed", f"{self.params.ref} is not a class "
                                 f"(a {type(cls).__name__})")  # fmt: skip
        missing = missing_methods(cls)
        if missing:
            raise ModelLoadError("MissingMethod", f"{self.params.ref} has no "
                                 f"{', '.join(missing)} (see tideline.model)")  # fmt: skip
        try:
            rows_of(cls)
            return cls(info, **self.params.params)
        except Exception as e:
            raise ModelLoadError("BadParams", last_line(e)) from e


class RiverLearner(External):
    """``algorithm: river``: the estimator ``spec.model.river.pipeline`` makes (a function
    called with ``river.params``, or an estimator, cloned), through
    :class:`tideline.algorithms.river.RiverModel`."""

    algorithm = "river"
    params: ExternalParams

    def _make(self, info: ModelInfo) -> Any:
        river_model = _extra("river").RiverModel
        make = load_object(self.params.ref)
        try:
            if hasattr(make, "clone") and not isinstance(make, type):  # an estimator itself
                if self.params.params:
                    raise TypeError(f"{self.params.ref} is an estimator: it takes no params")
                estimator = make.clone()
            else:
                estimator = make(**self.params.params)
            return river_model(info, estimator)
        except Exception as e:
            raise ModelLoadError("BadParams", last_line(e)) from e


class VWLearner(External):
    """``algorithm: vw``: Vowpal Wabbit with ``spec.model.vw.args``, through
    :class:`tideline.algorithms.vw.VWModel`."""

    algorithm = "vw"
    params_type = VWParams
    params: VWParams

    def _make(self, info: ModelInfo) -> Any:
        vw_model = _extra("vw").VWModel
        try:
            return vw_model(info, self.params.args)
        except Exception as e:  # VW's own error (its last line), or arguments it cannot serve
            raise ModelLoadError("BadParams", last_line(e)) from e


def _extra(name: str) -> Any:
    """``tideline.algorithms.<name>``, whose library is the extra ``tideline[<name>]`` (not in
    the runtime image: a team's image built ``FROM`` it adds it); ImportFailed naming the
    extra when the model's image has not."""
    try:
        return importlib.import_module(f"tideline.algorithms.{name}")
    except ImportError as e:
        raise ModelLoadError("ImportFailed", f"{last_line(e)} (install tideline[{name}] in "
                             "the model's image)") from e  # fmt: skip
