"""The real server on PostgreSQL (prediction log) and Redis (Feast online store), 2 workers.

Also checks the lean Redis lookup against Feast's own SDK, that keep-alive responses are not
held back by Nagle's algorithm with several workers, and that killing the log database's
connections under load loses no response and no row.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import threading
import time
from types import SimpleNamespace

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, func, select

from kubeloop.feature_store import open_store
from kubeloop.log_store import feedback, predictions
from serving.feature_layout import read_layout
from serving.online_lookup import OnlineStoreLookup
from serving.process import ServerProcess
from serving.redis_lookup import RedisLookup
from tests.utils import services
from tests.utils.serving import Seeded, materialize, post_many

pytestmark = [pytest.mark.slow, pytest.mark.services]

TOKEN = "services-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def backends(seeded: Seeded):
    with services.redis_db(11) as redis_url, services.postgres_database() as log_url:
        settings = seeded.settings(feast_online_store="redis", redis_url=redis_url)
        materialize(seeded.raw(), seeded.spec(), settings)
        yield SimpleNamespace(redis_url=redis_url, log_url=log_url, settings=settings)


@pytest.fixture(scope="module")
def server(seeded: Seeded, backends, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("server-services")
    env = {
        "KUBELOOP_ENV": "staging",  # outside dev: the token is mandatory
        "KUBELOOP_API_TOKEN": TOKEN,
        "KUBELOOP_WORK_DIR": str(seeded.work_dir),
        "KUBELOOP_SPEC": str(seeded.spec_path),
        "MLFLOW_TRACKING_URI": seeded.tracking_uri,
        "KUBELOOP_FEAST_ONLINE_STORE": "redis",
        "KUBELOOP_REDIS_URL": backends.redis_url,
        "KUBELOOP_PREDICTION_LOG_URL": backends.log_url,
        "KUBELOOP_WORKERS": "2",
        "KUBELOOP_REGISTRY_POLL_SECONDS": "2",
        "KUBELOOP_LOG_FLUSH_SECONDS": "0.1",
        "PROMETHEUS_MULTIPROC_DIR": str(root / "metrics"),
    }
    with ServerProcess(env, log_path=root / "server.log") as process:
        yield process


@pytest.fixture(scope="module")
def http(server: ServerProcess):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        yield client


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


def sdk_rows(store, service: str, join_key: str, entities: list[int]):
    found = store.get_online_features(
        features=store.get_feature_service(service), entity_rows=[{join_key: e} for e in entities]
    ).to_dict()
    return found


def test_redis_lookup_matches_feasts_own_sdk(seeded, backends):
    spec = seeded.spec()
    store = open_store(backends.settings, spec)
    layout = read_layout(store, spec.features.service)
    entities = seeded.entities[:25] + [987654]
    lookup = RedisLookup(layout, backends.redis_url)

    async def read():
        try:
            return await lookup.read_rows(entities)
        finally:
            await lookup.close()

    rows = asyncio.run(read())
    expected = sdk_rows(store, spec.features.service, layout.join_key, entities)
    assert rows[-1] is None and all(expected[n][-1] is None for n in layout.names)
    for i, row in enumerate(rows[:-1]):
        assert row is not None
        for j, name in enumerate(layout.names):
            value = expected[name][i]
            assert same(row.values[j], float("nan") if value is None else value), (i, name)


def test_sqlite_lookup_matches_feasts_own_sdk(seeded):
    spec = seeded.spec()
    store = open_store(seeded.settings(), spec)
    layout = read_layout(store, spec.features.service)
    entities = seeded.entities[-10:] + [987654]
    lookup = OnlineStoreLookup(layout, store)
    rows = lookup.read_sync(entities)
    expected = sdk_rows(store, spec.features.service, layout.join_key, entities)
    assert rows[-1] is None
    for i, row in enumerate(rows[:-1]):
        values = [float("nan") if expected[n][i] is None else expected[n][i] for n in layout.names]
        assert all(same(a, b) for a, b in zip(row.values, values, strict=True))


def test_every_route_answers_on_postgres_and_redis(server, http, seeded, backends):
    entity = seeded.entities[3]
    assert http.get("/health/ready").json()["features"]["backend"] == "redis"
    features = http.get(f"/features/{entity}").json()["features"]
    by_entity = http.post("/predict", json={"records": [{"entity_id": entity}]}).json()
    by_values = http.post("/predict", json={"records": [{"features": features}]}).json()
    a, b = by_entity["predictions"][0], by_values["predictions"][0]
    assert a["prediction"] == pytest.approx(b["prediction"])
    assert http.post("/feedback", json={"request_id": a["request_id"], "actual": 7.5}).json() == {
        "stored": 1
    }
    engine = create_engine(backends.log_url)
    try:
        with engine.connect() as conn:
            assert (
                conn.scalar(
                    select(feedback.c.actual).where(feedback.c.request_id == a["request_id"])
                )
                == 7.5
            )
    finally:
        engine.dispose()
    assert http.post("/predict", json={"records": [{"entity_id": 987654}]}).status_code == 404
    assert http.get(f"/v2/models/{seeded.model_name}").json()["versions"][0] == "1"
    assert httpx.post(server.url + "/predict", json={"records": []}).status_code == 401
    # Both workers answer; /metrics on either adds up the samples of all of them.
    for _ in range(40):
        assert http.get("/health/live").status_code == 200
    text = http.get("/metrics").text
    assert metric(text, "kubeloop_requests_total", route="/health/live") >= 40
    # model_ready is the minimum over live workers: 1 once the slower worker has loaded too.
    deadline = time.monotonic() + 60
    while metric(text, "kubeloop_model_ready") < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
        text = http.get("/metrics").text
    assert metric(text, "kubeloop_model_ready") >= 1


def test_keep_alive_responses_are_not_held_back_with_two_workers(server):
    """With uvicorn's own multi-worker socket, every keep-alive response waited ~40 ms for a
    delayed ACK (Nagle); the server binds its socket with IPPROTO_TCP so TCP_NODELAY holds."""
    body = {"records": [{"features": {"x": 1.0}}]}  # answered with a 422 by a worker: two writes
    with httpx.Client(base_url=server.url, headers=AUTH) as client:
        client.post("/predict", json=body)
        took = []
        for _ in range(30):
            start = time.perf_counter()
            client.post("/predict", json=body)
            took.append(time.perf_counter() - start)
    assert statistics.median(took) < 0.030, took


def test_killing_the_log_database_mid_load_loses_no_response(server, http, seeded, backends):
    import psycopg

    def rows_and_drops() -> tuple[int, float, float]:
        engine = create_engine(backends.log_url)
        try:
            with engine.connect() as conn:
                rows = conn.scalar(select(func.count(func.distinct(predictions.c.request_id))))
        finally:
            engine.dispose()
        text = http.get("/metrics").text
        return (
            rows,
            metric(text, "kubeloop_prediction_log_dropped_rows_total"),
            metric(text, "kubeloop_prediction_log_queue_rows"),
        )

    def settled() -> tuple[int, float]:
        """Counts once the writers are idle: nothing queued and nothing new for a second (the
        queue gauge is refreshed every half second)."""
        end = time.monotonic() + 60
        last = None
        while True:
            rows, dropped, queued = rows_and_drops()
            if (queued == 0 and (rows, dropped) == last) or time.monotonic() > end:
                return rows, dropped
            last = (rows, dropped) if queued == 0 else None
            time.sleep(1.0)

    rows_before, dropped_before = settled()
    admin_url = services.POSTGRES_ADMIN_URL
    database = backends.log_url.rsplit("/", 1)[1]
    killed = []

    def kill_connections() -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for _ in range(3):
                time.sleep(0.7)
                killed.append(
                    admin.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()",
                        (database,),
                    ).fetchone()[0]
                )

    n = 3000
    bodies = [orjson.dumps({"records": [{"entity_id": seeded.entities[i % 40]}]}) for i in range(n)]
    killer = threading.Thread(target=kill_connections)
    killer.start()
    answers = asyncio.run(post_many(server.url, "/predict", bodies, AUTH, concurrency=16))
    killer.join()
    assert [status for status, _ in answers].count(200) == n  # no response lost or failed
    assert sum(killed) > 0, "the load finished before any connection was killed"

    def accounted() -> tuple[int, float]:
        rows, dropped, _ = rows_and_drops()
        return rows - rows_before, dropped - dropped_before

    # Every row is stored once the shippers have retried: the rows waited on the spool.
    end = time.monotonic() + 60
    written, dropped = accounted()
    while written < n and time.monotonic() < end:
        time.sleep(0.5)
        written, dropped = accounted()
    assert (written, dropped) == (n, 0)
