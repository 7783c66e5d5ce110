"""When a reader of labels gives defaults and lets its held labels go
(:class:`tideline.pods.defaults.Defaulting`, the learner's and the monitor's): no Redis, a
stand-in for the log's reader that records the times it is asked up to. And how the learner
reads the rows given defaults (:class:`tideline.pods.defaults.TypedRows`)."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest

from tideline import predlog
from tideline.features import FeatureSchema
from tideline.pods.defaults import CLOCK_SLACK, DEFAULTS_EVERY, Defaulting, TypedRows
from tideline.pods.join import Joined

AFTER = 30.0


class Issued:
    """Stands for :class:`tideline.pods.defaults.DefaultLabels`: the times ``issue`` was
    asked up to."""

    after = AFTER

    def __init__(self) -> None:
        self.asked: list[float] = []

    def issue(self, read_until: float) -> list[Any]:
        self.asked.append(read_until)
        return []


def defaulting() -> tuple[Defaulting[str], Issued]:
    issued = Issued()
    return Defaulting(cast(Any, issued), most_rows=10), issued


# reads after one another: (asked, entries, most, new)
T0 = 1_000.0


@pytest.mark.parametrize(
    ("reads", "looks"),
    [
        ([(T0, 3, 10, True)], [T0 - CLOCK_SLACK]),
        ([(T0, 10, 10, True)], []),
        ([(T0, 3, 10, False)], []),
        ([(T0, 3, 10, True), (T0 + DEFAULTS_EVERY / 2, 3, 10, True)], [T0 - CLOCK_SLACK]),
        (
            [(T0, 3, 10, True), (T0 + DEFAULTS_EVERY, 3, 10, True)],
            [T0 - CLOCK_SLACK, T0 + DEFAULTS_EVERY - CLOCK_SLACK],
        ),
        ([(T0, 3, 10, True), (T0 + 5, 10, 10, True)], [T0 - CLOCK_SLACK]),
    ],
    ids=[
        "a short read of new labels says every label before it was asked is read: a look",
        "a full read says nothing (more may wait): no look",
        "a short re-read of pending labels after a restart says nothing of what came since",
        "a second look waits for DEFAULTS_EVERY seconds of labels read",
        "after DEFAULTS_EVERY seconds of labels read, a look up to the new time",
        "a full read later leaves the time where the last short one put it",
    ],
)
def test_defaults_are_looked_for_up_to_the_time_every_label_is_read(
    reads: list[tuple[float, int, int, bool]], looks: list[float]
) -> None:
    d, issued = defaulting()
    for asked, entries, most, new in reads:
        d.due(asked, entries, most, new)
    assert issued.asked == looks
    assert d.mature_to == (looks[-1] if looks else None)


def test_a_held_label_goes_with_the_defaults_of_its_time() -> None:
    d, _ = defaulting()
    made = T0 - AFTER - CLOCK_SLACK  # mature once every label before T0 is read
    assert d.early(made)  # (nothing read yet)
    assert d.hold("click", made, rows=1) and d.hold("later", made + 1, rows=2)
    assert d.due(T0 - 1, 3, 10, True) == ([], [])
    assert d.due(T0, 3, 10, True) == ([], [("click", made)])
    assert not d.early(made) and d.early(made + 1)
    assert d.maturing.held == 2


def test_without_a_default_nothing_is_early_or_due() -> None:
    d: Defaulting[str] = Defaulting(None, most_rows=10)
    assert not d.early(T0)
    assert d.due(T0, 0, 10, True) == ([], [])
    assert d.mature_to is None


SCHEMA = FeatureSchema.from_spec([{"name": "amount"}, {"name": "country", "type": "categorical"}])


def given(rows: list[Any], taken: tuple[int, ...] = ()) -> Joined:
    """A logged request of ``rows`` with the default given to those ``taken`` leaves."""
    fields = predlog.encode([predlog.Meta()], [orjson.dumps([0.5] * len(rows))],
                            [orjson.dumps({"instances": rows})])  # fmt: skip
    mine = [i for i in range(len(rows)) if i not in taken]
    n = len(mine)
    return Joined(predlog.decode(fields).request(0), T0, mine, [0.0] * n, ["d"] * n, [T0] * n,
                  0, [f"i 1-0 0 {i}" for i in mine])  # fmt: skip


def test_the_rows_given_defaults_are_decoded_typed_in_order_when_all_are_of_the_schema() -> None:
    first = [{"amount": 1.5, "country": "de"}, {"amount": 2, "country": "fr"}]
    second = [{"amount": 3.0, "country": "it"}, {"amount": 4.0, "country": "es"},
              {"amount": 5.0, "country": "pt"}]  # fmt: skip
    typed = [TypedRows(SCHEMA).of(j) for j in (given(first), given(second, taken=(1,)))]
    assert typed[0] is not None and typed[1] is not None
    typed = typed[0] + typed[1]
    expected = first + [second[0], second[2]]  # (the row a label took is not among them)
    assert SCHEMA.encode_typed(typed).tolist() == SCHEMA.encode(expected).tolist()


@pytest.mark.parametrize(
    "row",
    [
        {"amount": 1.0},
        {"amount": None, "country": "de"},
        {"amount": "1", "country": "de"},
        {"amount": 1.0, "country": "de", "other": 2},
        [1.0, "de"],
    ],  # fmt: skip
    ids=["a value missing", "null", "a number as text", "a name not of the schema", "an array"],
)
def test_a_request_with_a_row_not_of_the_schema_is_read_as_a_labels_are(row: Any) -> None:
    good = given([{"amount": 1.0, "country": "de"}])
    typed = TypedRows(SCHEMA)
    assert typed.of(given([{"amount": 2.0, "country": "fr"}, row])) is None
    assert typed.of(good) is not None, "the requests of the schema beside it stay typed"
