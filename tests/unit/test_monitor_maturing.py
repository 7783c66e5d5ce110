"""Which labels a clicks-only monitor scores (:mod:`tideline.monitoring.outcomes`): those of
predictions whose every outcome it knows, held until they are mature."""

from __future__ import annotations

import numpy as np
import pytest

from tideline.monitoring.outcomes import Outcomes
from tideline.monitoring.signals import DriftSignals
from tideline.spec import DriftSpec
from tideline.tasks import Task

SINCE = 1000.0


@pytest.mark.parametrize(
    ("instance", "ts", "known"),
    [
        ("b2", 999.999, False),
        ("b2", SINCE, True),
        ("b2", 1500.0, True),
        ("a1", 10.0, True),
    ],
    ids=[
        "a prediction made before the defaults began, on a log not resumed, is not known",
        "a prediction made as the defaults began is known",
        "a prediction made after is known",
        "a prediction on a log resumed from its cursor is known however old",
    ],
)
def test_which_predictions_have_every_outcome_known(instance: str, ts: float, known: bool) -> None:
    o = Outcomes(since=SINCE, resumed=["a1"])
    assert o.known(instance, ts, rows=3) is known
    assert o.before == (0 if known else 3)


def test_a_reader_that_never_started_knows_every_prediction() -> None:
    assert Outcomes().known("any", -1e12, rows=5)


def _concept_events(outcomes: Outcomes) -> int:
    """A cold model (every answer 0.5: a click) read in a clicks-only stream by a monitor
    that started at ``SINCE``: the clicks of the second before it came, then a clicked and
    a not-clicked row (its default) each 2 ms, each second's outcomes released together."""
    signals = DriftSignals(Task("binary"), DriftSpec(), interval=2.0, features=[])
    signals.watch("r1")
    fired = 0
    for second in range(-1, 20):
        at = SINCE + second + np.arange(500) / 500
        if second < 0:  # (no default was given before SINCE)
            outcomes_of = [(t, 1.0) for t in at]
        else:
            outcomes_of = [(t, y) for t in at for y in (1.0, 0.0)]
        for t, y in outcomes_of:
            if outcomes.known("s1", t, rows=1):
                signals.errors(np.array([0.5]), np.array([y]), t, ("r1", 0), [t + 1.0],
                               lambda: np.empty(0))  # fmt: skip
        fired += len(signals.release(now=SINCE + second + 2.0))
    return fired


def test_the_clicks_before_the_defaults_began_would_read_as_concept_drift_at_v0() -> None:
    """Scored alone, the clicks before the monitor's start read as a model right on every
    answer, then wrong on half once the defaults came: the rise is concept drift."""
    assert _concept_events(Outcomes()) == 1
    assert _concept_events(Outcomes(since=SINCE)) == 0
