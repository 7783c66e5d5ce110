"""Online learners behind one interface, and the factory that builds them from ``spec.model``.

Examples
--------
>>> m = make_learner({"task": "regression", "algorithm": "ftrl",
...                   "features": [{"name": "x", "type": "numeric"}]})
>>> m.learn_one({"x": 1.0}, 2.0); m.n_seen
1
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tideline.algorithms.base import Learner
from tideline.algorithms.linear import (
    MULTICLASS,
    FTRLLearner,
    LinearLearner,
    OneVsRestFTRL,
    SoftmaxLearner,
)
from tideline.spec import parse_model

__all__ = ["Learner", "LinearLearner", "FTRLLearner", "SoftmaxLearner", "OneVsRestFTRL",
           "ForestLearner", "make_learner"]  # fmt: skip


def _registry() -> dict[str, type[Learner]]:
    from tideline.algorithms.external import CustomLearner, RiverLearner, VWLearner
    from tideline.algorithms.forest import ForestLearner

    return {"sgd": LinearLearner, "ftrl": FTRLLearner, "forest": ForestLearner,
            "custom": CustomLearner, "river": RiverLearner, "vw": VWLearner}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name == "ForestLearner":
        return _registry()["forest"]
    raise AttributeError(name)


def make_learner(model_spec: Mapping[str, Any]) -> Learner:
    """Build a learner from a ``spec.model`` mapping, defaults filled in.

    Raises :class:`tideline.spec.SpecError` naming the field that is wrong, and for a
    team's own model (``custom``, ``river``, ``vw``) :class:`tideline.algorithms.external.ModelLoadError`
    when it cannot be imported or built.
    """
    m = parse_model(model_spec)  # the manifest parser's own reading
    cls = _registry()[m.algorithm]
    if m.task == "multiclass":
        cls = MULTICLASS.get(m.algorithm, cls)
    return cls([f.to_dict() for f in m.features], m.task, m.params, classes=m.classes)
