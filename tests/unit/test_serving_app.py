"""The HTTP surface in-process: routes, token, error shape, shadow, canary, metrics, docs."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression

from serving.app import create_app
from serving.metrics import METRIC_NAMES
from serving.settings import ServingSettings
from tests.utils.serving import FakeRegistry, fake_runtime, loaded_model, static_features

FEATURES = ["a", "b", "c"]
ROW = {"a": 1.0, "b": 2.0, "c": 3.0}
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_TOKEN = "adm1n-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def constant(value: float, version: str):
    model = DummyRegressor(strategy="constant", constant=value).fit(np.zeros((2, 3)), [0, 0])
    return loaded_model(model, FEATURES, version=version)


def linear(version: str = "3"):
    X = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]])
    return loaded_model(
        LinearRegression().fit(X, X @ [1.0, 10.0, 100.0]), FEATURES, version=version
    )


class Server:
    def __init__(self, work_dir: Path, aliases=None, **options):
        self.settings = ServingSettings(
            work_dir=work_dir,
            max_batch_records=50,
            max_body_bytes=4096,
            registry_poll_seconds=60,
            **options,
        )
        self.registry = FakeRegistry(
            "demo",
            {"1": constant(1.0, "1"), "2": constant(2.0, "2"), "3": linear("3")},
            aliases if aliases is not None else {"champion": "1", "challenger": "2"},
        )
        self.features = static_features(FEATURES, {1001: [1.0, 1.0, 1.0], 1002: [0.0, 0.0, 2.0]})
        self.runtime = fake_runtime(self.registry, self.settings, features=self.features)
        self.client = TestClient(create_app(self.settings, self.runtime))

    def __enter__(self):
        self.client.__enter__()
        return self

    def __exit__(self, *exc):
        self.client.__exit__(*exc)

    def predict(self, records, headers=None, **kw):
        return self.client.post(
            "/predict", json={"records": records}, headers={**AUTH, **(headers or {})}, **kw
        )


@pytest.fixture
def work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A work folder without the MLflow store template: these tests never touch MLflow."""
    import os

    for name in list(os.environ):
        if name.startswith("KUBELOOP_") and name != "KUBELOOP_REQUIRE_SERVICES":
            monkeypatch.delenv(name)
    monkeypatch.setenv("KUBELOOP_WORK_DIR", str(tmp_path / "work"))
    return tmp_path / "work"


@pytest.fixture(params=[True, False], ids=["asgi-fast-path", "fastapi-routes"])
def server(work_dir: Path, request: pytest.FixtureRequest):
    """Each test runs against both ways of serving the hot routes: they must not differ."""
    with Server(
        work_dir, api_token=TOKEN, admin_token=ADMIN_TOKEN, asgi_fast_path=request.param
    ) as s:
        yield s


def error_of(response):
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}
    return body["error"]


def test_predict_answers_each_record_with_prediction_version_and_request_id(server):
    response = server.predict([{"features": ROW}, {"entity_id": 1001}, {"entity_id": "1002"}])
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "demo"
    assert [p["prediction"] for p in body["predictions"]] == [1.0, 1.0, 1.0]
    assert {p["model_version"] for p in body["predictions"]} == {"V1.0.0"}
    assert [p["request_id"] for p in body["predictions"]] == [
        f"{body['request_id']}-{i}" for i in range(3)
    ]
    assert response.headers["x-request-id"] == body["request_id"]


def test_fresh_request_ids_are_uuid7s_in_the_order_they_were_answered(server):
    ids = []
    for _ in range(3):
        ids.append(server.predict([{"features": ROW}]).json()["request_id"])
        time.sleep(0.002)  # UUIDv7 orders by the millisecond
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert {uuid.UUID(i).version for i in ids} == {7}


def test_predict_uses_the_callers_request_id(server):
    response = server.predict([{"features": ROW}], headers={"X-Request-ID": "order-77"})
    assert response.json()["predictions"][0]["request_id"] == "order-77-0"


