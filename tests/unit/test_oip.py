"""The Open Inference Protocol's request reading and answer writing, without a server."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from tideline.features import FeatureSchema
from tideline.pods.server import oip
from tideline.pods.server.dataplane import Result
from tideline.pods.server.errors import BadRequest

SCHEMA = FeatureSchema.from_spec([{"name": "amount"}, {"name": "merchant", "type": "categorical"}])


def _binary(inputs: list[dict], blobs: list[bytes], **doc: object) -> tuple[bytes, str]:
    head = orjson.dumps({"inputs": inputs, **doc})
    return head + b"".join(blobs), str(len(head))


def _bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(len(v).to_bytes(4, "little") + v for v in values)


def test_binary_inputs_read_as_their_json_twins() -> None:
    amounts = np.array([12.5, 0.5], dtype="<f4").tobytes()
    merchants = _bytes_tensor([b"m-1", "m-\u00e9".encode()])
    body, length = _binary(
        [{"name": "amount", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}},
         {"name": "merchant", "datatype": "BYTES", "shape": [2],
          "parameters": {"binary_data_size": len(merchants)}}],
        [amounts, merchants])  # fmt: skip
    req = oip.parse_request(body, length)
    assert oip.rows(req, SCHEMA) == [[12.5, "m-1"], [0.5, "m-\u00e9"]]
    json_req = oip.parse_request(orjson.dumps({"inputs": [
        {"name": "amount", "datatype": "FP64", "shape": [2], "data": [12.5, 0.5]},
        {"name": "merchant", "datatype": "BYTES", "shape": [2], "data": ["m-1", "m-\u00e9"]}]}), None)  # fmt: skip
    assert oip.rows(json_req, SCHEMA) == oip.rows(req, SCHEMA)


@pytest.mark.parametrize(
    ("inputs", "blobs", "message"),
    [
        ([{"name": "amount", "datatype": "FP64", "shape": [2], "parameters": {"binary_data_size": 8}}],
         [b"\0" * 8], "8 bytes of binary data, shape [2] of FP64 needs 16"),
        ([{"name": "merchant", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 9}}],
         [(50).to_bytes(4, "little") + b"short"], "BYTES element 0 runs past the tensor's data"),
        ([{"name": "amount", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": 8}}],
         [b"\0" * 12], "4 bytes of binary data after the last input's"),
        ([{"name": "amount", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": 80}}],
         [b"\0" * 8], "80 bytes, but 8 are left in the body"),
    ],
    ids=["a size that does not fit the shape", "a BYTES length past the end",
         "bytes left over", "a size past the body"],
)  # fmt: skip
def test_binary_data_that_does_not_add_up_is_a_400_naming_it(inputs, blobs, message) -> None:
    body, length = _binary(inputs, blobs)
    with pytest.raises(BadRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
        oip.parse_request(body, length)


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"name": "amount", "datatype": "FP8", "shape": [1], "data": [1]}, "'FP8' is not an OIP datatype"),
        ({"name": "amount", "shape": [1], "data": [1]}, "None is not an OIP datatype"),
        ({"name": "amount", "datatype": "INT64", "shape": [2], "data": [1, 2.5]},
         r"inputs\[0\] \(amount\).data\[1\]: 2.5 is not an integer \(INT64\)"),
        ({"name": "amount", "datatype": "INT8", "shape": [1], "data": [300]}, "300 is out of range for INT8"),
        ({"name": "amount", "datatype": "BOOL", "shape": [1], "data": [1]}, "must be true or false"),
        ({"name": "amount", "datatype": "FP64", "shape": [1], "data": ["1"]}, "must be a number"),
    ],
    ids=["an unknown datatype", "no datatype", "a fraction in an INT tensor", "out of INT8's range",
         "a number in a BOOL tensor", "text in an FP64 tensor"],
)  # fmt: skip
def test_every_datatype_is_checked(tensor: dict, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        oip.parse_request(orjson.dumps({"inputs": [tensor]}), None)


def test_inputs_outputs_and_ids() -> None:
    one = {"name": "amount", "datatype": "FP64", "shape": [1], "data": [1.0]}
    with pytest.raises(BadRequest, match="'amount' is given twice"):
        oip.parse_request(orjson.dumps({"inputs": [one, one]}), None)
    with pytest.raises(BadRequest, match="'score' is not an output"):
        oip.parse_request(orjson.dumps({"inputs": [one], "outputs": [{"name": "score"}]}), None)
    ids = {"name": "ids", "datatype": "INT64", "shape": [1], "data": [42]}
    assert oip.parse_request(orjson.dumps({"inputs": [one, ids]}), None).ids == ["42"]


def test_a_matrix_carries_categories_as_integers_and_numbers_as_text() -> None:
    m = oip.Tensor(0, "input", "FP64", [2, 2], np.array([1.0, 4.0, 2.0, 17.0]))
    assert oip.rows(oip.Request(None, [m], None, False, None), SCHEMA) == [[1.0, 4], [2.0, 17]]
    for bad in (3.5, 1e30, float("inf")):
        m = oip.Tensor(0, "input", "FP64", [1, 2], np.array([1.0, bad]))
        with pytest.raises(BadRequest, match=r"data\[1\] \(merchant\): a categorical value"):
            oip.rows(oip.Request(None, [m], None, False, None), SCHEMA)
    text = oip.Tensor(0, "input", "BYTES", [1, 2], [b"12.5", b"m-1"])
    assert oip.rows(oip.Request(None, [text], None, False, None), SCHEMA) == [[12.5, "m-1"]]


def test_a_binary_answer_is_read_back_as_tritonclient_reads_it() -> None:
    req = oip.parse_request(orjson.dumps({"inputs": [{"name": "amount", "datatype": "FP64", "shape": [2],
                                              "data": [1.0, 2.0]}],
                                  "parameters": {"binary_data_output": True}}), None)  # fmt: skip
    result = Result([0.25, 0.75], ["a-0", "a-1"], 3, "r", ["stable", "canary"])
    body, length = oip.answer(req, result, "fraud")
    assert length is not None
    head = orjson.loads(body[:length])
    assert all(isinstance(v, str | int | float | bool) for v in head["parameters"].values())
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    blob = body[length:]
    assert sum(sizes) == len(blob)
    assert np.frombuffer(blob[: sizes[0]], dtype="<f8").tolist() == [0.25, 0.75]
