"""A multiclass model's answers without a server: the scores a result holds and logs, V1's
and V2's answers (class names, probabilities as asked), the outputs a request may ask for,
labels as the streams carry them, the fixed fallback, and the scores a team's model must
give to serve."""

from __future__ import annotations

import re

import numpy as np
import orjson
import pytest

from tests.helpers import FRAUD_FEATURES, manifest
from tideline.algorithms.external import BadScores
from tideline.features import FeatureSchema
from tideline.pods.server import oip
from tideline.pods.server.api import _label
from tideline.pods.server.dataplane import DataPlane, Result
from tideline.pods.server.errors import BadRequest, Unprocessable
from tideline.pods.server.protocols import V1, V2, Decoded
from tideline.pods.server.usercode import servable
from tideline.spec import parse
from tideline.tasks import Task

CLASSES = ("cat", "dog", "eel")
TASK = Task("multiclass", CLASSES)
P = np.array([[0.7, 0.2, 0.1], [1 / 3, 0.0, 2 / 3]], dtype=np.float32)
SCHEMA = FeatureSchema.from_spec([{"name": "amount"}, {"name": "merchant", "type": "categorical"}])
INPUT = {"name": "amount", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]}


def _result() -> Result:
    return Result(P.copy(), ["a-0", "a-1"], 3, "r", ["stable", "canary"], classes=CLASSES)


def test_a_result_logs_float32_probabilities_and_answers_the_most_probable_class() -> None:
    result = _result()
    assert result.predictions_json() == b"[[0.7,0.2,0.1],[0.33333334,0.0,0.6666667]]"
    assert result.classes_answered() == ["cat", "eel"]
    binary = Result([0.25, 0.75], ["a-0", "a-1"], 3, "r", ["stable", "stable"])
    assert binary.predictions_json() == b"[0.25,0.75]", "binary: as it always was"


@pytest.mark.parametrize(
    ("probabilities", "expect"),
    [
        (False, {"predictions": ["cat", "eel"]}),
        (True, {"predictions": ["cat", "eel"],
                "probabilities": [[0.7, 0.2, 0.1], [0.33333334, 0.0, 0.6666667]]}),
    ],
    ids=["classes only", "classes and probabilities, asked for"],
)  # fmt: skip
def test_a_v1_answer_names_the_classes(probabilities: bool, expect: dict) -> None:
    req = Decoded(None, None, probabilities=probabilities)
    status, body, _ = V1(10, TASK).answer(req, _result(), "zoo")
    doc = orjson.loads(body)
    assert status == 200 and {k: doc[k] for k in expect} == expect
    assert list(doc) == [*expect, "ids", "model_version", "revision", "tracks", "fallback"]


def test_the_typed_v1_reader_takes_the_probabilities_flag() -> None:
    v1 = V1(10, TASK)
    rows = [{"amount": 1.0, "merchant": "m"}]
    for doc, flag in (
        ({"instances": rows}, False),
        ({"instances": rows, "probabilities": True}, True),
    ):
        fast = v1.typed(orjson.dumps(doc), SCHEMA)
        assert fast is not None and fast[3] is flag
    assert v1.typed(orjson.dumps({"instances": rows, "probabilities": 1}), SCHEMA) is None
    with pytest.raises(BadRequest, match="probabilities: must be true or false"):
        v1.decode(orjson.dumps({"instances": rows, "probabilities": 1}), {}, SCHEMA, True)
    # a binary model's answers are probabilities already: the key is not read
    assert V1(10).decode(orjson.dumps({"instances": rows, "probabilities": 1}), {}, SCHEMA, True)


