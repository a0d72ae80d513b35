"""The Open Inference Protocol (KServe V2, Triton's HTTP API): parsing and encoding.

Inputs are accepted in the two shapes V2 clients send for tabular models:

* one tensor ``[N, F]`` whose columns are the model's features in model order (the input's
  name is free, e.g. ``input-0``), or
* one tensor per feature, named by the feature, each ``[N]`` or ``[N, 1]``.

Tensor data may be JSON (flat or nested, row-major) or Triton's binary extension
(``Inference-Header-Content-Length`` header, ``binary_data_size`` parameter), which is what
``tritonclient`` sends by default. The output tensor ``predict`` (FP64, ``[N]``) is returned as
JSON, or as binary when the request asks for it (``binary_data`` on the output, or
``binary_data_output`` on the request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from serving.errors import InvalidFeature, InvalidField, InvalidRequest, PayloadTooLarge

OUTPUT_NAME = "predict"
PROTOCOL_VERSION = "2"
DTYPES: dict[str, Any] = {
    "FP64": np.float64,
    "FP32": np.float32,
    "FP16": np.float16,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "BOOL": np.bool_,
}


@dataclass
class InferRequest:
    X: np.ndarray
    id: str | None
    binary_output: bool


def _tensor(spec: Any, index: int, binary: memoryview, offset: int) -> tuple[np.ndarray, int]:
    field = f"inputs[{index}]"
    if type(spec) is not dict:
        raise InvalidField(f"{field} must be a tensor object", field=field)
    datatype = spec.get("datatype")
    dtype = DTYPES.get(datatype) if type(datatype) is str else None
    if dtype is None:
        raise InvalidField(
            f"{field}.datatype {datatype!r} is not a numeric V2 datatype ({', '.join(DTYPES)})",
            field=f"{field}.datatype",
        )
    shape = spec.get("shape")
    if type(shape) is not list or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidField(
            f"{field}.shape must be a list of non-negative integers", field=f"{field}.shape"
        )
    size = int(np.prod(shape))
    params = spec.get("parameters") or {}
    nbytes = params.get("binary_data_size") if type(params) is dict else None
    if nbytes is not None:
        if (
            type(nbytes) is not int
            or nbytes != size * np.dtype(dtype).itemsize
            or offset + nbytes > len(binary)
        ):
            raise InvalidField(
                f"{field}.parameters.binary_data_size {nbytes!r} does not match "
                f"shape {shape} of {datatype} and the binary payload",
                field=f"{field}.parameters.binary_data_size",
            )
        array = np.frombuffer(
            binary[offset : offset + nbytes], dtype=np.dtype(dtype).newbyteorder("<")
        )
        offset += nbytes
    else:
        data = spec.get("data")
        if type(data) is not list:
            raise InvalidField(
                f"{field}.data must be a list (or use the binary extension)", field=f"{field}.data"
            )
        try:
            array = np.asarray(data)
        except (ValueError, TypeError, OverflowError):
            array = np.asarray([], dtype=object)
        if array.dtype.kind not in ("biuf" if dtype == np.bool_ else "iuf") or (
            array.dtype.kind == "b" and dtype != np.bool_
        ):
            raise InvalidFeature(
                f"{field}.data must hold {datatype} numbers only (nested lists "
                "of equal length, no strings or nulls)",
                field=f"{field}.data",
            )
        array = array.reshape(-1)
    if array.size != size:
        raise InvalidField(
            f"{field} has {array.size} values; shape {shape} needs {size}", field=f"{field}.shape"
        )
    return array.reshape(shape).astype(np.float64, copy=False), offset


def parse_infer(
    body: bytes, header_length: str | None, features: tuple[str, ...], max_records: int
) -> InferRequest:
    """A V2 infer request as a float64 matrix in ``features`` order."""
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise InvalidRequest("Inference-Header-Content-Length must be an integer") from None
        if not 0 < split <= len(body):
            raise InvalidRequest("Inference-Header-Content-Length exceeds the body")
        head, binary = body[:split], memoryview(body)[split:]
    else:
        head, binary = body, memoryview(b"")
    try:
        payload = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the inference request is not valid JSON: {exc}") from None
    if type(payload) is not dict:
        raise InvalidRequest("the inference request must be a JSON object")
    inputs = payload.get("inputs")
    if type(inputs) is not list or not inputs:
        raise InvalidField('"inputs" must be a non-empty list of tensors', field="inputs")
    tensors, offset = [], 0
    for i, spec in enumerate(inputs):
        array, offset = _tensor(spec, i, binary, offset)
        tensors.append((spec.get("name"), array))
    n_features = len(features)
    if len(tensors) == 1 and tensors[0][1].ndim == 2:
        X = tensors[0][1]
        if X.shape[1] != n_features:
            raise InvalidFeature(
                f"inputs[0] has {X.shape[1]} columns; the model takes "
                f"{n_features}: {', '.join(features)}",
                field="inputs[0].shape",
            )
    else:
        by_name = {}
        for i, (name, array) in enumerate(tensors):
            if name not in features:
                raise InvalidFeature(
                    f"inputs[{i}] is named {name!r}, not a model feature; send "
                    f"one [N, {n_features}] tensor or one tensor per feature: "
                    f"{', '.join(features)}",
                    field=f"inputs[{i}].name",
                )
            if array.ndim > 2 or (array.ndim == 2 and array.shape[1] != 1):
                raise InvalidField(
                    f"inputs[{i}] ({name}) must be shaped [N] or [N, 1]", field=f"inputs[{i}].shape"
                )
            by_name[name] = array.reshape(-1)
        missing = [n for n in features if n not in by_name]
        if missing:
            raise InvalidFeature(
                f"no input tensor for feature {missing[0]!r}", field=f"inputs.{missing[0]}"
            )
        lengths = {len(a) for a in by_name.values()}
        if len(lengths) != 1:
            raise InvalidField("every feature tensor must have the same length", field="inputs")
        X = np.column_stack([by_name[n] for n in features]).astype(np.float64, copy=False)
    if len(X) == 0:
        raise InvalidField("the input has no rows", field="inputs")
    if len(X) > max_records:
        raise PayloadTooLarge(
            f"{len(X)} rows in one request; the limit is {max_records}", field="inputs"
        )
    if not np.isfinite(X).all():
        row, col = np.argwhere(~np.isfinite(X))[0].tolist()
        raise InvalidFeature(
            f"feature {features[col]!r} of row {row} is {X[row, col]}; NaN and "
            "infinity are refused",
            field=f"inputs.{features[col]}",
        )
    binary_output = _wants_binary(payload)
    request_id = payload.get("id")
    return InferRequest(
        X=np.ascontiguousarray(X),
        binary_output=binary_output,
        id=str(request_id) if request_id is not None else None,
    )


def _wants_binary(payload: dict[str, Any]) -> bool:
    outputs = payload.get("outputs")
    if outputs is not None:
        if type(outputs) is not list:
            raise InvalidField('"outputs" must be a list', field="outputs")
        wanted = False
        for i, out in enumerate(outputs):
            name = out.get("name") if type(out) is dict else None
            if name != OUTPUT_NAME:
                raise InvalidField(
                    f"outputs[{i}]: the only output is {OUTPUT_NAME!r}", field=f"outputs[{i}].name"
                )
            params = out.get("parameters") or {}
            wanted = wanted or bool(type(params) is dict and params.get("binary_data"))
        if outputs:
            return wanted
    params = payload.get("parameters") or {}
    return bool(type(params) is dict and params.get("binary_data_output"))


def infer_response(
    model_name: str, model_version: str, request_id: str, y: np.ndarray, binary: bool
) -> tuple[bytes, dict[str, str]]:
    """The V2 response body and its extra headers."""
    output: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": "FP64", "shape": [len(y)]}
    if binary:
        raw = np.ascontiguousarray(y, dtype="<f8").tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
    else:
        output["data"] = y
    head = orjson.dumps(
        {
            "model_name": model_name,
            "model_version": model_version,
            "id": request_id,
            "outputs": [output],
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    if binary:
        return head + raw, {"Inference-Header-Content-Length": str(len(head))}
    return head, {}


def model_metadata(
    model_name: str, versions: list[str], features: tuple[str, ...]
) -> dict[str, Any]:
    return {
        "name": model_name,
        "versions": versions,
        "platform": "sklearn",
        "inputs": [
            {
                "name": "input-0",
                "datatype": "FP64",
                "shape": [-1, len(features)],
                "parameters": {"features": list(features)},
            }
        ],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP64", "shape": [-1]}],
    }
