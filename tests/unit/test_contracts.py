"""The wire contracts: what one process writes, another reads, with errors that say why."""

from __future__ import annotations

import orjson
import pytest

from tideline.contracts import (
    Feedback,
    LearnerControl,
    Pointers,
    Routing,
    StartWord,
    decode_feedback,
)


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


# -- the routing hash: the operator writes it, every server (and the monitor) reads it ----------
@pytest.mark.parametrize(
    "routing",
    [
        Routing("a"),
        Routing("a", "b", 30),
        Routing("a", "b", 0, shadow=True),
        Routing("a", "b", 100, canary_url="http://m-canary.ns.svc:8080"),
    ],
    ids=[
        "no canary: all to the stable",
        "a canary answers 30 percent",
        "a shadow canary answers unseen",
        "a canary of another image is forwarded its whole share",
    ],
)
def test_the_routing_the_operator_writes_is_the_routing_a_server_reads(routing) -> None:
    assert Routing.from_hash(routing.to_hash(), default_stable="other") == routing


def test_the_routing_hash_keeps_its_field_names_and_encodings() -> None:
    # servers of the release before read these: a rename routes every request to the stable
    assert Routing("a", "b", 30, True, "http://b").to_hash() == {
        b"stable": b"a", b"canary": b"b", b"weight": b"30", b"shadow": b"1",
        b"canaryURL": b"http://b",
    }  # fmt: skip
    assert Routing("a").to_hash() == {
        b"stable": b"a", b"canary": b"", b"weight": b"0", b"shadow": b"0", b"canaryURL": b"",
    }  # fmt: skip
    assert tuple(k.decode() for k in Routing("a").to_hash()) == Routing.FIELDS


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, Routing("dflt")),
        ({b"canary": b"b", b"weight": b"20"}, Routing("dflt", "b", 20)),
        ({b"stable": b"", b"canary": b"", b"canaryURL": b""}, Routing("dflt")),
        ({b"stable": b"a", b"weight": b"lots"}, Routing("a")),
        ({b"stable": b"a", b"weight": b"2.5"}, Routing("a")),
        ({b"stable": b"a", b"weight": b"150"}, Routing("a", weight=100)),
        ({b"stable": b"a", b"weight": b"-5"}, Routing("a")),
        ({b"stable": b"a", b"shadow": b"true"}, Routing("a")),
        ({b"stable": b"\xff", b"canary": b"\xff\xfe", b"weight": b"\xff"}, Routing("dflt")),
        ({b"stable": b"a", b"other": b"1"}, Routing("a")),
    ],
    ids=[
        "no hash yet is everything to the default stable",
        "a hash that names no stable keeps the default one",
        "empty fields are no canary and no URL",
        "a weight that is not a number is no weight",
        "a weight that is not a whole number is no weight",
        "a weight past 100 is 100",
        "a weight under 0 is 0",
        "a shadow other than 1 is no shadow",
        "fields that are not UTF-8 are as if missing, not raised on",
        "a field it does not know is not its",
    ],
)
def test_a_routing_hash_missing_or_garbled_reads_as_the_defaults(raw, expected) -> None:
    assert Routing.from_hash(raw, default_stable="dflt") == expected


# -- the control hash: the operator writes a request, the learner acts and deletes it -------
@pytest.mark.parametrize(
    ("writes", "expected"),
    [
        ([], LearnerControl()),
        ([LearnerControl.reset_hash(6)], LearnerControl(reset_to=6)),
        ([LearnerControl.adapt_hash(1764500000.123)], LearnerControl(adapt=1764500000.123)),
        ([LearnerControl.paused_hash(True)], LearnerControl(paused=True)),
        ([LearnerControl.paused_hash(True), LearnerControl.paused_hash(False)], LearnerControl()),
        (
            [
                LearnerControl.reset_hash(0),
                LearnerControl.paused_hash(True),
                LearnerControl.adapt_hash(12),
                {StartWord.FIELD.encode(): b"after:7"},
            ],
            LearnerControl(reset_to=0, adapt=12.0, paused=True),
        ),
    ],
    ids=[
        "no hash is no request and learning",
        "a rollback asks for a reset to the version served again",
        "concept drift asks to adapt, with the drift's time to the microsecond",
        "the pause policy pauses",
        "the last pause-learning written stands",
        "the requests of one turn and the start word share the hash",
    ],
)
def test_the_requests_the_operator_writes_are_the_ones_the_learner_reads(writes, expected) -> None:
    raw: dict[bytes, bytes] = {}
    for w in writes:  # HSET of one request's field at a time, as the operator writes them
        raw.update(w)
    assert LearnerControl.from_hash(raw) == expected


def test_the_control_hash_keeps_its_field_names_and_encodings() -> None:
    # learners of the release before read these (and delete resetTo and adapt by name)
    assert LearnerControl.reset_hash(6) == {b"resetTo": b"6"}
    assert LearnerControl.adapt_hash(1764500000.5) == {b"adapt": b"1764500000.5"}
    assert LearnerControl.adapt_hash(12) == {b"adapt": b"12.0"}
    assert LearnerControl.paused_hash(True) == {b"paused": b"1"}
    assert LearnerControl.paused_hash(False) == {b"paused": b"0"}
    names = (LearnerControl.RESET_TO, LearnerControl.ADAPT, LearnerControl.PAUSED)
    assert names == ("resetTo", "adapt", "paused")
    assert StartWord.FIELD not in names


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({b"resetTo": b"v6"}, LearnerControl(unreadable=("resetTo",))),
        ({b"resetTo": b"-1"}, LearnerControl(unreadable=("resetTo",))),
        ({b"resetTo": b""}, LearnerControl(unreadable=("resetTo",))),
        ({b"adapt": b"soon"}, LearnerControl(unreadable=("adapt",))),
        ({b"adapt": b"\xff"}, LearnerControl(unreadable=("adapt",))),
        (
            {b"resetTo": b"x", b"adapt": b"y", b"paused": b"1"},
            LearnerControl(paused=True, unreadable=("resetTo", "adapt")),
        ),
        ({b"paused": b"yes"}, LearnerControl()),
        ({b"paused": b""}, LearnerControl()),
        ({b"start": b"fresh", b"other": b"1"}, LearnerControl()),
    ],
    ids=[
        "a reset to what is not a version is unreadable",
        "a reset to a negative version is unreadable",
        "an empty reset is unreadable",
        "an adapt that is not a time is unreadable",
        "an adapt that is not even text is unreadable",
        "unreadable requests do not hide a pause beside them",
        "a paused other than 1 is learning",
        "an empty paused is learning",
        "the start word and fields it does not know are not requests",
    ],
)
def test_a_control_hash_garbled_reads_as_no_request_and_names_it(raw, expected) -> None:
    assert LearnerControl.from_hash(raw) == expected