def test_an_error_carries_the_request_id_the_client_sent(server):
    """A client matches a failure to its own call by the id (401 and 422 alike; 413 in
    ``test_oversized_body_is_413_with_or_without_content_length``)."""
    for headers, records in (
        ({"Authorization": "Bearer wrong"}, [{"features": ROW}]),
        (AUTH, [{"features": {}}]),
        (AUTH, [{"entity_id": "--5"}]),
    ):
        response = server.client.post(
            "/predict", json={"records": records}, headers={**headers, "X-Request-ID": "call-9"}
        )
        assert response.status_code in (401, 422), response.text
        assert response.headers["x-request-id"] == "call-9"


def test_the_bearer_scheme_is_case_insensitive(server):
    """RFC 9110: ``bearer <token>`` is the same credentials as ``Bearer <token>``."""
    for scheme in ("bearer", "BEARER"):
        headers = {"Authorization": f"{scheme} {TOKEN}"}
        assert server.predict([{"features": ROW}], headers=headers).status_code == 200
        wrong = server.predict([{"features": ROW}], headers={"Authorization": f"{scheme} x"})
        assert wrong.status_code == 401


def test_predict_requires_the_bearer_token(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = server.client.post(
            "/predict", json={"records": [{"features": ROW}]}, headers=headers
        )
        assert response.status_code == 401
        assert error_of(response)["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    for path in ("/feedback", "/admin/rollback"):
        assert server.client.post(path, json={}).status_code == 401
    assert server.client.get("/features/1001").status_code == 401
    assert server.client.get("/admin/rollout").status_code == 401


def test_the_predict_token_cannot_call_admin_routes(server):
    for method, path in (
        ("get", "/admin/rollout"),
        ("put", "/admin/canary"),
        ("post", "/admin/rollback"),
        ("post", "/admin/reload"),
    ):
        response = server.client.request(method, path, json={"weight": 1.0}, headers=AUTH)
        assert response.status_code == 403, path
        assert error_of(response)["code"] == "forbidden"
        assert "KUBELOOP_ADMIN_TOKEN" in error_of(response)["message"]
        wrong = server.client.request(method, path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
    assert server.client.get("/admin/rollout", headers=ADMIN).status_code == 200
    assert server.runtime.models.state.canary_weight == 0.0  # nothing moved


def test_the_admin_token_cannot_predict(server):
    assert server.predict([{"features": ROW}], headers=ADMIN).status_code == 401


def test_without_an_admin_token_the_admin_routes_are_closed(work_dir):
    with Server(work_dir, api_token=TOKEN) as s:
        response = s.client.get("/admin/rollout", headers=AUTH)
        assert response.status_code == 403 and "no KUBELOOP_ADMIN_TOKEN" in response.text
    with Server(work_dir) as s:  # dev without any token: everything is open
        assert s.client.get("/admin/rollout").status_code == 200


def test_admin_and_api_tokens_must_differ(work_dir):
    with pytest.raises(ValidationError, match="must differ"):
        ServingSettings(work_dir=work_dir, api_token=TOKEN, admin_token=TOKEN)


def test_health_metrics_and_docs_need_no_token(server):
    for path in (
        "/health/live",
        "/health/ready",
        "/metrics",
        "/docs",
        "/openapi.json",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/demo",
    ):
        assert server.client.get(path).status_code == 200, path


def test_server_refuses_to_start_without_a_token_outside_dev(work_dir, monkeypatch, capsys):
    with pytest.raises(ValidationError, match="KUBELOOP_API_TOKEN is required"):
        ServingSettings(work_dir=work_dir, env="prod")
    from serving.__main__ import main

    monkeypatch.setenv("KUBELOOP_ENV", "staging")
    assert main() == 2
    assert "KUBELOOP_API_TOKEN is required" in capsys.readouterr().err


def test_predict_is_503_until_a_model_is_loaded(work_dir):
    with Server(work_dir, aliases={"challenger": "2"}, startup_wait_seconds=0) as s:
        response = s.predict([{"features": ROW}])
        assert response.status_code == 503
        assert error_of(response)["code"] == "model_not_ready"
        assert response.headers["retry-after"] == "5"  # a client knows to come back
        assert s.client.get("/health/ready").status_code == 503
        assert s.client.get("/health/live").status_code == 200
        assert s.client.get("/v2/health/ready").status_code == 503
        # load balancers and uptime checkers probe with HEAD
        assert s.client.head("/health/live").status_code == 200
        assert s.client.head("/health/ready").status_code == 503


def test_unknown_entity_is_404_naming_it(server):
    response = server.predict([{"entity_id": 1001}, {"entity_id": 4242}])
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "entity_not_found" and error["field"] == "records[1].entity_id"
    assert "4242" in error["message"]


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"features": {"a": 1.0, "b": 2.0}}, "records[0].features.c"),
        ({"features": {**ROW, "d": 1.0}}, "records[0].features.d"),
        ({"features": {**ROW, "b": "2"}}, "records[0].features.b"),
    ],
)
def test_predict_rejects_bad_features_with_422_naming_the_field(server, record, field):
    response = server.predict([record])
    assert response.status_code == 422
    assert error_of(response)["field"] == field


