"""What ``tideline run``'s label producer gone wrong sends (:class:`tideline.demo.local.Simulator`):
every label flipped, or - clicks only - a click on every row that was not clicked."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.helpers import manifest
from tideline.demo.local import Simulator
from tideline.spec import parse


@pytest.mark.parametrize(
    ("learning", "sent"),
    [
        ({}, ([{"i": 0}, {"i": 1}, {"i": 2}, {"i": 3}], [0.0, 1.0, 0.0, 1.0])),
        ({"labelDefault": {"value": 0, "after": "5s"}}, ([{"i": 1}, {"i": 3}], [1.0, 1.0])),
    ],
    ids=[
        "every label sent: every row with its label flipped",
        "clicks only: a click on each row not clicked, nothing for the rows clicked",
    ],
)
def test_a_poisoning_sends_flipped_labels_or_clicks_on_rows_not_clicked(
    learning: dict[str, Any], sent: tuple[list[dict[str, Any]], list[float]]
) -> None:
    sim = Simulator(parse(manifest(learning=learning)), rate=100.0, drift_at=None, seed=1)
    rows = [{"i": i} for i in range(4)]
    y = np.array([1.0, 0.0, 1.0, 0.0])
    assert sim._poisoned(rows, y, sim._labels(y)) == sent
