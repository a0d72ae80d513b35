"""The Open Inference Protocol (KServe V2, Triton's HTTP API): parsing and encoding.

Inputs are accepted in the two shapes V2 clients send for tabular models:

* one tensor ``[N, F]`` whose columns are the model's features in model order (the input's
  name is free, e.g. ``input-0``), or
* one tensor per feature, named by the feature, each ``[N]`` or ``[N, 1]``.

Tensor data may be JSON (flat or nested, row-major) or Triton's binary extension
(``Inference-Header-Content-Length`` header, ``binary_data_size`` parameter), which is what
``tritonclient`` sends by default. A regressor's output tensor is ``predict`` (FP64, ``[N]``).
A classifier answers with two, named as MLServer's scikit-learn runtime names them:
``predict``, the labels (``[N]``: BYTES for string classes, INT64 for integer ones), and
``predict_proba``, the class probabilities (FP64, ``[N, C]``; ``parameters.classes`` names the
columns, as the protocol leaves tensor metadata to ``parameters``). Both by default; the
request's ``outputs`` picks either. Each output is JSON, or binary when the request asks
(``binary_data`` on the output, or ``binary_data_output`` on the request); a BYTES tensor in
binary is Triton's encoding (each element a 4-byte little-endian length, then its bytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from serving.errors import InvalidFeature, InvalidField, InvalidRequest, PayloadTooLarge
from serving.inputs import loads

OUTPUT_NAME = "predict"
PROBA_NAME = "predict_proba"
REGRESSION_OUTPUTS = (OUTPUT_NAME,)
CLASSIFICATION_OUTPUTS = (OUTPUT_NAME, PROBA_NAME)
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
    outputs: list[tuple[str, bool]]  # the outputs to return, in order, and whether in binary

    @property
    def binary_output(self) -> bool:
        return any(binary for _, binary in self.outputs)


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
    size = math.prod(shape)  # Python's integers: numpy's product of [2**32, 2**32] is 0
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
        if np.dtype(dtype).kind in "iu" and array.size:
            info = np.iinfo(dtype)
            if array.dtype.kind not in "iu" or array.min() < info.min or array.max() > info.max:
                raise InvalidFeature(
                    f"{field}.data must hold {datatype} integers, from {info.min} to {info.max}",
                    field=f"{field}.data",
                )
    if array.size != size:
        raise InvalidField(
            f"{field} has {array.size} values; shape {shape} needs {size}", field=f"{field}.shape"
        )
    return array.reshape(shape).astype(np.float64, copy=False), offset


def parse_infer(
    body: bytes,
    header_length: str | None,
    features: tuple[str, ...],
    max_records: int,
    output_names: tuple[str, ...] = REGRESSION_OUTPUTS,
) -> InferRequest:
    """A V2 infer request as a float64 matrix in ``features`` order; ``output_names`` are the
    outputs the model has (all returned unless the request names some)."""
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
    payload = loads(head)  # NaN and Infinity parse, for the 422 that names the feature
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
    request_id = payload.get("id")
    return InferRequest(
        X=np.ascontiguousarray(X),
        outputs=_requested_outputs(payload, output_names),
        id=str(request_id) if request_id is not None else None,
    )


def _requested_outputs(
    payload: dict[str, Any], output_names: tuple[str, ...]
) -> list[tuple[str, bool]]:
    """The outputs the request asks for (default: every one), each with its binary flag."""
    params = payload.get("parameters") or {}
    default = bool(type(params) is dict and params.get("binary_data_output"))
    outputs = payload.get("outputs")
    if outputs is None or outputs == []:
        return [(name, default) for name in output_names]
    if type(outputs) is not list:
        raise InvalidField('"outputs" must be a list', field="outputs")
    wanted: list[tuple[str, bool]] = []
    for i, out in enumerate(outputs):
        name = out.get("name") if type(out) is dict else None
        if name not in output_names:
            raise InvalidField(
                f"outputs[{i}]: this model's outputs are {', '.join(map(repr, output_names))}",
                field=f"outputs[{i}].name",
            )
        params = out.get("parameters") or {}
        wanted.append((name, bool(type(params) is dict and params.get("binary_data"))))
    return wanted


def _tensor_out(
    name: str, datatype: str, values: np.ndarray | list[Any], shape: list[int], binary: bool
) -> tuple[dict[str, Any], bytes]:
    """One output tensor (JSON data, or its binary bytes to append after the header)."""
    out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    if not binary:
        out["data"] = values.reshape(-1) if isinstance(values, np.ndarray) else values
        return out, b""
    if datatype == "BYTES":
        raw = b"".join(len(b).to_bytes(4, "little") + b for b in (str(v).encode() for v in values))
    else:
        dtype = "<f8" if datatype == "FP64" else "<i8"
        raw = np.ascontiguousarray(values, dtype=dtype).tobytes()
    out["parameters"] = {"binary_data_size": len(raw)}
    return out, raw


def infer_response(
    model_name: str,
    model_version: str,
    request_id: str,
    y: np.ndarray,
    outputs: list[tuple[str, bool]],
    classes: np.ndarray | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The V2 response body and its extra headers; ``y`` is a regressor's values, or with
    ``classes`` a classifier's probabilities (columns in ``classes`` order)."""
    tensors: list[tuple[dict[str, Any], bytes]] = []
    for name, binary in outputs:
        if classes is None:
            tensors.append(_tensor_out(name, "FP64", y, [len(y)], binary))
        elif name == OUTPUT_NAME:
            labels = classes[y.argmax(axis=1)]
            datatype = "INT64" if labels.dtype.kind in "iu" else "BYTES"
            values = labels if datatype == "INT64" else labels.tolist()
            tensors.append(_tensor_out(name, datatype, values, [len(y)], binary))
        else:
            tensor, raw = _tensor_out(name, "FP64", y, list(y.shape), binary)
            tensor["parameters"] = {**tensor.get("parameters", {}), "classes": classes.tolist()}
            tensors.append((tensor, raw))
    head = orjson.dumps(
        {
            "model_name": model_name,
            "model_version": model_version,
            "id": request_id,
            "outputs": [tensor for tensor, _ in tensors],
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    raw = b"".join(r for _, r in tensors)
    if any(binary for _, binary in outputs):
        return head + raw, {"Inference-Header-Content-Length": str(len(head))}
    return head, {}


def model_metadata(
    model_name: str,
    versions: list[str],
    features: tuple[str, ...],
    classes: np.ndarray | None = None,
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
        "outputs": _output_metadata(classes),
    }


def _output_metadata(classes: np.ndarray | None) -> list[dict[str, Any]]:
    if classes is None:
        return [{"name": OUTPUT_NAME, "datatype": "FP64", "shape": [-1]}]
    return [
        {
            "name": OUTPUT_NAME,
            "datatype": "INT64" if classes.dtype.kind in "iu" else "BYTES",
            "shape": [-1],
        },
        {
            "name": PROBA_NAME,
            "datatype": "FP64",
            "shape": [-1, len(classes)],
            "parameters": {"classes": classes.tolist()},
        },
    ]