def test_predict_rejects_nan_feature(server):
    body = b'{"records": [{"features": {"a": NaN, "b": 1, "c": 2}}]}'
    response = server.client.post("/predict", content=body, headers=AUTH)
    assert response.status_code == 422
    assert error_of(response)["field"] == "records[0].features.a"


def test_batch_over_the_record_limit_is_413(server):
    response = server.predict([{"entity_id": 1001}] * 51)
    assert response.status_code == 413 and error_of(response)["code"] == "payload_too_large"


def test_oversized_body_is_413_with_or_without_content_length(server):
    record = {"features": ROW, "key": "k" * 200}
    records = [record] * 30  # 30 records (under the limit of 50), ~7 kB (over 4 kB)
    refused = server.predict(records, headers={"X-Request-ID": "big-1"})
    assert refused.status_code == 413 and refused.headers["x-request-id"] == "big-1"

    def chunks():
        yield b'{"records": ['
        for i in range(30):
            yield (b"," if i else b"") + orjson.dumps(record)
        yield b"]}"

    response = server.client.post("/predict", content=chunks(), headers=AUTH)
    assert response.status_code == 413 and error_of(response)["code"] == "payload_too_large"


def test_unknown_routes_and_methods_use_the_error_shape(server):
    assert error_of(server.client.get("/nope"))["code"] == "not_found"
    response = server.client.get("/predict", headers=AUTH)
    assert response.status_code == 405 and error_of(response)["code"] == "method_not_allowed"


def test_bad_requests_never_lose_logged_predictions(server):
    good = 0
    for i in range(30):
        if i % 3 == 0:
            server.client.post("/predict", content=b"{broken", headers=AUTH)
        elif i % 3 == 1:
            server.predict([{"features": {"a": 1.0}}])
        else:
            assert server.predict([{"features": ROW}, {"entity_id": 1002}]).status_code == 200
            good += 2
    assert len(server.runtime.log.rows()) == good
    assert server.client.get("/health/ready").status_code == 200


def test_logged_rows_hold_features_entity_version_and_role(server):
    server.predict([{"entity_id": 1002}, {"features": ROW}], headers={"X-Request-ID": "r1"})
    rows = server.runtime.log.rows()
    assert [r["request_id"] for r in rows] == ["r1-0", "r1-1"]
    assert rows[0]["entity_id"] == "1002" and rows[1]["entity_id"] is None
    assert rows[0]["features"] == {"a": 0.0, "b": 0.0, "c": 2.0}
    assert {(r["model_version"], r["model_label"], r["role"]) for r in rows} == {
        ("1", "V1.0.0", "champion")
    }


def test_shadow_predictions_are_logged_but_never_returned(work_dir):
    with Server(work_dir, shadow_enabled=True) as s:
        n = 25
        for i in range(n):
            response = s.predict([{"features": ROW}], headers={"X-Request-ID": f"s{i}"})
            assert [p["prediction"] for p in response.json()["predictions"]] == [1.0]
            assert response.json()["predictions"][0]["model_version"] == "V1.0.0"
        deadline = time.monotonic() + 5
        while len(s.runtime.log.rows("shadow")) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        shadow = s.runtime.log.rows("shadow")
        assert len(shadow) == n
        assert {r["prediction"] for r in shadow} == {2.0}
        assert {r["request_id"] for r in shadow} == {f"s{i}-0" for i in range(n)}


