"""The real server (``python -m serving`` under uvicorn) on the embedded default.

One seeded work folder (MLflow SQLite registry, Feast SQLite online store, two registered
versions of the bundled example) and one server process for the module: every route, the V2
protocol through tritonclient, bad input, shadow scoring, a 20% canary, a hot swap under
concurrent load, and a version that fails to load.
"""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import numpy as np
import orjson
import pytest
from sqlalchemy import create_engine, func, select

from kubeloop import model_store, registry
from kubeloop.log_store import feedback, predictions
from serving.metrics import METRIC_NAMES
from serving.process import ServerProcess
from tests.utils.serving import Seeded, post_many

pytestmark = pytest.mark.slow

TOKEN = "integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN = {"Authorization": "Bearer integration-admin-token"}


@pytest.fixture(scope="module")
def server(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("server-embedded")
    env = {
        "KUBELOOP_WORK_DIR": str(seeded.work_dir),
        "KUBELOOP_SPEC": str(seeded.spec_path),
        "MLFLOW_TRACKING_URI": seeded.tracking_uri,
        "KUBELOOP_API_TOKEN": TOKEN,
        "KUBELOOP_ADMIN_TOKEN": ADMIN["Authorization"].removeprefix("Bearer "),
        "KUBELOOP_SHADOW_ENABLED": "true",
        "KUBELOOP_REGISTRY_POLL_SECONDS": "0.5",
        "KUBELOOP_PREDICTION_LOG_URL": f"sqlite:///{root / 'predictions.db'}",
        "KUBELOOP_LOG_FLUSH_SECONDS": "0.1",
    }
    with ServerProcess(env, log_path=root / "server.log") as process:
        process.log_db = root / "predictions.db"
        yield process


@pytest.fixture(scope="module")
def http(server: ServerProcess):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def mlflow_client(seeded: Seeded):
    return model_store.configure(seeded.settings())


def log_count(server: ServerProcess, *conditions) -> int:
    engine = create_engine(f"sqlite:///{server.log_db}")
    try:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(predictions).where(*conditions))
    finally:
        engine.dispose()


def wait_until(condition, timeout: float = 30.0, step: float = 0.1):
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > end:
            return value
        time.sleep(step)


def features_of(http: httpx.Client, entity: int) -> dict[str, float]:
    response = http.get(f"/features/{entity}")
    assert response.status_code == 200, response.text
    return response.json()["features"]


def test_every_route_answers_on_the_embedded_default(server, http, seeded):
    entity = seeded.entities[0]
    assert http.get("/health/live").json() == {"status": "live"}
    ready = http.get("/health/ready").json()
    assert ready["ready"] and ready["champion"]["label"] == seeded.labels[0]
    assert ready["features"]["backend"] == "feast"

    features = features_of(http, entity)
    by_entity = http.post("/predict", json={"records": [{"entity_id": entity}]})
    by_values = http.post("/predict", json={"records": [{"features": features}]})
    assert by_entity.status_code == by_values.status_code == 200
    a, b = by_entity.json()["predictions"][0], by_values.json()["predictions"][0]
    assert a["prediction"] == pytest.approx(b["prediction"])  # same features, same answer
    assert a["model_version"] == seeded.labels[0]

    stored = http.post("/feedback", json={"request_id": a["request_id"], "actual": 42.0})
    assert stored.json() == {"stored": 1}
    engine = create_engine(f"sqlite:///{server.log_db}")
    with engine.connect() as conn:
        assert (
            conn.scalar(select(feedback.c.actual).where(feedback.c.request_id == a["request_id"]))
            == 42.0
        )
    engine.dispose()

    assert wait_until(
        lambda: (
            log_count(
                server,
                predictions.c.request_id == a["request_id"],
                predictions.c.role == "champion",
            )
            == 1
        )
    )
    metrics = http.get("/metrics").text
    for name in METRIC_NAMES:
        assert f"# HELP {name} " in metrics
    assert 'route="/predict"' in metrics and "kubeloop_feature_lookup_duration_seconds" in metrics
    # at 0 from the start, so that rate() sees the first failure
    assert 'kubeloop_feature_lookup_failures_total{backend="feast"} 0.0' in metrics

    assert http.get(f"/v2/models/{seeded.model_name}/ready").json()["ready"] is True
    assert http.get("/v2/health/ready").status_code == 200
    assert http.get("/openapi.json").json()["info"]["title"] == "kubeloop model server"
    assert http.get("/docs").status_code == 200
    assert http.get("/admin/rollout", headers=ADMIN).json()["shadow"] is True
    assert http.post("/admin/reload", headers=ADMIN).status_code == 200


