"""The samples stream's decoder: a whole read at once when it can, entry by entry when not."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import FRAUD_FEATURES, sample_datas
from tideline import samples
from tideline.demo.simulate import SyntheticStream
from tideline.features import FeatureSchema
from tideline.samples import SampleDecoder, one, pack

SCHEMA = FeatureSchema.from_spec(FRAUD_FEATURES)


def _entries(datas: list[bytes]) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return [(b"%d-0" % (i + 1), {b"data": d}) for i, d in enumerate(datas)]


@pytest.fixture(params=[1 << 30, 0], ids=["joined", "one by one"], autouse=True)
def entry_decoding(request, monkeypatch):  # type: ignore[no-untyped-def]
    """Every test with a read's entries decoded joined in one document, and one by one (what
    entries larger than LARGE_ENTRY_BYTES on average take)."""
    monkeypatch.setattr(samples, "LARGE_ENTRY_BYTES", request.param)


def test_typed_reads_take_the_fast_path_and_match_the_general_encoding() -> None:
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=1).take(300)
    dec = SampleDecoder(SCHEMA, "binary")
    single = dec.decode(_entries([one(r, float(v)) for r, v in zip(rows, y, strict=True)]))
    assert single.fast and single.runs[:2] == [(b"1-0", 1), (b"2-0", 1)]
    np.testing.assert_array_equal(single.X, SCHEMA.encode(rows))
    np.testing.assert_array_equal(single.y, y)
    packed = dec.decode(
        _entries([pack(rows[:64], y[:64].tolist()), pack(rows[64:], y[64:].tolist())])
    )
    assert packed.fast and packed.runs == [(b"1-0", 64), (b"2-0", 236)]
    np.testing.assert_array_equal(packed.X, single.X)


def test_one_bad_entry_sends_the_read_entry_by_entry_and_refuses_only_what_is_bad() -> None:
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=2).take(10)
    datas = [one(r, float(v)) for r, v in zip(rows[:4], y[:4], strict=True)]
    bad_rows = [rows[4], {"amount": "12.5", "merchant": "m-1"}, rows[6]]  # text, a missing hour
    datas.append(pack(bad_rows, [1, 7, 0]))  # a binary label of 7: that row alone is refused
    datas += [b"{not json", orjson.dumps({"features": rows[7]})]
    dec = SampleDecoder(SCHEMA, "binary")
    d = dec.decode(_entries(datas))
    assert not d.fast
    assert d.runs == [(b"1-0", 1), (b"2-0", 1), (b"3-0", 1), (b"4-0", 1), (b"5-0", 2)]
    np.testing.assert_array_equal(d.X, SCHEMA.encode(rows[:4] + [rows[4], rows[6]]))
    assert d.y.tolist() == [*y[:4].tolist(), 1.0, 0.0]
    refused = [(r.entry, r.row, r.reason.split(":")[0]) for r in d.refused]
    assert refused == [(b"5-0", 1, "invalid label"), (b"6-0", None, "invalid"),
                       (b"7-0", None, "invalid")]  # fmt: skip
    assert "labels must be 0 or 1 (got 7)" in d.refused[0].reason
    assert orjson.loads(d.refused[0].fields[b"row"])["features"] == bad_rows[1]


def test_a_packed_entry_must_have_a_label_per_instance() -> None:
    d = SampleDecoder(SCHEMA, "binary").decode(
        _entries([orjson.dumps({"instances": [{"amount": 1}], "labels": [1, 0]})])
    )
    assert d.runs == [] and d.refused[0].reason == "invalid: 2 labels for 1 instances"


value = st.one_of(st.none(), st.floats(allow_nan=True), st.integers(-3, 3), st.text(max_size=3),
                  st.booleans())  # fmt: skip
row = st.dictionaries(st.sampled_from(["amount", "hour", "merchant", "other"]), value)
entry = st.one_of(
    st.tuples(row, value).map(lambda t: {"features": t[0], "label": t[1]}),
    st.lists(st.tuples(row, value), min_size=1, max_size=5).map(
        lambda ts: {"instances": [t[0] for t in ts], "labels": [t[1] for t in ts]}
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(entry, min_size=1, max_size=8))
def test_every_row_is_learned_or_refused_never_both_never_lost(docs: list[dict]) -> None:
    datas = [orjson.dumps(d, option=orjson.OPT_SERIALIZE_NUMPY) for d in docs]
    d = SampleDecoder(SCHEMA, "regression").decode(_entries(datas))
    total = sum(len(x.get("labels", [None])) for x in docs)
    refused = {(r.entry, r.row) for r in d.refused}
    assert len(refused) == len(d.refused)
    learned = sum(n for _, n in d.runs)
    assert learned == len(d.y) == len(d.X)
    whole = [r for r in d.refused if r.row is None]
    assert (
        learned
        + len(d.refused)
        - len(whole)
        + sum(len(docs[int(r.entry.split(b"-")[0]) - 1].get("labels", [None])) for r in whole)
        == total
    )
    assert np.isfinite(d.X).all() and np.isfinite(d.y).all()


@pytest.mark.parametrize("packed", [False, True], ids=["one-row entries", "packed entries"])
@pytest.mark.parametrize(
    ("task", "labels"),
    [
        pytest.param("binary", [True, False] * 4, id="binary labels written true/false"),
        pytest.param("binary", [True, 0, 1.0, False] * 2,
                     id="binary labels mixing booleans and numbers in one read"),
        pytest.param("regression", [True, -2.5, False, 3] * 2,
                     id="regression targets mixing booleans and numbers, a boolean as 1 or 0"),
    ],
)  # fmt: skip
def test_boolean_labels_take_the_fast_path_and_read_as_the_general_path_reads_them(
    task: str, labels: list[float], packed: bool
) -> None:
    rows, _ = SyntheticStream(FRAUD_FEATURES, "binary", seed=4).take(len(labels))
    if packed:
        datas = [pack(rows[:3], labels[:3]), pack(rows[3:], labels[3:])]
    else:
        datas = [one(r, v) for r, v in zip(rows, labels, strict=True)]
    dec = SampleDecoder(SCHEMA, task)
    fast = dec.decode(_entries(datas))
    # the same entries and one that is not JSON: the read goes entry by entry
    general = dec.decode(_entries([*datas, b"{not json"]))
    assert fast.fast and not general.fast
    assert fast.runs == general.runs
    np.testing.assert_array_equal(fast.X, general.X)
    np.testing.assert_array_equal(fast.y, general.y)
    assert fast.y.dtype == np.float64 and fast.y.tolist() == [float(v) for v in labels]


@pytest.mark.parametrize("packed", [False, True], ids=["one-row entries", "packed entries"])
@pytest.mark.parametrize(
    ("task", "bad", "reason"),
    [
        pytest.param("binary", 2, "binary labels must be 0 or 1 (got 2)",
                     id="a binary label of 2"),
        pytest.param("binary", "yes", "labels must be numbers (got the string 'yes')",
                     id="a binary label written as a word"),
        pytest.param("binary", "true", "labels must be numbers (got the string 'true')",
                     id="a boolean written as text"),
        pytest.param("binary", "1", "labels must be numbers (got the string '1')",
                     id="a number written as text, as the feedback stream refuses it"),
        pytest.param("binary", None,
                     "float() argument must be a string or a real number, not 'NoneType'",
                     id="a null binary label"),
        pytest.param("regression", None,
                     "float() argument must be a string or a real number, not 'NoneType'",
                     id="a null regression target"),
        pytest.param("regression", 1e16, "labels must be within +-1e+15",
                     id="a regression target beyond the limit"),
    ],
)  # fmt: skip
def test_a_bad_label_among_booleans_is_refused_with_its_reason_and_the_rest_learned(
    task: str, bad: object, reason: str, packed: bool
) -> None:
    rows, _ = SyntheticStream(FRAUD_FEATURES, "binary", seed=5).take(4)
    labels = [True, bad, False, 1]
    datas = sample_datas(rows, labels, packed)
    d = SampleDecoder(SCHEMA, task).decode(_entries(datas))
    assert not d.fast
    where = (b"1-0", 1) if packed else (b"2-0", None)  # that row of the entry, or that entry
    assert [(r.entry, r.row, r.reason) for r in d.refused] == [(*where, f"invalid label: {reason}")]
    np.testing.assert_array_equal(d.X, SCHEMA.encode([rows[0], rows[2], rows[3]]))
    assert d.y.tolist() == [1.0, 0.0, 1.0]
