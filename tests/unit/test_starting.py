"""Where a learner without a checkpoint starts, and what it holds to put back, without
Redis (the learner process's reads and writes are proven in tests/integration)."""

from __future__ import annotations

import pytest

from tests.helpers import manifest
from tideline.algorithms import Learner, make_learner
from tideline.contracts import Pointers, StartWord
from tideline.spec import SpecError, parse
from tideline.starting import (
    PUBLISHED_KEPT,
    Found,
    FromServed,
    Held,
    Publish,
    Start,
    Wait,
    check_warm_start,
    first_state,
)


@pytest.mark.parametrize(
    ("found", "awaits", "start"),
    [
        (Found(served=3, newest=7), False, FromServed(3, newest=7)),
        (Found(served=3, newest=7, word=StartWord(after=9)), True, FromServed(3, newest=7)),
        (Found(refused=3, newest=7), False, Publish(after=7)),
        (Found(refused=8, newest=7), True, Publish(after=8)),
        (Found(), False, Publish()),
        (Found(word=StartWord(after=4)), False, Publish()),
        (Found(), True, Wait()),
        (Found(newest=5), True, Wait()),
        (Found(word=StartWord(after=None)), True, Publish()),
        (Found(word=StartWord(after=4), newest=2), True, Publish(after=4)),
    ],
    ids=[
        "a served version that verifies is resumed from, numbering on after the newest",
        "the served version wins over the operator's word",
        "a refused served version: after the newest, without the operator",
        "... the refused number counts as stored",
        "no checkpoint, nothing stored, not waiting: v0",
        "a word is only read by a learner that waits for one",
        "waiting and no word: wait",
        "versions but none served: still the operator's to say",
        "the word 'fresh': v0",
        "the word 'after:4': v5",
    ],
)
def test_where_a_learner_without_a_checkpoint_starts(
    found: Found, awaits: bool, start: Start
) -> None:
    assert first_state(found, awaits) == start


def test_a_first_version_is_numbered_after_what_the_store_lost() -> None:
    assert Publish().version == 0 and Publish(after=4).version == 5


def _learner(**model: object) -> Learner:
    doc = manifest(name="fraud")
    doc["spec"]["model"].update(model)
    return make_learner(parse(doc).spec.model.to_dict())


def test_a_warm_start_of_the_same_model_is_taken() -> None:
    check_warm_start(_learner(), _learner(), "baseline.bin")


@pytest.mark.parametrize(
    "other",
    [{"algorithm": "ftrl"}, {"task": "regression"}],
    ids=["another algorithm", "another task"],
)
def test_a_warm_start_of_another_model_names_the_field_and_the_source(other: dict) -> None:
    with pytest.raises(SpecError, match=r"spec\.model\.warmStart.*baseline\.bin"):
        check_warm_start(_learner(**other), _learner(), "baseline.bin")


def _stored(v: int) -> tuple[bytes, dict]:
    return f"blob{v}".encode(), {"samples": v}


def test_a_published_version_is_latest_and_served_unless_pinned() -> None:
    held = Held()
    held.published(0, _learner(), _stored(0), pin=False, baseline=True)
    assert (held.pointers.latest, held.pointers.served, held.pointers.lastGood) == (0, 0, 0)
    held.published(1, _learner(), _stored(1), pin=True, baseline=False)
    p = held.pointers
    assert (p.latest, p.served, p.lastGood, p.pinned) == (1, 0, 0, True)
    held.published(2, _learner(), _stored(2), pin=False, baseline=False)
    assert held.pointers.served == 0, "a pin holds until the operator lifts it"


def test_only_the_versions_it_could_have_to_put_back_are_held() -> None:
    held = Held()
    copies = [_learner() for _ in range(PUBLISHED_KEPT + 3)]
    for v, copy in enumerate(copies):
        held.published(v, copy, _stored(v), pin=False, baseline=v == 0)
    newest = len(copies) - 1
    kept = set(range(newest - PUBLISHED_KEPT + 1, newest + 1))
    assert set(held.copies) == kept and set(held.blobs) == kept | {0}, "and lastGood's blob"
    assert held.serve(newest - 1) is copies[newest - 1], "its own copy: no load"
    assert set(held.copies) == {newest} and held.served == newest - 1
    assert set(held.blobs) == {newest - 1, newest, 0}


def test_a_served_version_it_did_not_publish_is_loaded_and_then_held() -> None:
    held = Held()
    assert held.serve(3) is None and held.served == -1, "nothing of its own: load it"
    held.read(Pointers(latest=3, served=3, lastGood=1))
    held.loaded(3, _stored(3))
    assert held.served == 3 and set(held.blobs) == {3}
    held.read(Pointers())
    assert held.pointers.latest == 3, "pointers gone from the store are kept as known"


def test_what_is_put_back_carries_the_pointers_that_name_it_and_the_pin_first() -> None:
    held = Held()
    held.published(4, _learner(), _stored(4), pin=False, baseline=True)
    held.read(Pointers(latest=4, served=4, lastGood=4))
    held.published(5, _learner(), _stored(5), pin=True, baseline=False)
    held.pointers = Pointers(latest=5, served=4, lastGood=4, pinned=True, pinReason="breach")
    back = held.put_back()
    assert [(v, blob) for v, blob, _, _ in back] == [(4, b"blob4"), (5, b"blob5")]
    first, second = back[0][3], back[1][3]
    assert first == {"served": 4, "lastGood": 4, Pointers.PINNED: True, "pinReason": "breach"}
    assert second == {"latest": 5}
