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

The learner and the monitor both hold labels so (:mod:`tideline.pods.defaults` says until
when): a pure part of the library, no I/O.
"""

from __future__ import annotations

import heapq
import itertools
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
