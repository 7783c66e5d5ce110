"""The samples stream of a multiclass model: labels are class names (a whole number is a
class's index), on the typed path as on the general one."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import FRAUD_FEATURES, sample_datas
from tideline import samples
from tideline.demo.simulate import SyntheticStream
from tideline.features import FeatureSchema
from tideline.samples import SampleDecoder, one, pack, rows_of
from tideline.tasks import Task

SCHEMA = FeatureSchema.from_spec(FRAUD_FEATURES)
TASK = Task("multiclass", ("cat", "dog", "eel"))


def _entries(datas: list[bytes]) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return [(b"%d-0" % (i + 1), {b"data": d}) for i, d in enumerate(datas)]


def _datas(rows: list, labels: list, packed: bool) -> list[bytes]:
    if packed:
        return [pack(rows[:3], labels[:3]), pack(rows[3:], labels[3:])]
    return [one(r, v) for r, v in zip(rows, labels, strict=True)]


@pytest.fixture(params=[1 << 30, 0], ids=["joined", "one by one"], autouse=True)
def entry_decoding(request, monkeypatch):  # type: ignore[no-untyped-def]
    """Entries decoded joined in one document, and one by one (as in test_samples)."""
    monkeypatch.setattr(samples, "LARGE_ENTRY_BYTES", request.param)


@pytest.mark.parametrize("packed", [False, True], ids=["one-row entries", "packed entries"])
@pytest.mark.parametrize(
    "labels",
    [
        pytest.param(["cat", "eel", "dog", "dog", "cat", "eel", "eel", "cat"], id="class names"),
        pytest.param([0, "eel", 1.0, "dog", 2, "cat", "eel", 0],
                     id="class names and indices mixed in one read"),
        pytest.param([2, 0, 1, 1, 0, 2, 2, 0], id="class indices"),
    ],
)  # fmt: skip
def test_class_names_take_the_fast_path_and_read_as_the_general_path_reads_them(
    labels: list, packed: bool
) -> None:
    rows, _ = SyntheticStream(FRAUD_FEATURES, "binary", seed=4).take(len(labels))
    datas = _datas(rows, labels, packed)
    dec = SampleDecoder(SCHEMA, TASK)
    fast = dec.decode(_entries(datas))
    # the same entries and one that is not JSON: the read goes entry by entry
    general = dec.decode(_entries([*datas, b"{not json"]))
    assert fast.fast and not general.fast
    assert fast.runs == general.runs
    np.testing.assert_array_equal(fast.X, general.X)
    np.testing.assert_array_equal(fast.y, general.y)
    np.testing.assert_array_equal(fast.X, SCHEMA.encode(rows))
    assert fast.y.dtype == np.float64 and fast.y.tolist() == [TASK.target(v) for v in labels]


@pytest.mark.parametrize("packed", [False, True], ids=["one-row entries", "packed entries"])
@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        pytest.param("fox", "'fox' is not a class of this model (classes: cat, dog, eel)",
                     id="a class the model does not have"),
        pytest.param("Cat", "'Cat' is not a class of this model (classes: cat, dog, eel)",
                     id="a class name in another case"),
        pytest.param(3, "multiclass labels must be class indices 0 to 2 (got 3)",
                     id="an index past the last class"),
        pytest.param(1.5, "a class index must be a whole number (got 1.5)",
                     id="an index that is not a whole number"),
        pytest.param(True, "a label must be a class name or a class index (got bool)",
                     id="a boolean"),
        pytest.param(None, "a label must be a class name or a class index (got NoneType)",
                     id="a null label"),
    ],
)  # fmt: skip
def test_a_label_that_is_not_a_class_is_refused_with_the_task_s_reason_and_the_rest_learned(
    bad: object, reason: str, packed: bool
) -> None:
    rows, _ = SyntheticStream(FRAUD_FEATURES, "binary", seed=5).take(4)
    labels = ["dog", bad, "eel", 0]
    datas = sample_datas(rows, labels, packed)
    d = SampleDecoder(SCHEMA, TASK).decode(_entries(datas))
    assert not d.fast
    where = (b"1-0", 1) if packed else (b"2-0", None)  # that row of the entry, or that entry
    assert [(r.entry, r.row, r.reason) for r in d.refused] == [(*where, f"invalid label: {reason}")]
    np.testing.assert_array_equal(d.X, SCHEMA.encode([rows[0], rows[2], rows[3]]))
    assert d.y.tolist() == [1.0, 2.0, 0.0]


def test_a_binary_model_s_decoder_built_from_its_task_reads_as_from_its_name() -> None:
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=6).take(20)
    datas = [one(r, float(v)) for r, v in zip(rows, y, strict=True)]
    a = SampleDecoder(SCHEMA, Task("binary")).decode(_entries(datas))
    b = SampleDecoder(SCHEMA, "binary").decode(_entries(datas))
    assert a.fast and b.fast
    np.testing.assert_array_equal(a.y, b.y)


@pytest.mark.parametrize(
    ("task", "amounts", "labels"),
    [
        pytest.param(TASK, [1.0, 3.0, 4.0], [1.0, 2.0, 0.0],
                     id="with the task: class names and indices, 'fox' and 1.5 skipped"),
        pytest.param(None, [4.0, 5.0], [0.0, 1.5],
                     id="without: numbers, as before a label could be a class name"),
    ],
)  # fmt: skip
def test_rows_of_reads_labels_as_the_task_does(
    task: Task | None, amounts: list, labels: list
) -> None:
    entries = _entries(
        [
            pack([{"amount": 1.0}, {"amount": 2.0}, {"amount": 3.0}], ["dog", "fox", "eel"]),
            one({"amount": 4.0}, 0),
            one({"amount": 5.0}, 1.5),
            b"{not json",
        ]
    )
    rows, ys = rows_of(entries, task)
    assert [r["amount"] for r in rows] == amounts and ys == labels
