"""The wire contracts: what one process writes, another reads, with errors that say why."""

from __future__ import annotations

import orjson
import pytest

from tideline.contracts import Feedback, Pointers, decode_feedback


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "entry has no 'data' field"),
        (b"{not json", "'data' is not valid JSON"),
        (b"[1, 2]", "'data' must be a JSON object"),
        (b'{"label": 1}', "'data' has no 'id'"),
        (b'{"id": "p"}', "'data' has no 'label'"),
        (b'{"id": "p", "label": true}', "'label' must be a number or a class name (got bool)"),
        (b'{"id": "p", "label": [1]}', "'label' must be a number or a class name (got list)"),
        (b'{"id": null, "label": 1}', "an id must be a string or an integer (got null)"),
        (b'{"id": 1.5, "label": 1}', "an id must be a string or an integer (got float)"),
        (b'{"id": "p", "label": 1, "ts": "now"}', "'ts' must be a number (got str)"),
        (orjson.dumps({"id": "x" * 257, "label": 1}), "an id must be at most 256 characters"),
    ],
)
def test_a_bad_feedback_payload_is_refused_naming_what_is_wrong(data, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_feedback(data)


def test_feedback_reads_what_producers_write_and_what_the_server_writes() -> None:
    assert decode_feedback(b'{"id": 42, "label": 1}') == Feedback("42", 1.0)
    big = 2**70  # past msgspec's integers: read by the second path, the same result
    assert decode_feedback(orjson.dumps({"id": str(big), "label": 0})).id == str(big)
    assert decode_feedback(b'{"id": %d, "label": 0}' % big).id == str(big)
    sent = Feedback("0a1b-7", 0.0, 1764500000.5)
    assert decode_feedback(sent.encode()) == sent
    assert decode_feedback(b'{"id": "p", "label": 2.5, "extra": [1]}').label == 2.5


def test_pointers_from_the_hash_redis_returns() -> None:
    p = Pointers.from_hash({b"latest": b"7", b"served": b"6", b"lastGood": b"3", b"pinned": b"1"})
    assert (p.latest, p.served, p.lastGood, p.pinned) == (7, 6, 3, True)
    assert Pointers.from_hash({}) == Pointers() and Pointers().served is None
    assert Pointers.from_hash({b"served": b"x", b"other": b"2"}) == Pointers()  # not ours
    assert p.get("lastGood") == 3
    with pytest.raises(KeyError):
        p.get("pinned")  # a flag, not a version
