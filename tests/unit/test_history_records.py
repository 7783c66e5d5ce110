"""History records as a catch-up reads them: typed rows when every row is the schema's, the
rows as logged otherwise (:class:`tideline.pods.history.RecordDecoder`)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tideline.features import FeatureSchema
from tideline.pods.history import Record, RecordDecoder
from tideline.tasks import Task

SCHEMA = FeatureSchema.from_spec([{"name": "amount"}, {"name": "country", "type": "categorical"}])
ROW = {"amount": 12.5, "country": "fr"}


def _record(**changed: Any) -> Record:
    base: dict[str, Any] = {"ts": 1.0, "rows": [ROW, ROW], "labels": [1, 0],
                            "received": [2.0, 2.0], "marks": ["a", "b"], "scores": [0.7, 0.2],
                            "tracks": ["stable", "canary"], "models": {"stable": ("r1", 3)}}  # fmt: skip
    base.update(changed)
    return Record(**base)


CASES = [
    (_record(), Task("binary"), True),
    (_record(labels=[True, False]), Task("binary"), True),
    (_record(fallback=True, scores=[0.5, 0.5]), Task("binary"), True),
    (_record(rows=[ROW, {"amount": 1.0}]), Task("binary"), False),
    (_record(rows=[ROW, {**ROW, "note": "x"}]), Task("binary"), False),
    (_record(rows=[ROW, {**ROW, "amount": "1"}]), Task("binary"), False),
    (_record(rows=[ROW, {**ROW, "amount": None}]), Task("binary"), False),
    (_record(labels=[1, "yes"]), Task("binary"), False),
    (_record(scores=[0.7, None]), Task("binary"), False),
    (
        _record(labels=["cat", "dog"], scores=[[0.2, 0.8], [0.9, 0.1]]),
        Task("multiclass", ("cat", "dog")),
        True,
    ),
    (
        _record(labels=["cat", "dog"], scores=[0.2, 0.8]),
        Task("multiclass", ("cat", "dog")),
        False,
    ),
]
IDS = [
    "rows of the schema, numeric labels and scores are typed",
    "boolean labels are typed",
    "a fallback's record is typed (the catch-up leaves its rows out of the comparison)",
    "a row missing a feature is read as logged",
    "a row with a field the model does not have is read as logged",
    "a number as text is read as logged",
    "a null value is read as logged",
    "a label that is not a number is read as logged",
    "a score that is not a number is read as logged",
    "a multiclass record of class names and probability rows is typed",
    "a multiclass record of single scores is read as logged",
]


@pytest.mark.parametrize(("record", "task", "typed"), CASES, ids=IDS)
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "JSON"])
def test_a_record_decodes_typed_only_when_every_row_label_and_score_is_the_models(
    record: Record, task: Task, typed: bool, packed: bool
) -> None:
    fields = record.fields() if packed else {b"data": record.encode()}
    got, how, marks = RecordDecoder(SCHEMA, task).decode(fields)
    assert how == ("logged" if not typed else "columns" if packed else "typed")
    assert isinstance(got, Record)
    assert (got.ts, got.received, got.tracks, got.models, got.fallback) == (
        record.ts, record.received, record.tracks, record.models, record.fallback)  # fmt: skip
    # (a packed record's marks stay packed; a record read otherwise has them both ways)
    assert msgspec.msgpack.decode(marks) == record.marks
    assert got.marks == ([] if how == "columns" else record.marks)
    if how == "columns":
        assert SCHEMA.encode_columns([got.rows], 2).tolist() == SCHEMA.encode(record.rows).tolist()
    elif how == "typed":
        assert SCHEMA.encode_typed(got.rows).tolist() == SCHEMA.encode(record.rows).tolist()
    else:
        assert got == record


@pytest.mark.parametrize(
    ("rows", "packed"),
    [
        ([ROW, {"amount": 2.0, "country": "de"}], True),
        ([{"amount": 3, "country": "fr"}, {"amount": True, "country": 7}], True),
        ([{"amount": float("nan"), "country": "fr"}], True),
        ([], True),
        ([{}, {}], True),
        ([ROW, {"country": "fr", "amount": 1.5}], True),
        ([ROW, {"amount": 1.5}], False),
        ([ROW, ["a", "b"]], False),
        ([{"amount": 2**70, "country": "fr"}], False),
    ],
    ids=[
        "rows of floats and strings are packed as columns",
        "integers, booleans and numbers for categories are packed as they are, and read back so",
        "a number that is not finite is packed as it is, not as a double",
        "no rows are packed",
        "rows with no feature are packed",
        "the same names in another order are packed",
        "rows with different names are kept as JSON",
        "a row that is not an object is kept as JSON",
        "an integer past 64 bits is kept as JSON",
    ],
)
def test_a_record_is_packed_when_its_rows_can_be_columns_and_reads_back_as_it_was(
    rows: list[Any], packed: bool
) -> None:
    record = _record(rows=rows, labels=[1] * len(rows), received=[2.0] * len(rows),
                     marks=["m"] * len(rows), scores=[0.5] * len(rows),
                     tracks=["stable"] * len(rows))  # fmt: skip
    fields = record.fields()
    assert list(fields) == [b"record" if packed else b"data"]
    got = Record.of(fields)
    assert msgspec.structs.replace(got, rows=[]) == msgspec.structs.replace(record, rows=[])

    def cells(rows: list[Any]) -> list[Any]:  # (each value's type and repr: NaN is not NaN)
        return [sorted((k, type(v), repr(v)) for k, v in row.items()) if isinstance(row, dict)
                else repr(row) for row in rows]  # fmt: skip

    assert cells(got.rows) == cells(rows)


@pytest.mark.parametrize(
    "fields",
    [
        {b"data": msgspec.json.encode({"ts": "x"})},
        {b"record": msgspec.msgpack.encode({"ts": "x"})},
        {b"record": b"\xc1"},
        {b"other": b"x"},
    ],
    ids=[
        "a JSON form that is not a record",
        "a packed form that is not a record",
        "bytes that are not MessagePack",
        "an entry with neither field",
    ],  # fmt: skip
)
def test_what_is_not_a_record_is_refused(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(ValueError, match="not a history record"):
        RecordDecoder(SCHEMA, Task("binary")).decode(fields)
    with pytest.raises(ValueError, match="not a history record"):
        Record.of(fields)


def test_a_packed_column_of_the_wrong_length_is_not_a_record() -> None:
    fields = _record().fields()
    doc = msgspec.msgpack.decode(fields[b"record"])
    doc["columns"]["amount"] = doc["columns"]["amount"][:8]
    with pytest.raises(ValueError, match="not a history record"):
        RecordDecoder(SCHEMA, Task("binary")).decode({b"record": msgspec.msgpack.encode(doc)})
