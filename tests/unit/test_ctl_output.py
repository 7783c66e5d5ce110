"""``kubectl tideline list|get|history|deadletters -o json|yaml``: the same reads as the
text, with stable keys (every key in every row, null where there is no value), the same
data in either format."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.unit.test_ctl import CANARY, HEALTHY, NOW, model
from tideline.contracts import DeadLetter
from tideline.ctl.main import build_parser
from tideline.ctl.output import deadletters_data, dump, get_data, history_data, list_data

LIST_KEYS = ["namespace", "name", "phase", "stableRevision", "canaryRevision", "canaryWeight", "shadow",
             "aborted", "servedVersion", "pinned", "latestVersion", "lastGoodVersion",
             "createdAt"]  # fmt: skip
EVENTS = [
    {"type": "Warning", "reason": "RolledBack", "message": "to v11", "count": 3,
     "lastTimestamp": "2026-03-01T11:59:00Z"},
    {"type": "Normal", "reason": "CanaryStarted", "message": "bbbb",
     "lastTimestamp": "2026-03-01T11:10:00Z"},
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "row"),
    [
        (CANARY, {"phase": "Progressing", "stableRevision": "aaaa", "canaryRevision": "bbbb",
                  "canaryWeight": 10, "aborted": False, "servedVersion": 12, "pinned": False}),
        ({**HEALTHY, "pinned": True, "servedVersion": 11},
         {"canaryRevision": None, "canaryWeight": None, "servedVersion": 11, "pinned": True}),
        ({}, {"phase": None, "stableRevision": None, "servedVersion": None, "pinned": False}),
    ],
    ids=[
        "a canary: its revision and weight",
        "a pinned served version, no canary: nulls, not missing keys",
        "a model without status yet: every key, null",
    ],
)  # fmt: skip
def test_list_has_every_key_in_every_row(status: dict[str, Any], row: dict[str, Any]) -> None:
    data = list_data([model(status)])
    assert data["kind"] == "OnlineModelList"
    [item] = data["items"]
    assert list(item) == LIST_KEYS
    assert {k: item[k] for k in row} == row
    assert item["namespace"] == "team" and item["createdAt"] == "2026-03-01T11:00:00Z"


def test_get_has_the_status_as_the_api_holds_it_the_operators_annotations_and_events() -> None:
    obj = model(CANARY, annotations={"tideline.dev/promote": "bbbb", "other/x": "y"})
    data = get_data(obj, EVENTS)
    assert list(data) == ["kind", "namespace", "name", "generation", "createdAt", "shadow", "status",
                          "annotations", "events"]  # fmt: skip
    assert data["status"] == obj["status"]
    assert data["annotations"] == {"tideline.dev/promote": "bbbb"}
    assert data["events"] == [
        {"at": "2026-03-01T11:10:00Z", "type": "Normal", "reason": "CanaryStarted",
         "message": "bbbb", "count": 1},
        {"at": "2026-03-01T11:59:00Z", "type": "Warning", "reason": "RolledBack",
         "message": "to v11", "count": 3},
    ]  # fmt: skip


def test_history_has_the_moments_oldest_first_and_the_versions_now() -> None:
    status = {**CANARY, "promotedAt": NOW - 600}
    data = history_data(model(status), EVENTS)
    assert [(m["reason"], m["source"]) for m in data["moments"]] == [
        ("Created", "status"), ("CanaryStarted", "event"), ("Promoted", "status"),
        ("RolledBack", "event")]  # fmt: skip
    assert data["moments"][2]["at"] == "2026-03-01T11:50:00Z"
    assert data["now"] == {"phase": "Progressing", "stableRevision": "aaaa", "servedVersion": 12,
                           "pinned": False, "latestVersion": 12, "lastGoodVersion": 11,
                           "canaryRevision": "bbbb", "canaryWeight": 10}  # fmt: skip


def test_deadletters_are_whole_not_abbreviated() -> None:
    long = "v" * 500
    d = DeadLetter("s", "1-0", "invalid: " + long, {"data": long}, at=NOW)
    [item] = deadletters_data([d])["items"]
    assert item == {"at": "2026-03-01T12:00:00Z", "reason": "invalid: " + long, "kind": "invalid",
                    "stream": "s", "entry": "1-0", "fields": {"data": long}}  # fmt: skip


@pytest.mark.parametrize(
    "data",
    [
        list_data([model(CANARY), model({})]),
        get_data(model(CANARY), EVENTS),
        history_data(model(HEALTHY), EVENTS),
        deadletters_data([DeadLetter("s", "1-0", "late: é", {"id": "ü"}, at=NOW)]),
    ],
    ids=["list", "get", "history", "deadletters"],
)
def test_json_and_yaml_hold_the_same_data(data: dict[str, Any]) -> None:
    assert json.loads(dump(data, "json")) == data
    assert yaml.safe_load(dump(data, "yaml")) == data


def test_output_is_offered_where_there_is_something_to_read() -> None:
    parser = build_parser()
    for args in (["list"], ["get", "m"], ["history", "m"], ["deadletters", "m"]):
        assert parser.parse_args([*args, "-o", "yaml"]).output == "yaml"
    with pytest.raises(SystemExit):
        parser.parse_args(["get", "m", "-o", "wide"])
    with pytest.raises(SystemExit):
        parser.parse_args(["promote", "m", "-o", "json"])


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_get_watch_with_output_prints_whole_documents_one_after_another(
    fmt: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tideline.ctl import main

    seen = [model(HEALTHY), model(CANARY)]
    monkeypatch.setattr(main, "get_model", lambda *_: seen[0])
    monkeypatch.setattr(main, "watch_model", lambda *_: iter(seen))
    monkeypatch.setattr(main, "events_or_none", lambda *_: [])
    args = build_parser().parse_args(["get", "fraud", "-w", "-o", fmt])
    args.prog = "kubectl tideline"
    assert main.cmd_get(None, args) == 0  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    if fmt == "yaml":
        docs = [d for d in yaml.safe_load_all(out) if d is not None]
    else:
        decoder, docs, at = json.JSONDecoder(), [], 0
        while out[at:].strip():
            doc, at = decoder.raw_decode(out, at + len(out[at:]) - len(out[at:].lstrip()))
            docs.append(doc)
    assert [d["status"]["phase"] for d in docs] == [s["phase"] for s in (HEALTHY, CANARY)]
    assert "was deleted" in err, "stdout holds the documents alone"
