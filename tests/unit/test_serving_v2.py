"""Open Inference Protocol parsing and encoding, checked against tritonclient's own encoder."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from tritonclient.http import InferInput, InferRequestedOutput
from tritonclient.http._utils import _get_inference_request

from serving.errors import InvalidFeature, InvalidField, PayloadTooLarge
from serving.v2 import infer_response, parse_infer

FEATURES = ("a", "b", "c")


def triton_body(inputs, outputs=None):
    body, json_size = _get_inference_request(
        inputs, "req-1", outputs, 0, False, False, 0, None, None
    )
    return body, (str(json_size) if json_size is not None else None)


def test_parse_infer_reads_tritonclient_binary_tensor():
    X = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = InferInput("input-0", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)  # binary by default, as tritonclient sends it
    body, header = triton_body([tensor])
    assert header is not None
    request = parse_infer(body, header, FEATURES, 100)
    assert request.X.dtype == np.float64
    assert request.X.tolist() == X.tolist()
    assert request.binary_output and request.id == "req-1"


def test_parse_infer_reads_json_tensors_per_feature():
    inputs = []
    for i, name in enumerate(("c", "a", "b")):
        tensor = InferInput(name, [2], "FP64")
        tensor.set_data_from_numpy(np.array([i, 10 + i], dtype=np.float64), binary_data=False)
        inputs.append(tensor)
    body, header = triton_body(inputs, [InferRequestedOutput("predict", binary_data=False)])
    request = parse_infer(body, header, FEATURES, 100)
    assert request.X.tolist() == [[1.0, 2.0, 0.0], [11.0, 12.0, 10.0]]
    assert not request.binary_output


def test_parse_infer_accepts_nested_json_data_and_ints():
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 3], "datatype": "INT64", "data": [[1, 2, 3], [4, 5, 6]]}
            ]
        }
    )
    assert parse_infer(body, None, FEATURES, 10).X.tolist() == [[1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize(
    ("tensor", "error", "field"),
    [
        (
            {"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]},
            InvalidFeature,
            "inputs[0].shape",
        ),
        (
            {"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2]},
            InvalidField,
            "inputs[0].shape",
        ),
        (
            {"name": "x", "shape": [1, 3], "datatype": "BYTES", "data": ["a", "b", "c"]},
            InvalidField,
            "inputs[0].datatype",
        ),
        (
            {"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, "2", 3]},
            InvalidFeature,
            "inputs[0].data",
        ),
        (
            {"name": "zzz", "shape": [1], "datatype": "FP64", "data": [1]},
            InvalidFeature,
            "inputs[0].name",
        ),
        # a shape whose numpy product overflows to 0 matched empty data: a 500 on reshape
        (
            {"name": "x", "shape": [2**32, 2**32], "datatype": "FP64", "data": []},
            InvalidField,
            "inputs[0].shape",
        ),
        # the declared datatype holds: no fractions or out-of-range values in an INT tensor
        (
            {"name": "x", "shape": [1, 3], "datatype": "INT8", "data": [1, 2, 300]},
            InvalidFeature,
            "inputs[0].data",
        ),
        (
            {"name": "x", "shape": [1, 3], "datatype": "INT64", "data": [1, 2.5, 3]},
            InvalidFeature,
            "inputs[0].data",
        ),
    ],
)
def test_parse_infer_rejects_bad_tensors_naming_the_field(tensor, error, field):
    with pytest.raises(error) as err:
        parse_infer(orjson.dumps({"inputs": [tensor]}), None, FEATURES, 10)
    assert err.value.field == field


def test_parse_infer_rejects_nan_feature():
    X = np.array([[1.0, np.nan, 3.0]])
    tensor = InferInput("input-0", [1, 3], "FP64")
    tensor.set_data_from_numpy(X)
    body, header = triton_body([tensor])
    with pytest.raises(InvalidFeature) as err:
        parse_infer(body, header, FEATURES, 10)
    assert err.value.field == "inputs.b"


def test_nan_in_json_data_names_the_feature_rather_than_the_json():
    body = b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, NaN, 3]}]}'
    with pytest.raises(InvalidFeature) as err:
        parse_infer(body, None, FEATURES, 10)
    assert err.value.field == "inputs.b"


def test_parse_infer_enforces_the_batch_limit():
    body = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [3, 3], "datatype": "FP64", "data": [0.0] * 9}]}
    )
    with pytest.raises(PayloadTooLarge):
        parse_infer(body, None, FEATURES, 2)


def test_parse_infer_rejects_unknown_output():
    body = orjson.dumps(
        {
            "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}],
            "outputs": [{"name": "proba"}],
        }
    )
    with pytest.raises(InvalidField) as err:
        parse_infer(body, None, FEATURES, 10)
    assert err.value.field == "outputs[0].name"


def test_binary_response_is_what_tritonclient_decodes():
    from tritonclient.http import InferResult

    y = np.array([1.5, -2.25, 3.0])
    body, headers = infer_response("m", "3", "req", y, [("predict", True)])

    class Response:
        status_code = 200

        def get(self, key):
            return headers.get(key)

        offset = 0

        def read(self, length=-1):
            start = self.offset
            self.offset = len(body) if length == -1 else start + length
            return body[start : self.offset]

    result = InferResult(Response(), verbose=False)
    assert result.as_numpy("predict").tolist() == y.tolist()
    assert result.get_response()["model_version"] == "3"


def _decode(body: bytes, headers: dict[str, str]):
    """What tritonclient reads from a response (binary tensors included)."""
    from tritonclient.http import InferResult

    class Response:
        status_code = 200
        offset = 0

        def get(self, key):
            return headers.get(key)

        def read(self, length=-1):
            start = self.offset
            self.offset = len(body) if length == -1 else start + length
            return body[start : self.offset]

    return InferResult(Response(), verbose=False)


PROBA = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])


def test_classifier_answers_labels_and_named_probabilities_in_json():
    classes = np.array(["class_0", "class_1", "class_2"])
    body, headers = infer_response(
        "m", "3", "req", PROBA, [("predict", False), ("predict_proba", False)], classes
    )
    assert headers == {}
    labels, proba = orjson.loads(body)["outputs"]
    assert labels == {
        "name": "predict",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["class_0", "class_2"],
    }
    assert proba["datatype"] == "FP64" and proba["shape"] == [2, 3]
    assert proba["data"] == PROBA.reshape(-1).tolist()
    assert proba["parameters"] == {"classes": ["class_0", "class_1", "class_2"]}


def test_classifier_binary_outputs_are_what_tritonclient_decodes():
    classes = np.array([3, 5, 7])
    body, headers = infer_response(
        "m", "3", "req", PROBA, [("predict", True), ("predict_proba", True)], classes
    )
    result = _decode(body, headers)
    assert result.as_numpy("predict").tolist() == [3, 7]
    assert result.as_numpy("predict_proba").tolist() == PROBA.tolist()
    strings = np.array(["a", "bb", "c"])
    body, headers = infer_response("m", "3", "req", PROBA, [("predict", True)], strings)
    assert _decode(body, headers).as_numpy("predict").tolist() == [b"a", b"c"]


def test_parse_infer_lets_a_classifier_request_one_output():
    body = orjson.dumps(
        {
            "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}],
            "outputs": [{"name": "predict_proba", "parameters": {"binary_data": True}}],
        }
    )
    request = parse_infer(body, None, FEATURES, 10, ("predict", "predict_proba"))
    assert request.outputs == [("predict_proba", True)]
    plain = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}
    )
    assert parse_infer(plain, None, FEATURES, 10, ("predict", "predict_proba")).outputs == [
        ("predict", False),
        ("predict_proba", False),
    ]


def test_json_response_carries_the_data():
    body, headers = infer_response("m", "3", "req", np.array([1.0, 2.0]), [("predict", False)])
    assert headers == {}
    out = orjson.loads(body)["outputs"][0]
    assert out == {"name": "predict", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]}
