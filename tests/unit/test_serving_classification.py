"""A classifier served: labels and class probabilities on /predict and V2, the canary's answers
in the champion's classes, the prediction log's labels, feedback checked against the task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression

from serving.app import create_app
from serving.models import align_classes
from serving.settings import ServingSettings
from tests.utils.serving import FakeRegistry, fake_runtime, loaded_model, static_features

FEATURES = ["a", "b"]
X = np.array([[0.0, 0.0], [0.1, 0.2], [5.0, 5.0], [5.2, 4.9], [0.0, 9.0], [0.2, 9.1]])
Y = np.array(["low", "low", "high", "high", "side", "side"])


def classifier(version: str, y=Y):
    return loaded_model(LogisticRegression().fit(X, y), FEATURES, version=version)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KUBELOOP_WORK_DIR", str(tmp_path))
    settings = ServingSettings(work_dir=tmp_path, registry_poll_seconds=60)
    registry = FakeRegistry(
        "wine",
        {"1": classifier("1"), "2": classifier("2", np.where(Y == "side", "low", Y))},
        {"champion": "1", "challenger": "2"},
    )
    features = static_features(FEATURES, {7: [5.0, 5.0]})
    runtime = fake_runtime(registry, settings, features=features, task="classification")
    with TestClient(create_app(settings, runtime)) as client:
        client.runtime = runtime  # type: ignore[attr-defined]
        yield client


def test_predict_answers_the_label_and_every_class_probability(server):
    body = {"records": [{"entity_id": 7}, {"features": {"a": 0.0, "b": 9.0}}]}
    answer = server.post("/predict", json=body).json()["predictions"]
    assert [p["prediction"] for p in answer] == ["high", "side"]
    for p in answer:
        assert set(p["probabilities"]) == {"high", "low", "side"}
        assert sum(p["probabilities"].values()) == pytest.approx(1.0)
        assert max(p["probabilities"], key=p["probabilities"].get) == p["prediction"]
    rows = server.runtime.log.rows("champion")
    assert [r["label"] for r in rows] == ["high", "side"]
    assert rows[0]["prediction"] == pytest.approx(answer[0]["probabilities"]["high"])
    assert rows[1]["probabilities"] == pytest.approx(answer[1]["probabilities"])


def test_v2_infer_returns_labels_and_named_probabilities(server):
    tensor = {"name": "input-0", "datatype": "FP64", "shape": [2, 2], "data": [5, 5, 0, 0]}
    outputs = server.post("/v2/models/wine/infer", json={"inputs": [tensor]}).json()["outputs"]
    assert outputs[0] == {
        "name": "predict",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["high", "low"],
    }
    assert outputs[1]["name"] == "predict_proba" and outputs[1]["shape"] == [2, 3]
    assert outputs[1]["parameters"]["classes"] == ["high", "low", "side"]
    metadata = server.get("/v2/models/wine").json()
    assert [o["name"] for o in metadata["outputs"]] == ["predict", "predict_proba"]
    only = {"inputs": [tensor], "outputs": [{"name": "predict_proba"}]}
    assert [
        o["name"] for o in server.post("/v2/models/wine/infer", json=only).json()["outputs"]
    ] == ["predict_proba"]


def test_a_canary_with_fewer_classes_answers_in_the_champions_columns(server):
    server.runtime.models.set_canary_weight(0.5)
    records = [{"features": {"a": 0.0, "b": 9.0}, "key": f"k{i}"} for i in range(40)]
    answer = server.post("/predict", json={"records": records}).json()["predictions"]
    versions = {p["model_version"] for p in answer}
    assert versions == {"V1.0.0", "V1.0.1"}
    for p in answer:
        assert set(p["probabilities"]) == {"high", "low", "side"}
        if p["model_version"] == "V1.0.1":
            assert p["probabilities"]["side"] == 0.0


def test_align_classes_moves_columns_and_zero_fills():
    p = np.array([[0.2, 0.8]])
    out = align_classes(p, np.array(["b", "a"]), np.array(["a", "b", "c"]))
    assert out.tolist() == [[0.8, 0.2, 0.0]]


def test_feedback_takes_a_class_label_and_refuses_other_types_naming_the_field(server):
    from sqlalchemy import select

    from kubeloop.log_store import feedback

    assert server.post("/feedback", json={"request_id": "r-0", "actual": "side"}).json() == {
        "stored": 1
    }
    wrong = server.post("/feedback", json=[{"request_id": "r-1", "actual": 2.5}])
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "[0].actual"
    unknown = server.post("/feedback", json={"request_id": "r-1", "actual": "sweet"})
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "actual"
    assert "classes: high, low, side" in unknown.json()["error"]["message"]
    with server.runtime._engine().connect() as conn:
        stored = conn.execute(select(feedback.c.actual, feedback.c.actual_label)).all()
    assert [tuple(r) for r in stored] == [(None, "side")]


def test_the_served_openapi_says_feedback_takes_one_of_the_classes(server):
    document = server.get("/openapi.json").json()
    actual = document["components"]["schemas"]["FeedbackItem"]["properties"]["actual"]
    assert actual["enum"] == ["high", "low", "side"]
    examples = document["paths"]["/feedback"]["post"]["requestBody"]["content"]["application/json"][
        "examples"
    ]
    assert examples["one"]["value"]["actual"] == "high"


def test_a_new_champion_with_other_classes_is_documented_without_a_restart(server):
    def enum() -> list[str]:
        document = server.get("/openapi.json").json()
        return document["components"]["schemas"]["FeedbackItem"]["properties"]["actual"]["enum"]

    assert enum() == ["high", "low", "side"]
    registry = server.runtime.models.client
    registry.models["3"] = classifier("3", np.where(Y == "side", "sweet", Y))
    registry.aliases["champion"] = "3"
    assert server.runtime.models.poll_once()
    assert enum() == ["high", "low", "sweet"]


def test_integer_classes_answer_numbers_and_take_integer_feedback(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("KUBELOOP_WORK_DIR", str(tmp_path))
    settings = ServingSettings(work_dir=tmp_path, registry_poll_seconds=60)
    y = np.array([3, 3, 5, 5, 7, 7])
    registry = FakeRegistry("grades", {"1": classifier("1", y)}, {"champion": "1"})
    runtime = fake_runtime(registry, settings, task="classification")
    with TestClient(create_app(settings, runtime)) as client:
        body = {"records": [{"features": {"a": 5.0, "b": 5.0}}]}
        answer = client.post("/predict", json=body).json()["predictions"][0]
        assert answer["prediction"] == 5 and set(answer["probabilities"]) == {"3", "5", "7"}
        assert client.post("/feedback", json={"request_id": "r-0", "actual": 7}).status_code == 200
        half = client.post("/feedback", json={"request_id": "r-0", "actual": 2.5})
        assert half.status_code == 422 and half.json()["error"]["field"] == "actual"
