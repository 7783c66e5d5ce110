"""A catch-up takes a record's rows alike, packed or JSON: the rows of a record split at the
history's ends (:class:`tideline.pods.catchup.CatchUp`, ``since`` and ``until``) too."""

from __future__ import annotations

import time

import msgspec
import numpy as np
import pytest

from tests.helpers import FRAUD_FEATURES, manifest
from tideline.contracts import Keys
from tideline.demo.simulate import SyntheticStream
from tideline.pods.catchup import CatchUp
from tideline.pods.history import Record
from tideline.pods.join import LogJoin
from tideline.spec import parse
from tideline.training import Training


@pytest.mark.parametrize(
    ("since", "until", "taken"),
    [
        (-200.0, 0.0, range(8)),
        (-97.5, -93.5, range(2, 6)),
        (-92.5, 0.0, range(7, 8)),
    ],
    ids=[
        "a record within the history is taken whole",
        "a record across both ends gives the rows between them",
        "a record at the start gives its rows learned after it",
    ],
)
@pytest.mark.parametrize("form", ["packed", "JSON"])
def test_a_record_s_rows_are_taken_between_the_history_s_ends_in_either_form(
    since: float, until: float, taken: range, form: str
) -> None:
    model = parse(manifest(learning={"history": "3h"}))
    training = Training(model.spec.model, model.spec.learning)
    keys = Keys("test", "m")
    now = time.time()
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=1).take(8)
    rec = Record(ts=now - 100, rows=rows, labels=y.tolist(),
                 received=[now - 99 + i for i in range(8)], marks=[f"m {i}" for i in range(8)],
                 scores=[0.1 * i for i in range(8)], tracks=["stable", "canary"] * 4)  # fmt: skip
    fields = rec.fields() if form == "packed" else {b"data": rec.encode()}
    assert list(fields) == [b"record" if form == "packed" else b"data"]
    catch_up = CatchUp(None, keys, training, LogJoin(None, keys, 1800.0, "g"), since=now + since,
                       until=now + until, window=60.0, report=lambda _: None)  # fmt: skip
    got, how, marks = catch_up.decoder.decode(fields)
    assert how == ("columns" if form == "packed" else "typed")
    catch_up._take(got, how, marks)
    catch_up._encode_waiting()
    X = np.vstack(catch_up._blocks)
    assert X.tolist() == training.schema.encode([rows[i] for i in taken]).tolist()
    assert catch_up._labels == [y[i] for i in taken]
    assert catch_up._received == [rec.received[i] for i in taken]
    assert catch_up._served == [rec.scores[i] for i in taken]
    assert catch_up._stable == [i % 2 == 0 for i in taken]
    assert [m for ms in catch_up.marks.values() for packed in ms
            for m in msgspec.msgpack.decode(packed)] == [f"m {i}" for i in taken]  # fmt: skip
