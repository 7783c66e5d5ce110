"""Late labels learned as corrections of their defaults: the fake-negative weighting.

With ``spec.learning.labelDefault`` a prediction no label came for ``after``
its time is learned with the default (no click: 0). With ``lateLabel:
correct`` a label that comes later still (a late click) is learned too, beside
its default: the default was a *fake negative*. Learned as they come, the
rows lean towards the default. Write ``p`` for the chance of the other label
(a click) given the features ``x``, and ``q`` for the share of those labels
that come after their default; of every prediction, the rows learned are one
(a label in time, or the default) and for a late label a second one, so the
rows' labels follow

    b(other | x) = p / (1 + p q),      b(default | x) = (1 - p + p q) / (1 + p q).

Each row's loss weighted by ``p(y | x) / b(y | x)`` makes the expected
weighted loss the one of the true labels (importance sampling):

    w(other) = 1 + p q,      w(default) = (1 - p)(1 + p q) / (1 - p + p q).

This is the fake-negative weighting of Ktena et al. (RecSys 2019, "Addressing
delayed feedback for continuous training with neural networks in CTR
prediction"), whose every positive comes late (``q = 1``: ``1 + p`` and
``(1 - p)(1 + p)``); here only the labels past ``after`` do, and ``q`` is
counted: the late labels learned over all the labels learned that are not
the default. ``p`` is the model's own estimate before the rows are learned
(no gradient flows through it). With no late label ``q = 0``: every weight 1,
what ``lateLabel: ignore`` learns but for the late labels it dead-letters.

>>> c = LateCorrection(default=0.0)
>>> c.count(np.array([1.0, 1.0, 0.0, 1.0]), late=1)  # 3 clicks, 1 of them late
>>> round(c.q, 4)
0.3333
>>> c.weights(np.array([0.5, 0.5]), np.array([1.0, 0.0])).round(4).tolist()
[1.1667, 0.875]
"""

from __future__ import annotations

import numpy as np


class LateCorrection:
    """The weights of the rows of a binary model learned with a default label and its late
    corrections (see the module docs); its counts go with the learner's checkpoint."""

    def __init__(self, default: float, other: int = 0, late: int = 0) -> None:
        self.default = float(default)
        self.other = other  # rows learned whose label is not the default (late ones too)
        self.late = late  # of them, late labels learned beside their default

    @property
    def q(self) -> float:
        """The share of the labels that are not the default which came after it."""
        return self.late / self.other if self.other else 0.0

    def count(self, y: np.ndarray, late: int) -> None:
        """Rows learned (their labels ``y``), ``late`` of them late labels."""
        self.other += int(np.count_nonzero(y != self.default))
        self.late += late

    def weights(self, p: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Each row's weight, from the model's probability of class 1 before it learns them
        (``p``) and the rows' labels ``y`` (0 or 1)."""
        q = self.q
        p_other = np.clip(p if self.default == 0.0 else 1.0 - p, 0.0, 1.0)
        lift = 1.0 + p_other * q
        kept = np.maximum(1.0 - p_other * (1.0 - q), 1e-12)  # (0 only where p_other is 1, q 0)
        return np.where(y != self.default, lift, (1.0 - p_other) * lift / kept)