def test_tritonclient_calls_the_v2_endpoints(server, http, seeded):
    import tritonclient.http as triton

    entity = seeded.entities[1]
    features = features_of(http, entity)
    expected = http.post("/predict", json={"records": [{"features": features}] * 2}).json()
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(seeded.model_name)
    metadata = client.get_model_metadata(seeded.model_name)
    names = metadata["inputs"][0]["parameters"]["features"]
    assert metadata["inputs"][0]["shape"] == [-1, len(names)] and metadata["versions"][0] == "1"
    X = np.array([[features[n] for n in names]] * 2, dtype=np.float64)
    for binary in (True, False):
        tensor = triton.InferInput("input-0", list(X.shape), "FP64")
        tensor.set_data_from_numpy(X, binary_data=binary)
        output = triton.InferRequestedOutput("predict", binary_data=binary)
        # tritonclient writes into the headers it is given: pass a copy each time.
        result = client.infer(seeded.model_name, [tensor], outputs=[output], headers=dict(AUTH))
        got = result.as_numpy("predict").tolist()
        assert got == pytest.approx([p["prediction"] for p in expected["predictions"]])
    pinned = client.infer(seeded.model_name, [tensor], model_version="1", headers=dict(AUTH))
    assert pinned.get_response()["model_version"] == "1"
    with pytest.raises(triton.InferenceServerException, match="bearer token"):
        client.infer(seeded.model_name, [tensor])
    bad = triton.InferInput("input-0", [1, 3], "FP64")
    bad.set_data_from_numpy(np.ones((1, 3)))
    with pytest.raises(triton.InferenceServerException, match="columns; the model takes"):
        client.infer(seeded.model_name, [bad], headers=dict(AUTH))
    client.close()


def test_bad_input_never_crashes_a_worker_or_loses_logged_predictions(server, http, seeded):
    pid = server.process.pid
    good = 0
    bad_bodies = [
        b"{not json",
        b'{"records": [{"features": {"x": NaN}}]}',
        b'{"records": [{"entity_id": 99999999}]}',
        b'{"records": "all"}',
        b"[" * 10_000,
        b'{"records": [' + b'{"entity_id": 1},' * 2000 + b"{}]}",
        b"x" * (5 * 1024 * 1024),
    ]
    for i, body in enumerate(bad_bodies * 3):
        response = http.post(
            "/predict",
            content=body,
            headers={"X-Request-ID": f"bad-{i}", "Content-Type": "text/plain"},
        )
        assert response.status_code in (400, 404, 413, 422), response.text
        assert set(response.json()["error"]) == {"code", "message", "field"}
        ok = http.post(
            "/predict",
            json={"records": [{"entity_id": seeded.entities[2]}]},
            headers={"X-Request-ID": f"good-{i}"},
        )
        assert ok.status_code == 200
        good += 1
    assert server.process.poll() is None and server.process.pid == pid
    assert wait_until(
        lambda: (
            log_count(
                server, predictions.c.request_id.like("good-%"), predictions.c.role == "champion"
            )
            == good
        )
    )
    assert log_count(server, predictions.c.request_id.like("bad-%")) == 0


def test_shadow_logs_every_request_and_never_answers(server, http, seeded):
    n = 150
    for i in range(n):
        response = http.post(
            "/predict",
            headers={"X-Request-ID": f"shadow-{i}"},
            json={"records": [{"entity_id": seeded.entities[i % 10]}]},
        )
        assert [p["model_version"] for p in response.json()["predictions"]] == [seeded.labels[0]]
    shadow = wait_until(
        lambda: (
            log_count(
                server, predictions.c.request_id.like("shadow-%"), predictions.c.role == "shadow"
            )
            == n
        )
    )
    assert shadow, "not every request was shadow-scored"
    assert (
        log_count(
            server,
            predictions.c.request_id.like("shadow-%"),
            predictions.c.model_label == seeded.labels[-1],
            predictions.c.role == "shadow",
        )
        == n
    )


