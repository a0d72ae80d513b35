"""Request bodies of the serving benchmark, one set per server, all for the same rows.

Kept apart from ``run.py`` so a fast test can check that kubeloop accepts exactly what the
benchmark sends (``tests/unit/test_serving_bench_payloads.py``).
"""

from __future__ import annotations

import json

import numpy as np

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
MODEL = "diabetes"


def rows(n: int) -> np.ndarray:
    """The first ``n`` rows of scikit-learn's diabetes data (shipped with scikit-learn)."""
    from sklearn.datasets import load_diabetes

    X = load_diabetes().data
    return np.resize(X, (n, X.shape[1]))


def kubeloop(X: np.ndarray) -> bytes:
    """``POST /predict`` with explicit features by name (validated, logged, metered)."""
    records = [{"features": dict(zip(FEATURES, row, strict=True))} for row in X.tolist()]
    return json.dumps({"records": records}).encode()


def kubeloop_table(X: np.ndarray) -> bytes:
    """``POST /predict`` with the same rows as a table (``columns`` + ``rows``)."""
    return json.dumps({"columns": FEATURES, "rows": X.tolist()}).encode()


def kubeloop_entity(entity: int) -> bytes:
    """``POST /predict`` by entity id: features from the Redis online store."""
    return json.dumps({"records": [{"entity_id": entity}]}).encode()


def mlflow(X: np.ndarray) -> bytes:
    """``POST /invocations`` as MLflow documents it for a DataFrame model (``dataframe_split``)."""
    return json.dumps({"dataframe_split": {"columns": FEATURES, "data": X.tolist()}}).encode()


def kserve(X: np.ndarray) -> bytes:
    """``POST /v1/models/diabetes:predict`` (KServe V1 protocol, as its sklearn server takes)."""
    return json.dumps({"instances": X.tolist()}).encode()


def v2(X: np.ndarray) -> bytes:
    """``POST /v2/models/diabetes/infer`` (the Open Inference Protocol, which both kubeloop and
    KServe serve): one FP64 tensor ``[N, F]``, its data flat and row-major, as tritonclient
    sends it. The same bytes go to both servers."""
    tensor = {"name": "input-0", "shape": list(X.shape), "datatype": "FP64"}
    return json.dumps({"inputs": [{**tensor, "data": X.ravel().tolist()}]}).encode()


def predictions(server: str, body: bytes) -> list[float]:
    """The predictions out of a server's response body (a form of ``PATHS``)."""
    data = json.loads(body)
    if server.endswith("-v2"):
        return list(data["outputs"][0]["data"])
    if server.startswith("kubeloop"):
        return [p["prediction"] for p in data["predictions"]]
    return list(data["predictions"])


PATHS = {
    "kubeloop": "/predict",
    "kubeloop-table": "/predict",
    "mlflow": "/invocations",
    "kserve": f"/v1/models/{MODEL}:predict",
    "kubeloop-v2": f"/v2/models/{MODEL}/infer",
    "kserve-v2": f"/v2/models/{MODEL}/infer",
}
BUILDERS = {
    "kubeloop": kubeloop,
    "kubeloop-table": kubeloop_table,
    "mlflow": mlflow,
    "kserve": kserve,
    "kubeloop-v2": v2,
    "kserve-v2": v2,
}
