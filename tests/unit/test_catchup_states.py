"""The catch-up's model states (kept for the backtest's predictions as of their own time)
stay within their byte budget, also for a team's model that grows as it learns (a lookup
table with a row per entity), and the oldest is always kept."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tideline.pods import catchup
from tideline.pods.catchup import CatchUp


class Table:
    """A learner whose state grows by ``grow`` bytes every time it learns."""

    def __init__(self, rows: int = 0) -> None:
        self.rows = self.n_seen = rows

    def copy(self) -> Table:
        return Table(self.rows)

    def get_state(self) -> dict[str, np.ndarray]:
        return {"t": np.zeros(self.rows, dtype=np.uint8)}


@pytest.mark.parametrize(
    ("grow", "budget"),
    [(64 * 2**10, 2**20 * 8), (0, 2**20 * 8), (2**20, 2**20)],
    ids=["a model that grows", "a model of a fixed size", "a model past the budget alone"],
)
def test_the_states_kept_stay_within_their_budget(
    monkeypatch: pytest.MonkeyPatch, grow: int, budget: int
) -> None:
    monkeypatch.setattr(catchup, "memory_limit", lambda: None)
    monkeypatch.setattr(catchup, "STATES_BUDGET", budget)
    learner = Table(4096)
    c = object.__new__(CatchUp)
    c.training = SimpleNamespace(learner=learner)
    c._states, c._state_times, c._state_bytes = [], [], []
    c._budget, c._until, c.horizon = catchup.states_budget(None), 0.0, 1e9
    most = 0
    for step in range(1, 600):
        learner.rows += grow
        learner.n_seen = step
        c._until = float(step)
        c._keep_state()
        kept = sum(catchup.state_bytes(s) for _, s in c._states)
        assert kept <= budget or len(c._states) <= 2, (step, len(c._states), kept)
        assert c._state_times[0] == 1.0, "the oldest is kept"
        assert c._state_bytes == [catchup.state_bytes(s) for _, s in c._states]
        most = max(most, len(c._states))
    assert len(c._states) >= 2 and most <= catchup.MAX_STATES
