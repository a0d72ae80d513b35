"""Errors belong to what caused them, on the real server (``python -m serving``).

A registry copy gets a third version: a real scikit-learn pipeline that refuses inputs whose
first feature it has never seen. As the canary, then as the champion, its failures carry its
role and version on the response and on ``kubeloop_requests_total``; requests that never reach
a model (bad input, a wrong token, a hung feature store, a client that hangs up) carry
``none``. The feature store is a socket that accepts and never answers: liveness stays
instant while lookups wait on it.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from kubeloop import model_store, registry
from serving.process import ServerProcess
from tests.utils.serving import Seeded

pytestmark = pytest.mark.slow

TOKEN = "errors-token"
ADMIN_TOKEN = "errors-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
POISON = 7.0  # a first-feature value the failing model has never seen


def failing_model(n_features: int):
    """Predicts on inputs whose first feature is 0 or 1; raises ValueError on any other."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder

    X = np.zeros((20, n_features))
    X[10:, 0] = 1.0
    guard = ColumnTransformer([("guard", OrdinalEncoder(), [0])], remainder="passthrough")
    return make_pipeline(guard, LinearRegression()).fit(X, X.sum(axis=1))


@pytest.fixture(scope="module")
def release(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory):
    """The seeded champion, and a failing version registered as the challenger, in a copy of
    the registry (the other server tests keep theirs)."""
    import mlflow

    root = tmp_path_factory.mktemp("server-errors")
    shutil.copyfile(seeded.work_dir / "mlflow.db", root / "mlflow.db")
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    settings = seeded.settings(MLFLOW_TRACKING_URI=tracking)
    client = model_store.configure(settings)
    champion = registry.load_alias(client, seeded.model_name, "champion")
    assert champion is not None
    features = champion.metadata_features
    model = failing_model(len(features))
    with mlflow.start_run(experiment_id=model_store.experiment_id(settings, "errors")) as run:
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=model_store.trusted_types(model),
            metadata={"features": features},
        )
    failing = registry.register(
        client, seeded.model_name, info.model_uri, run.info.run_id, 1, 0, "tests"
    )
    return SimpleNamespace(
        root=root,
        tracking=tracking,
        client=client,
        features=features,
        champion=champion.version,
        failing=str(failing.version),
    )


@pytest.fixture(scope="module")
def hung_store():
    """A 'Redis' that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def server(seeded: Seeded, release, hung_store: str):
    env = {
        "KUBELOOP_API_TOKEN": TOKEN,
        "KUBELOOP_ADMIN_TOKEN": ADMIN_TOKEN,
        "KUBELOOP_WORK_DIR": str(seeded.work_dir),
        "KUBELOOP_SPEC": str(seeded.spec_path),
        "MLFLOW_TRACKING_URI": release.tracking,
        "KUBELOOP_REGISTRY_POLL_SECONDS": "60",
        "KUBELOOP_PREDICTION_LOG_URL": f"sqlite:///{release.root / 'predictions.db'}",
        "KUBELOOP_FEAST_ONLINE_STORE": "redis",
        "KUBELOOP_REDIS_URL": hung_store,
    }
    with ServerProcess(env, log_path=release.root / "server.log") as process:
        yield process


@pytest.fixture(scope="module")
def http(server: ServerProcess):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        yield client


def records(release, first: float, n: int = 1) -> dict:
    row = {name: 0.0 for name in release.features}
    row[release.features[0]] = first
    return {"records": [{"features": row, "key": f"k{i}"} for i in range(n)]}


def requests_total(http: httpx.Client, **labels: str) -> float:
    total = 0.0
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("kubeloop_requests_total{") and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def answered_by(response: httpx.Response) -> tuple[str, str]:
    return response.headers["x-model-version"], response.headers["x-model-role"]


def test_a_failing_candidate_is_blamed_on_the_candidate(http, release):
    status = http.put("/admin/canary", json={"weight": 1.0}, headers=ADMIN)
    assert status.status_code == 200, status.text
    assert status.json()["candidate"]["version"] == release.failing
    good = http.post("/predict", json=records(release, 1.0))
    assert good.status_code == 200 and answered_by(good) == (release.failing, "canary")
    bad = http.post("/predict", json=records(release, POISON))
    assert bad.status_code == 500 and bad.json()["error"]["code"] == "prediction_failed"
    assert answered_by(bad) == (release.failing, "canary")
    labels = {"route": "/predict", "status": "500"}
    assert requests_total(http, **labels, model_version=release.failing, role="canary") == 1
    assert requests_total(http, **labels, role="champion") == 0
    assert http.post("/admin/rollback", headers=ADMIN).json()["canary_weight"] == 0.0


def test_a_failing_champion_is_blamed_on_the_champion(http, release, seeded):
    registry.promote(
        release.client, seeded.model_name, release.failing, approve=True, approver="tests"
    )
    status = http.post("/admin/reload", headers=ADMIN).json()
    assert status["champion"]["version"] == release.failing
    bad = http.post("/predict", json=records(release, POISON, n=3))
    assert bad.status_code == 500 and answered_by(bad) == (release.failing, "champion")
    labels = {"route": "/predict", "status": "500", "model_version": release.failing}
    assert requests_total(http, **labels, role="champion") == 1
    assert requests_total(http, **labels, role="canary") == 1  # the earlier test's, unchanged
    registry.promote(
        release.client, seeded.model_name, release.champion, approve=True, approver="tests"
    )
    http.post("/admin/reload", headers=ADMIN)


def test_requests_that_never_reach_a_model_are_labelled_none(http, server, release, seeded):
    before = requests_total(http, route="/predict", role="none")
    invalid = http.post("/predict", json={"records": [{"features": {"nope": 1}}]})
    unauthorized = http.post("/predict", json=records(release, 1.0), headers={"Authorization": ""})
    store_down = http.post("/predict", json={"records": [{"entity_id": seeded.entities[0]}]})
    for response, status in ((invalid, 422), (unauthorized, 401), (store_down, 503)):
        assert response.status_code == status, response.text
        assert answered_by(response) == ("none", "none")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:  # hangs up mid-body
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer "
            + TOKEN.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
            + b'{"records": ['
        )
    deadline = time.monotonic() + 10
    while requests_total(http, route="/predict", status="499") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (
        requests_total(http, route="/predict", status="499", model_version="none", role="none") == 1
    )
    assert requests_total(http, route="/predict", role="none") == before + 4
    assert requests_total(http, route="/predict", status="503", role="none") >= 1


def test_a_hung_feature_store_never_stalls_liveness(server, release, seeded):
    async def probe_during_lookups() -> tuple[list[httpx.Response], float, httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30) as client:
            body = {"records": [{"entity_id": seeded.entities[1]}]}
            lookups = [asyncio.create_task(client.post("/predict", json=body)) for _ in range(8)]
            await asyncio.sleep(0.3)  # the lookups now wait on the store
            started = time.monotonic()
            live = await client.get("/health/live")
            seconds = time.monotonic() - started
            return await asyncio.gather(*lookups), seconds, live

    time.sleep(1.5)  # past the back-off of earlier failures: these lookups reach the store
    lookups, seconds, live = asyncio.run(probe_during_lookups())
    assert live.status_code == 200
    assert seconds < 0.5, f"/health/live took {seconds:.2f} s while Redis hung"
    assert {r.status_code for r in lookups} == {503}
    assert all(answered_by(r) == ("none", "none") for r in lookups)