def test_canary_at_20_percent_is_proportional_and_sticky(server):
    assert (
        server.client.put("/admin/canary", json={"weight": 0.2}, headers=ADMIN).json()[
            "canary_weight"
        ]
        == 0.2
    )
    records = [{"features": ROW, "key": f"user-{i}"} for i in range(5000)]
    first = []
    for start in range(0, 5000, 50):
        response = server.predict(records[start : start + 50])
        first += [p["model_version"] for p in response.json()["predictions"]]
    share = first.count("V1.0.1") / len(first)
    assert 0.17 <= share <= 0.23
    again = server.predict(records[:50]).json()["predictions"]
    assert [p["model_version"] for p in again] == first[:50]
    roles = {r["role"] for r in server.runtime.log.rows()}
    assert roles == {"champion", "canary"}


def test_rollback_sends_everything_back_to_the_champion(server):
    server.client.put("/admin/canary", json={"weight": 1.0}, headers=ADMIN)
    assert server.predict([{"features": ROW}]).json()["predictions"][0]["prediction"] == 2.0
    status = server.client.post("/admin/rollback", headers=ADMIN).json()
    assert status["canary_weight"] == 0.0
    assert server.predict([{"features": ROW}]).json()["predictions"][0]["prediction"] == 1.0


def test_canary_weight_outside_zero_to_one_is_422(server):
    response = server.client.put("/admin/canary", json={"weight": 1.5}, headers=ADMIN)
    assert response.status_code == 422 and error_of(response)["field"] == "weight"


def test_reload_picks_up_a_moved_champion_at_once(server):
    server.registry.aliases["champion"] = "3"
    status = server.client.post("/admin/reload", headers=ADMIN).json()
    assert status["champion"]["label"] == "V1.0.2"
    prediction = server.predict([{"features": ROW}]).json()["predictions"][0]
    assert prediction["prediction"] == pytest.approx(321.0)
    assert prediction["model_version"] == "V1.0.2"


def test_features_endpoint_returns_the_online_features(server):
    body = server.client.get("/features/1002", headers=AUTH).json()
    assert body["entity_id"] == 1002 and body["features"] == {"a": 0.0, "b": 0.0, "c": 2.0}
    response = server.client.get("/features/77", headers=AUTH)
    assert response.status_code == 404 and error_of(response)["field"] == "entity_id"
    # A path names a resource: an id that cannot be an integer key names no entity.
    response = server.client.get("/features/abc", headers=AUTH)
    assert response.status_code == 404 and error_of(response)["field"] == "entity_id"
    assert "must be an integer id" in error_of(response)["message"]


def test_the_documented_contract_refuses_what_the_server_refuses(server):
    """Schemathesis' findings, kept: empty feedback, booleans for numbers, null entity ids."""
    response = server.client.post("/feedback", headers=AUTH, json=[])
    assert response.status_code == 422 and "empty" in error_of(response)["message"]
    response = server.client.post(
        "/feedback", headers=AUTH, json=[{"request_id": "r-0", "actual": False}]
    )
    assert response.status_code == 422 and error_of(response)["field"] == "[0].actual"
    label = server.client.post("/feedback", headers=AUTH, json={"request_id": "r", "actual": "7"})
    assert label.status_code == 422 and error_of(label)["field"] == "actual"  # regression
    response = server.client.put("/admin/canary", headers=ADMIN, json={"weight": False})
    assert response.status_code == 422
    schema = server.client.get("/openapi.json").json()["components"]["schemas"]
    assert schema["RecordById"]["properties"]["entity_id"]["type"] == "integer"  # INT64 key
    assert schema["FeedbackItem"]["properties"]["actual"]["type"] == "number"  # regression
    both = server.predict([{"entity_id": 1002, "features": ROW}])
    assert both.status_code == 422 and error_of(both)["field"] == "records[0].features"
    v2_not_found = server.client.get("/v2/models/other", headers=AUTH)
    assert v2_not_found.status_code == 404 and isinstance(v2_not_found.json()["error"], str)


def test_feedback_is_stored_and_replaced(server):
    from sqlalchemy import select

    from kubeloop.log_store import feedback

    assert server.client.post(
        "/feedback", json={"request_id": "r-0", "actual": 1.5}, headers=AUTH
    ).json() == {"stored": 1}
    assert server.client.post(
        "/feedback",
        json=[{"request_id": "r-0", "actual": 2.5}, {"request_id": "r-1", "actual": 3.0}],
        headers=AUTH,
    ).json() == {"stored": 2}
    with server.runtime._engine().connect() as conn:
        stored = dict(conn.execute(select(feedback.c.request_id, feedback.c.actual)).all())
    assert stored == {"r-0": 2.5, "r-1": 3.0}


