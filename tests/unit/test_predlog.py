"""What the prediction log keeps of a request's body (predlog.bounded), and what a reader
gets back from it: the rows sent, or a row named as cut - never other features."""

from __future__ import annotations

import orjson
import pytest

from tideline import predlog

LIMIT = 64
ROW = {"amount": 1.5, "merchant": "m-1"}
LONG = {"amount": 2.5, "merchant": "m" * 100}  # 115 bytes compact: over LIMIT


def _body(rows: list, pad: int = 0, **extra: object) -> bytes:
    doc = orjson.dumps({"instances": rows, **extra})
    return doc[:14] + b" " * pad + doc[14:]  # whitespace after '{"instances":['


CASES = [
    ("a body within the limit a row is kept byte for byte, whitespace and other keys too",
     _body([ROW, ROW], pad=20, ids=["a", "b"]), 2, None, None),
    ("a body padded past the limit is written again compactly, without its other keys",
     _body([ROW, ROW], pad=1000, ids=["a", "b"]), 2, [ROW, ROW], None),
    ("a row over the limit is logged as null and named, the others as they were",
     _body([ROW, LONG, ROW], pad=200), 3, [ROW, None, ROW], [1]),
    ("rows given as a list are written compactly when they fit",
     [ROW, ROW], 2, [ROW, ROW], None),
    ("rows given as a list are cut like a body's",
     [LONG, ROW], 2, [None, ROW], [0]),
    ("rows given as arrays stay arrays",
     [[1.5, "m-1"], [2.5, "m" * 100]], 2, [[1.5, "m-1"], None], [1]),
    ("a body that is not the rows it was answered for keeps no row, each named",
     b'{"inputs":' + b" " * 500 + b"[]}", 2, [None, None], [0, 1]),
]  # fmt: skip


@pytest.mark.parametrize(("body", "n", "rows", "cut"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_bounded_keeps_a_body_within_its_rows_limit(body, n, rows, cut) -> None:
    kept, got_cut = predlog.bounded(body, n, LIMIT)
    assert got_cut == cut
    if rows is None:
        assert kept is body
    else:
        assert orjson.loads(kept) == {"instances": rows}
    assert len(kept) <= max(len(body) if isinstance(body, bytes) else 0, n * LIMIT + 20)


def test_a_cut_row_reads_as_not_logged_and_the_others_as_sent() -> None:
    kept, cut = predlog.bounded(_body([ROW, LONG], pad=500), 2, LIMIT)
    meta = predlog.Meta(cut=cut)
    e = predlog.decode(predlog.encode([meta], [b"[0.1,0.9]"], [kept])).request(0)
    assert e.row(0) == ROW and e.pick([0]) == [ROW] and e.meta.cut == [1]
    with pytest.raises(ValueError, match="row 1 was not logged"):
        e.pick([0, 1])


def test_the_row_limit_grows_with_the_features_a_model_reads() -> None:
    assert predlog.row_bytes(3) < predlog.row_bytes(300)
    assert len(orjson.dumps({f"feature_{j:04d}": 123456.789 for j in range(2000)})) < (
        predlog.row_bytes(2000)
    )