def _answer(doc: dict) -> tuple[dict, dict[str, bytes]]:
    """An infer answer's JSON header, and each output's binary data by name."""
    req = oip.parse_request(orjson.dumps({"inputs": [INPUT], **doc}), None, oip.CLASS_OUTPUTS)
    body, length = oip.answer(req, _result(), "zoo")
    head = orjson.loads(body if length is None else body[:length])
    blobs, at = {}, length or 0
    for o in head["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            blobs[o["name"]], at = body[at : at + size], at + size
    assert at == len(body) or length is None
    return head, blobs


def test_a_v2_answer_has_the_classes_as_bytes_and_the_probabilities_flat() -> None:
    head, blobs = _answer({})
    out = {o["name"]: o for o in head["outputs"]}
    assert list(out) == ["predict", "probabilities", "ids", "tracks"] and not blobs
    assert out["predict"] == {"name": "predict", "datatype": "BYTES", "shape": [2],
                              "data": ["cat", "eel"]}  # fmt: skip
    assert out["probabilities"] == {"name": "probabilities", "datatype": "FP64", "shape": [2, 3],
                                    "data": [0.7, 0.2, 0.1, 0.33333334, 0.0, 0.6666667]}  # fmt: skip


@pytest.mark.parametrize(
    ("params", "dtype"), [({}, "<f8"), ({"datatype": "FP32"}, "<f4"), ({"datatype": "FP64"}, "<f8")],
    ids=["FP64 by default", "FP32 when asked", "FP64 when asked"],
)  # fmt: skip
def test_binary_probabilities_are_the_datatype_asked_for(params: dict, dtype: str) -> None:
    outputs = [{"name": "probabilities", "parameters": {"binary_data": True, **params}},
               {"name": "predict", "parameters": {"binary_data": True}}]  # fmt: skip
    head, blobs = _answer({"outputs": outputs})
    assert [o["name"] for o in head["outputs"]] == ["probabilities", "predict"]
    assert head["outputs"][0]["datatype"] == ("FP32" if dtype == "<f4" else "FP64")
    np.testing.assert_array_equal(np.frombuffer(blobs["probabilities"], dtype).reshape(2, 3), P)
    assert blobs["predict"] == b"\x03\0\0\0cat\x03\0\0\0eel"


@pytest.mark.parametrize(
    ("known", "output", "message"),
    [
        (oip.OUTPUTS, {"name": "probabilities"},
         "'probabilities' is not an output of this model ('predict', 'ids', 'tracks')"),
        (oip.CLASS_OUTPUTS, {"name": "score"}, "'score' is not an output of this model"),
        (oip.CLASS_OUTPUTS, {"name": "probabilities", "parameters": {"datatype": "FP16"}},
         "outputs[0].parameters.datatype: 'FP16' is not a datatype of probabilities"),
    ],
    ids=["probabilities of a binary model", "an unknown output", "probabilities as FP16"],
)  # fmt: skip
def test_an_output_no_answer_can_hold_is_refused_by_name(known, output, message) -> None:
    with pytest.raises(BadRequest, match=re.escape(message)):
        oip.parse_request(orjson.dumps({"inputs": [INPUT], "outputs": [output]}), None, known)


def test_the_v2_reader_knows_its_task_s_outputs() -> None:
    assert V2(TASK).outputs == oip.CLASS_OUTPUTS and V2().outputs == oip.OUTPUTS
    # a datatype on an output other than probabilities is not read (as before)
    req = oip.parse_request(orjson.dumps({"inputs": [INPUT], "outputs": [
        {"name": "predict", "parameters": {"datatype": "FP32"}}]}), None)  # fmt: skip
    assert req.outputs == {"predict": False} and req.datatypes == {}


@pytest.mark.parametrize(
    ("task", "value", "expect"),
    [
        (TASK, "dog", "dog"),
        (TASK, 2, "eel"),
        (TASK, 0.0, "cat"),
        (TASK, "fox", "x.label: 'fox' is not a class of this model (classes: cat, dog, eel)"),
        (TASK, 3, "x.label: multiclass labels must be class indices 0 to 2 (got 3)"),
        (TASK, None, "x.label: a label must be a class name or a class index (got NoneType)"),
        (Task("binary"), True, 1.0),
        (Task("binary"), 2, "x.label: a binary label must be 0 or 1 (got 2)"),
        (Task("binary"), "1", "x.label: must be a finite number (got '1')"),
        (Task("regression"), -2.5, -2.5),
    ],
    ids=["a class name", "an index, written as its name", "an index as a float", "an unknown class",
         "an index past the classes", "null", "binary: true", "binary: 2",
         "binary: a string", "regression: a number"],
)  # fmt: skip
def test_a_label_as_the_streams_carry_it(task: Task, value, expect) -> None:
    if isinstance(expect, str) and expect.startswith("x.label"):
        with pytest.raises(Unprocessable) as e:
            _label(task, value, "x.label")
        assert e.value.message == expect
    else:
        got = _label(task, value, "x.label")
        assert got == expect and type(got) is type(expect)


@pytest.mark.parametrize(
    ("fallback", "expect"),
    [({"class": "eel"}, [[0.0, 0.0, 1.0]] * 2), ({"class": "cat"}, [[1.0, 0.0, 0.0]] * 2)],
    ids=["eel", "cat"],
)  # fmt: skip
def test_the_fixed_fallback_answers_its_class_one_hot(fallback: dict, expect: list) -> None:
    model = {"task": "multiclass", "algorithm": "sgd", "features": FRAUD_FEATURES,
             "classes": list(CLASSES)}  # fmt: skip
    dp = DataPlane(parse(manifest(name="zoo", model=model, serving={"fallback": fallback})),
                   "redis://127.0.0.1:1")  # fmt: skip
    fixed = dp._scores(dp._fixed(2))
    assert isinstance(fixed, np.ndarray) and fixed.dtype == np.float32
    assert fixed.tolist() == expect
    binary = DataPlane(parse(manifest(name="b", serving={"fallback": {"value": 0.25}})),
                       "redis://127.0.0.1:1")  # fmt: skip
    assert binary._scores(binary._fixed(3)) == [0.25, 0.25, 0.25]


@pytest.mark.parametrize(
    ("task", "scores", "message"),
    [
        (TASK, [[0.2, 0.8]], r"shape \(1, 2\) for 1 rows \(a multiclass model of 3 classes gives \(1, 3\)\)"),
        (TASK, [0.2], r"shape \(1,\) for 1 rows"),
        (TASK, [[0.2, 0.8, float("nan")]], "a score that is not finite"),
        (TASK, [[0.2, 1.2, -0.4]], r"a probability outside \[0, 1\]"),
        (TASK, [["a", "b", "c"]], "scores that are not numbers"),
        (Task("binary"), [[0.5]], r"shape \(1, 1\) for 1 rows \(a binary model gives \(1,\)\)"),
        (Task("regression"), [7.5], None),
        (TASK, [[0.2, 0.3, 0.5]], None),
    ],
    ids=["two classes of three", "one score a row", "not finite", "outside [0, 1]", "text",
         "binary: a column", "regression: any finite number", "three probabilities"],
)  # fmt: skip
def test_scores_a_team_s_model_may_serve(task: Task, scores, message) -> None:
    if message is None:
        assert servable(task, scores, 1).shape == task.rows(1)
    else:
        with pytest.raises(BadScores, match=message):
            servable(task, scores, 1)