def test_canary_at_20_percent_routes_a_fifth_of_requests_stickily(server, http, seeded):
    status = http.put("/admin/canary", json={"weight": 0.2}, headers=ADMIN).json()
    assert status["canary_weight"] == 0.2 and status["candidate"]["label"] == seeded.labels[-1]
    row = features_of(http, seeded.entities[0])

    def send(keys: list[str]) -> list[str]:
        bodies = [orjson.dumps({"records": [{"features": row, "key": key}]}) for key in keys]
        answers = asyncio.run(post_many(server.url, "/predict", bodies, AUTH))
        assert {status for status, _ in answers} == {200}
        return [orjson.loads(body)["predictions"][0]["model_version"] for _, body in answers]

    try:
        keys = [f"customer-{i}" for i in range(5000)]
        versions = send(keys)
        share = versions.count(seeded.labels[-1]) / len(versions)
        assert 0.17 <= share <= 0.23, share
        again = send(keys[:500])
        assert again == versions[:500]  # the same key always lands on the same model
        # A V2 request pinned to a version is answered by it alone, canary or not.
        name = seeded.model_name
        names = http.get(f"/v2/models/{name}").json()["inputs"][0]["parameters"]["features"]
        tensor = {
            "inputs": [
                {
                    "name": "input-0",
                    "datatype": "FP64",
                    "shape": [1, len(names)],
                    "data": [row[n] for n in names],
                }
            ]
        }
        for label, role in ((seeded.labels[0], "champion"), (seeded.labels[-1], "canary")):
            pinned = [
                http.post(f"/v2/models/{name}/versions/{label}/infer", json=tensor)
                for _ in range(40)
            ]
            assert {r.headers["x-model-role"] for r in pinned} == {role}, label
    finally:
        assert http.post("/admin/rollback", headers=ADMIN).json()["canary_weight"] == 0.0
    records = [{"features": row, "key": k} for k in keys[:50]]
    after = http.post("/predict", json={"records": records})
    assert {p["model_version"] for p in after.json()["predictions"]} == {seeded.labels[0]}


def test_moving_the_champion_alias_swaps_without_restart_or_failed_requests(
    server, http, seeded, mlflow_client
):
    old, new = seeded.labels[0], seeded.labels[-1]
    body = {"records": [{"entity_id": e} for e in seeded.entities[:5]]}

    async def scenario() -> list[tuple[int, str]]:
        seen: list[tuple[int, str]] = []
        stop = asyncio.Event()

        async def worker(client: httpx.AsyncClient) -> None:
            while not stop.is_set():
                response = await client.post("/predict", json=body)
                label = (
                    response.json()["predictions"][0]["model_version"]
                    if response.status_code == 200
                    else response.text
                )
                seen.append((response.status_code, label))

        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30) as client:
            tasks = [asyncio.create_task(worker(client)) for _ in range(8)]
            await asyncio.sleep(1.0)
            await asyncio.to_thread(
                registry.promote,
                mlflow_client,
                seeded.model_name,
                str(len(seeded.labels)),
                approve=True,
                approver="tests",
            )
            deadline = time.monotonic() + 20
            while not any(label == new for _, label in seen) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*tasks)
        return seen

    pid = server.process.pid
    try:
        seen = asyncio.run(scenario())
    finally:
        registry.promote(mlflow_client, seeded.model_name, "1", approve=True, approver="tests")
        http.post("/admin/reload", headers=ADMIN)
    assert server.process.pid == pid and server.process.poll() is None
    failures = [s for s in seen if s[0] != 200]
    assert not failures, failures[:3]
    labels = [label for _, label in seen]
    assert old in labels and new in labels
    switch = labels.index(new)
    assert labels[:switch] == [old] * switch  # one clean swap...
    assert labels.count(old) - switch <= 8  # ...at most the requests already in flight


def test_a_version_that_fails_to_load_keeps_the_old_one_serving(
    server, http, seeded, mlflow_client
):
    version = mlflow_client.create_model_version(
        seeded.model_name,
        source=str(seeded.work_dir / "missing-model"),
        tags={registry.TAG_NAME: "V9.9.9"},
    )
    before = http.get("/metrics").text.count('kubeloop_model_load_failures_total{alias="champion"}')
    try:
        mlflow_client.set_registered_model_alias(
            seeded.model_name, registry.CHAMPION, version.version
        )
        error = wait_until(lambda: http.get("/health/ready").json()["errors"].get("champion"))
        assert error and "failed to load" in error and "still serving version 1" in error
        response = http.post("/predict", json={"records": [{"entity_id": seeded.entities[0]}]})
        assert response.status_code == 200
        assert response.json()["predictions"][0]["model_version"] == seeded.labels[0]
        metrics = http.get("/metrics").text
        line = [
            m
            for m in metrics.splitlines()
            if m.startswith('kubeloop_model_load_failures_total{alias="champion"}')
        ]
        assert line and float(line[0].split()[-1]) >= 1 and before <= 1
    finally:
        mlflow_client.set_registered_model_alias(seeded.model_name, registry.CHAMPION, "1")
        http.post("/admin/reload", headers=ADMIN)
    assert wait_until(lambda: "champion" not in http.get("/health/ready").json()["errors"])


def test_stopping_the_server_flushes_every_answered_prediction(server, http, seeded):
    """Runs last: SIGTERM drains the queue, so every answered prediction is in the log."""
    for i in range(30):
        response = http.post(
            "/predict",
            headers={"X-Request-ID": f"final-{i}"},
            json={"records": [{"entity_id": e} for e in seeded.entities[:10]]},
        )
        assert response.status_code == 200
    assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM once drained
    assert (
        log_count(
            server, predictions.c.request_id.like("final-%"), predictions.c.role == "champion"
        )
        == 300
    )
