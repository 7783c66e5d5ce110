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


@pytest.mark.parametrize(
    ("record", "task", "typed"),
    [
        (_record(), Task("binary"), True),
        (_record(labels=[True, False]), Task("binary"), True),
        (_record(fallback=True, scores=[0.5, 0.5]), Task("binary"), True),
        (_record(rows=[ROW, {"amount": 1}]), Task("binary"), False),
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
    ],
    ids=[
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
    ],
)
def test_a_record_decodes_typed_only_when_every_row_label_and_score_is_the_models(
    record: Record, task: Task, typed: bool
) -> None:
    got, was_typed = RecordDecoder(SCHEMA, task).decode(record.encode())
    assert was_typed is typed
    assert isinstance(got, Record)
    assert (got.ts, got.received, got.marks, got.tracks, got.models, got.fallback) == (
        record.ts, record.received, record.marks, record.tracks, record.models, record.fallback)  # fmt: skip
    if typed:
        assert SCHEMA.encode_typed(got.rows).tolist() == SCHEMA.encode(record.rows).tolist()
    else:
        assert got == record


def test_what_is_not_a_record_is_refused() -> None:
    with pytest.raises(ValueError, match="not a history record"):
        RecordDecoder(SCHEMA, Task("binary")).decode(msgspec.json.encode({"ts": "x"}))
