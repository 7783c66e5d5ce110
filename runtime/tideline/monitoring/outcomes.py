"""Which predictions a monitor knows every outcome of (``spec.learning.labelDefault``).

A reader that gives defaults only from some time on (a monitor, from its start) knows every
outcome of the predictions made since then alone; a label of an older one has no defaults
of its time to be scored with (:class:`Outcomes`). Until when a label waits for its
prediction to be mature is :class:`tideline.maturing.Maturing`'s.

>>> o = Outcomes(since=1000.0, resumed=["a1"])
>>> o.known("b2", 999.9, rows=4), o.known("b2", 1000.0, rows=4), o.known("a1", 999.9, rows=4)
(False, True, True)
>>> o.before
4
"""

from __future__ import annotations

import math
from collections.abc import Iterable


class Outcomes:
    """Which predictions a reader knows every outcome of: on a log it resumed (its defaults
    go on from its saved cursor), all; on any other log, those made ``since`` on, where it
    began to give defaults.

    A new monitor reads the labels that come after it started, the clicks of the traffic
    just before it too, but gives defaults only to the predictions made after: scored, those
    clicks would be a second of outcomes without their defaults. In a clicks-only run whose
    monitor started after the first requests, a cold model (answering 0.5: a click) read as
    right on every answer, then wrong on every default once they came, and the rise was
    concept drift at v0 (``examples/ads-ctr-ftrl.yaml``, 40 s runs; issue 34).
    """

    def __init__(self, since: float = -math.inf, resumed: Iterable[str] = ()) -> None:
        self.since = since
        self.resumed = frozenset(resumed)
        self.before = 0  # labelled rows left out: their predictions were made before 'since'

    def known(self, instance: str, ts: float, rows: int) -> bool:
        """Whether the outcomes of the time of a prediction made at ``ts``, logged by
        ``instance``, are all known (else its ``rows`` labelled rows are counted in
        ``before``)."""
        if ts >= self.since or instance in self.resumed:
            return True
        self.before += rows
        return False
