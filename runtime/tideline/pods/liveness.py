"""Whether a pod's process is alive: the age of its last successful turn, not an open port.

A learner or monitor whose every turn fails (a store that answers every command with an
error, a consumer group gone, a bug) still holds its metrics port open; a TCP probe calls
it alive for ever. :class:`Liveness` counts turns instead:

* :meth:`beat` after a turn that did its work (a checkpoint, a health write, a read);
* :meth:`failed` after a turn that raised: True once ``max_failures`` turns failed in a
  row, and the process exits non-zero (Kubernetes restarts it, and counts the restart);
* :meth:`check` answers the liveness probe (``GET /healthz`` on the metrics port): not
  alive when the last successful turn is older than ``max_age`` seconds.

>>> t = [0.0]
>>> live = Liveness(max_age=30.0, max_failures=3, clock=lambda: t[0])
>>> live.check()
(True, 'last good turn 0.0 s ago')
>>> t[0] = 31.0; live.check()[0]
False
>>> live.beat(); live.failed(RuntimeError("x")), live.failed(RuntimeError("x"))
(False, False)
>>> live.failed(RuntimeError("x")), live.failures
(True, 3)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

MAX_AGE = 60.0  # seconds without a successful turn before the probe fails
MAX_FAILURES = 30  # turns failing in a row before the process exits


class Liveness:
    """The age of the last successful turn, and the failures since (see module docs)."""

    def __init__(
        self,
        max_age: float = MAX_AGE,
        max_failures: int = MAX_FAILURES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age = max_age
        self.max_failures = max_failures
        self.clock = clock
        self.last_good = clock()
        self.failures = 0
        self.last_error = ""
        self._lock = threading.Lock()

    def beat(self) -> None:
        """A turn did its work."""
        with self._lock:
            self.last_good = self.clock()
            self.failures = 0

    def failed(self, error: BaseException) -> bool:
        """A turn raised; True when ``max_failures`` turns in a row have: time to exit."""
        with self._lock:
            self.failures += 1
            self.last_error = f"{type(error).__name__}: {error}"[:300]
            return self.failures >= self.max_failures

    def check(self) -> tuple[bool, str]:
        """(alive, why): alive while the last successful turn is at most ``max_age`` old."""
        with self._lock:
            age = self.clock() - self.last_good
            why = f"last good turn {age:.1f} s ago"
            if self.failures:
                why += f"; {self.failures} failed since, the last: {self.last_error}"
            return age <= self.max_age, why
