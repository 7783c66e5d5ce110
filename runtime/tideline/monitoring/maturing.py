"""Labels held until their predictions are mature (``spec.learning.labelDefault``).

With a default label, a prediction's outcome is known only ``after`` its time: labelled
by then, or learned with the default. A label that came early is scored with the rest of
its time's outcomes, not before: else the last ``after`` of traffic would read as its
clicks alone (all positives), and a model would look better or worse than it is.

>>> m = Maturing(after=60.0, most_rows=10)
>>> m.ripe(1000.0, until=1059.0), m.ripe(1000.0, until=1060.0), m.ripe(1000.0, until=None)
(False, True, False)
>>> m.hold("a", 1000.0, rows=2), m.hold("b", 990.0, rows=3), m.held
(True, True, 5)
>>> m.mature(until=1055.0), m.held
([('b', 990.0)], 2)
>>> m.hold("c", 1001.0, rows=9), m.overflow  # past most_rows: scored at once
(False, 9)

A reader that gives defaults only from some time on (a monitor, from its start) knows every
outcome of the predictions made since then alone; a label of an older one has no defaults
of its time to be scored with (:class:`Outcomes`).

>>> o = Outcomes(since=1000.0, resumed=["a1"])
>>> o.known("b2", 999.9, rows=4), o.known("b2", 1000.0, rows=4), o.known("a1", 999.9, rows=4)
(False, True, True)
>>> o.before
4
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Maturing(Generic[T]):
    """What waits for its prediction to be ``after`` old, oldest prediction first, at most
    ``most_rows`` rows (past them a label is scored at once, and counted in ``overflow``)."""

    def __init__(self, after: float, most_rows: int) -> None:
        self.after = after
        self.most_rows = most_rows
        self.held = 0  # rows held
        self.overflow = 0  # rows scored before they were mature, for want of room
        self._heap: list[tuple[float, int, int, T]] = []
        self._order = itertools.count()

    def ripe(self, ts: float, until: float | None) -> bool:
        """Whether a prediction made at ``ts`` is mature when every label that came before
        ``until`` is read (None: not known yet)."""
        return until is not None and ts + self.after <= until

    def hold(self, item: T, ts: float, rows: int) -> bool:
        """Keep ``item`` (``rows`` labelled rows of a prediction made at ``ts``) until it is
        mature; False when there is no room (score it now)."""
        if self.held + rows > self.most_rows:
            self.overflow += rows
            return False
        heapq.heappush(self._heap, (ts, next(self._order), rows, item))
        self.held += rows
        return True

    def mature(self, until: float) -> list[tuple[T, float]]:
        """What became mature, oldest first: each item and its prediction's time."""
        out = []
        while self._heap and self._heap[0][0] + self.after <= until:
            ts, _, rows, item = heapq.heappop(self._heap)
            self.held -= rows
            out.append((item, ts))
        return out


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