def test_feedback_rejects_nan_and_missing_fields_naming_them(server):
    response = server.client.post(
        "/feedback",
        content=b'{"request_id": "r", "actual": NaN}',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    response = server.client.post("/feedback", json={"actual": 1.0}, headers=AUTH)
    assert response.status_code == 422 and error_of(response)["field"] == "request_id"
    for body, field in (("hello", None), (["hello"], "[0]")):
        response = server.client.post("/feedback", json=body, headers=AUTH)
        assert response.status_code == 422
        error = error_of(response)
        assert error["field"] == field and "must be an object" in error["message"]
        assert "None" not in error["message"]


def test_a_malformed_admin_body_is_400_not_a_field_error(server):
    response = server.client.put(
        "/admin/canary",
        content=b"{bad",
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_request"
    assert "not valid JSON" in error_of(response)["message"]


def test_v2_infer_in_process(server):
    body = {
        "inputs": [
            {"name": "input-0", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]}
        ]
    }
    response = server.client.post("/v2/models/demo/infer", json=body, headers=AUTH)
    assert response.status_code == 200
    out = response.json()["outputs"][0]
    assert out["name"] == "predict" and out["shape"] == [2] and out["data"] == [1.0, 1.0]
    assert server.client.post("/v2/models/other/infer", json=body, headers=AUTH).status_code == 404
    metadata = server.client.get("/v2/models/demo").json()
    assert metadata["inputs"][0]["shape"] == [-1, 3]
    assert metadata["inputs"][0]["parameters"]["features"] == FEATURES


def test_metrics_export_every_metric_family(server):
    server.predict([{"features": ROW}])
    server.predict([{"entity_id": 1001}])
    server.predict([{"features": {"a": 1}}])
    text = server.client.get("/metrics").text
    for name in METRIC_NAMES:
        assert f"# HELP {name} " in text, name
    assert (
        'kubeloop_requests_total{method="POST",model_version="1",role="champion",'
        'route="/predict",status="200"}'
    ) in text
    assert (
        'kubeloop_model_info{alias="champion",model_label="V1.0.0",model_version="1"} 1.0' in text
    )
    assert 'route="/predict",status="422"' in text


def test_openapi_documents_the_predict_body_with_examples(server):
    spec = server.client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/PredictBody"}
    assert {"by_entity", "by_features", "table"} <= set(body["examples"])
    assert {"RecordById", "RecordByFeatures", "PredictRequest", "PredictTable"} <= set(
        spec["components"]["schemas"]
    )
    assert "422" in spec["paths"]["/predict"]["post"]["responses"]
    assert "/v2/models/{name}/infer" in spec["paths"]
    secured = {
        (m, p)
        for p, ops in spec["paths"].items()
        for m, op in ops.items()
        if op.get("security") == [{"bearer": []}]
    }
    assert {
        ("post", "/predict"),
        ("post", "/feedback"),
        ("get", "/features/{entity_id}"),
        ("post", "/v2/models/{name}/infer"),
    } <= secured
    assert spec["paths"]["/admin/canary"]["put"]["security"] == [{"admin": []}]
    assert ("get", "/health/ready") not in secured


def test_a_client_that_hangs_up_mid_body_is_499_answered_by_no_model(server):
    """Both ways of serving a hot route treat it alike (they share one handler)."""
    import asyncio

    sent: list[dict] = []
    messages = iter(
        [
            {"type": "http.request", "body": b'{"records": [', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", AUTH["Authorization"].encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(server.client.app(scope, receive, send))
    start = sent[0]
    assert start["status"] == 499
    assert (b"x-model-role", b"none") in start["headers"]
    registry = server.runtime.metrics.registry
    labels = {"route": "/predict", "method": "POST", "status": "499"}
    assert (
        registry.get_sample_value(
            "kubeloop_requests_total", {**labels, "model_version": "none", "role": "none"}
        )
        == 1
    )
