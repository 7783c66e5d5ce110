"""The catch-up's model states (kept for the backtest's predictions as of their own time)
stay within their byte budget, also for a team's model that grows as it learns (a lookup
table with a row per entity), and the oldest is always kept; they are kept as many rows
apart as came between stable's served versions."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec
import numpy as np
import pytest

from tests.helpers import manifest
from tideline.contracts import Keys
from tideline.pods import catchup
from tideline.pods.catchup import CatchUp
from tideline.pods.history import Record
from tideline.pods.join import LogJoin
from tideline.spec import parse
from tideline.training import Training


class Table:
    """A learner whose state grows by ``grow`` bytes every time it learns."""

    def __init__(self, rows: int = 0) -> None:
        self.rows = self.n_seen = rows

    def clone(self) -> Table:
        return Table()

    def snapshot(self) -> dict[str, np.ndarray]:
        return {"n_seen": np.array(self.n_seen), "t": np.zeros(self.rows, dtype=np.uint8)}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.rows, self.n_seen = len(state["t"]), int(state["n_seen"])


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
        kept = sum(catchup.state_bytes(s.snapshot()) for s in c._states)
        assert kept <= budget or len(c._states) <= 2, (step, len(c._states), kept)
        assert c._state_times[0] == 1.0, "the oldest is kept"
        assert c._state_bytes == [catchup.state_bytes(s.snapshot()) for s in c._states]
        most = max(most, len(c._states))
    assert len(c._states) >= 2 and most <= catchup.MAX_STATES


def _records(versions: list[int], rows: int = 64) -> list[Record]:
    """A record of ``rows`` rows each, stable's served version the one given."""
    return [Record(ts=1.0, rows=[{}] * rows, labels=[1.0] * rows, received=[2.0] * rows,
                   marks=["m"] * rows, scores=[0.5] * rows, tracks=["stable"] * rows,
                   models={"stable": ("old", v)})
            for v in versions]  # fmt: skip


@pytest.mark.parametrize(
    ("versions", "step"),
    [
        ([1] * 10 + [2] * 40 + [3] * 40 + [4] * 50 + [5] * 40, 40 * 64),
        ([1] * 10 + [2] * 20 + [3, 2] * 10 + [4] * 20 + [5] * 5, 20 * 64),
        ([1] * 10 + [2] * 10 + [3] * 10 + [4] * 10, 1024),
        ([1] * 10 + [2] * 100 + [3] * 100 + [4] * 100, 4096),
        ([1] * 200 + [2] * 200, 2000),
        ([1] * 400, 2000),
    ],
    ids=[
        "as many rows as came between stable's versions",
        "a version served beside the one before it is one change",
        "at least 1,024 rows",
        "at most 4,096 rows",
        "one change seen: a hundredth of the history's rows",
        "one version throughout: a hundredth of the history's rows",
    ],
)
def test_the_states_are_as_far_apart_as_stable_s_served_versions(
    versions: list[int], step: int
) -> None:
    """Stable's predictions lacked the rows learned since its served version: a candidate's
    state may lack as many (see tideline.pods.catchup)."""
    model = parse(manifest(learning={"history": "3h"}))
    c = CatchUp(None, Keys("test", "m"), Training(model.spec.model, model.spec.learning),
                LogJoin(None, Keys("test", "m"), 1800.0, "g"), since=0.0, until=3.0,
                window=60.0, report=lambda _: None)  # fmt: skip
    c._history_entries = 200_000 // 64
    for rec in _records(versions):
        c._take(rec, "logged", msgspec.msgpack.encode(rec.marks))
    assert c._step() == step
