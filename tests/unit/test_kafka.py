"""How the learner and the monitor read a topic (no broker: a consumer that keeps librdkafka's
batch semantics - ``consume(n, timeout)`` returns once ``n`` messages are there or the timeout
is over)."""

from __future__ import annotations

from tideline.pods.kafka import consume


class Consumer:
    def __init__(self, queued: int, arriving: list[float]) -> None:
        self.queued = queued  # messages fetched already
        self.arriving = arriving  # seconds from now at which more come, one each
        self.waited = 0.0

    def consume(self, n: int, timeout: float) -> list[int]:
        now = self.waited
        while self.queued < n and self.arriving and self.arriving[0] <= now + timeout:
            self.queued += 1
            now = max(now, self.arriving.pop(0))
        if self.queued < n:
            now = self.waited + timeout  # not enough: the whole timeout
        self.waited = now
        got = min(n, self.queued)
        self.queued -= got
        return list(range(got))


def test_a_read_takes_what_is_fetched_without_waiting_for_a_full_batch() -> None:
    c = Consumer(queued=3, arriving=[])
    assert len(consume(c, 1000, 0.5)) == 3 and c.waited == 0.0


def test_an_empty_read_waits_for_the_first_message_only() -> None:
    c = Consumer(queued=0, arriving=[0.1, 0.1, 0.3])
    assert len(consume(c, 1000, 0.5)) == 2 and c.waited == 0.1  # (what came with the first)
    c = Consumer(queued=0, arriving=[])
    assert consume(c, 1000, 0.5) == [] and c.waited == 0.5
