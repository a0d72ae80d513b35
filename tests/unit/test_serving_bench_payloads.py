"""The serving benchmark's request bodies are accepted by the server, with the right answers."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_diabetes
from sklearn.ensemble import GradientBoostingRegressor

from serving.app import create_app
from serving.settings import ServingSettings
from tests.utils.serving import FakeRegistry, fake_runtime, loaded_model, static_features

PAYLOADS = Path(__file__).resolve().parents[2] / "bench" / "serving" / "payloads.py"
TOKEN = "bench-token"


def load_payloads():
    spec = importlib.util.spec_from_file_location("bench_serving_payloads", PAYLOADS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in list(os.environ):
        if name.startswith("KUBELOOP_") and name != "KUBELOOP_REQUIRE_SERVICES":
            monkeypatch.delenv(name)
    payloads = load_payloads()
    X, y = load_diabetes(return_X_y=True)
    model = GradientBoostingRegressor(n_estimators=100, max_depth=3, random_state=0).fit(X, y)
    registry = FakeRegistry(
        payloads.MODEL,
        {"1": loaded_model(model, payloads.FEATURES, name=payloads.MODEL)},
        {"champion": "1"},
    )
    features = static_features(payloads.FEATURES, {i: row for i, row in enumerate(X.tolist())})
    settings = ServingSettings(
        work_dir=tmp_path / "work", env="prod", api_token=TOKEN, max_batch_records=1000
    )
    runtime = fake_runtime(registry, settings, features=features)
    with TestClient(create_app(settings, runtime)) as client:
        yield payloads, client, model, X


@pytest.mark.parametrize("form", ["kubeloop", "kubeloop-table", "kubeloop-v2"])
@pytest.mark.parametrize("rows", [1, 100])
def test_bench_payloads_are_accepted_with_the_models_predictions(bench, rows, form):
    payloads, client, model, _ = bench
    X = payloads.rows(rows)
    response = client.post(
        payloads.PATHS[form],
        content=payloads.BUILDERS[form](X),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    got = payloads.predictions(form, response.content)
    assert got == pytest.approx(model.predict(X).tolist())


def test_bench_entity_payload_is_accepted(bench):
    payloads, client, model, X = bench
    response = client.post(
        "/predict",
        content=payloads.kubeloop_entity(7),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 200, response.text
    assert payloads.predictions("kubeloop", response.content) == pytest.approx(
        model.predict(X[7:8]).tolist()
    )


def test_peer_payloads_carry_the_same_rows(bench):
    payloads, _, _, _ = bench
    X = payloads.rows(3)
    assert orjson.loads(payloads.mlflow(X))["dataframe_split"]["data"] == X.tolist()
    assert orjson.loads(payloads.kserve(X))["instances"] == X.tolist()
    v2 = orjson.loads(payloads.v2(X))["inputs"][0]
    assert np.reshape(v2["data"], v2["shape"]).tolist() == X.tolist()
    assert payloads.BUILDERS["kserve-v2"] is payloads.BUILDERS["kubeloop-v2"]
