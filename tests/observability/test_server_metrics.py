"""The metrics the dashboards and alerts were given: in-flight requests, latency by model version
and role, series present from start-up (server); registry figures (monitoring job)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.metrics import LOG_DROP_REASONS, MODEL_ALIASES
from serving.settings import ServingSettings
from tests.utils.serving import FakeRegistry, fake_runtime, loaded_model

FEATURES = ["a", "b"]


class Probe:
    """A model that records the in-flight gauge while it predicts."""

    def __init__(self) -> None:
        self.seen: list[float | None] = []
        self.registry = None

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.registry is not None:  # None while the repository tries it at load time
            self.seen.append(self.registry.get_sample_value("kubeloop_requests_in_flight"))
        return np.zeros(len(X))


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import os

    for name in list(os.environ):
        if name.startswith("KUBELOOP_") and name != "KUBELOOP_REQUIRE_SERVICES":
            monkeypatch.delenv(name)
    probe = Probe()
    settings = ServingSettings(work_dir=tmp_path / "work", registry_poll_seconds=60)
    registry = FakeRegistry(
        "demo", {"1": loaded_model(probe, FEATURES, version="1")}, {"champion": "1"}
    )
    runtime = fake_runtime(registry, settings)
    probe.registry = runtime.metrics.registry
    with TestClient(create_app(settings, runtime)) as client:
        yield SimpleNamespace(client=client, runtime=runtime, probe=probe)


def sample(server, name: str, **labels: str) -> float | None:
    return server.runtime.metrics.registry.get_sample_value(name, labels)


def test_failure_series_exist_at_zero_from_start_up(server) -> None:
    for reason in LOG_DROP_REASONS:
        assert sample(server, "kubeloop_prediction_log_dropped_rows_total", reason=reason) == 0
    for alias in MODEL_ALIASES:
        assert sample(server, "kubeloop_model_load_failures_total", alias=alias) == 0
    assert sample(server, "kubeloop_requests_in_flight") == 0


def test_in_flight_counts_requests_being_handled_not_scrapes_or_probes(server) -> None:
    response = server.client.post("/predict", json={"records": [{"features": {"a": 1, "b": 2}}]})
    assert response.status_code == 200, response.text
    assert server.probe.seen == [1.0]
    assert sample(server, "kubeloop_requests_in_flight") == 0
    scraped = server.client.get("/metrics").text
    assert "kubeloop_requests_in_flight 0.0" in scraped
    server.client.get("/health/ready")
    assert sample(server, "kubeloop_requests_in_flight") == 0


def test_request_latency_is_labelled_by_model_version_and_role(server) -> None:
    server.client.post("/predict", json={"records": [{"features": {"a": 1, "b": 2}}]})
    assert (
        sample(
            server,
            "kubeloop_request_duration_seconds_count",
            route="/predict",
            method="POST",
            model_version="1",
            role="champion",
        )
        == 1
    )
    server.client.post("/predict", json={"records": [{"features": {"a": "x"}}]})  # 422
    assert (
        sample(
            server,
            "kubeloop_request_duration_seconds_count",
            route="/predict",
            method="POST",
            model_version="none",
            role="none",
        )
        == 1
    )


class FakeClient:
    """The registry calls of ``registry_samples``."""

    def __init__(self, versions, aliases, broken: bool = False) -> None:
        self.versions = {v.version: v for v in versions}
        self.aliases = aliases
        self.broken = broken

    def search_model_versions(self, query: str):
        if self.broken:
            raise ConnectionError("tracking server unreachable")
        return list(self.versions.values())

    def get_model_version_by_alias(self, name: str, alias: str):
        from mlflow.exceptions import MlflowException

        if alias not in self.aliases:
            raise MlflowException(f"no alias {alias}")
        return self.versions[self.aliases[alias]]


def _version(number: str, label: str, created: float, **tags: str):
    return SimpleNamespace(
        version=number,
        creation_timestamp=int(created * 1000),
        tags={"kubeloop.version": label, **tags},
    )


def test_registry_samples_name_champion_challenger_and_their_times() -> None:
    from monitoring.job import registry_samples

    promoted = {"kubeloop.champion_since": "2026-01-01T00:00:00+00:00"}
    client = FakeClient(
        [_version("1", "V1.0.0", 1_000.0, **promoted), _version("2", "V1.0.1", 2_000.0)],
        {"champion": "1", "challenger": "2"},
    )
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for s in registry_samples(client, "demo")
    }
    assert got == {
        (
            "kubeloop_registry_alias_info",
            (("alias", "champion"), ("model_label", "V1.0.0"), ("model_version", "1")),
        ): 1.0,
        (
            "kubeloop_registry_alias_info",
            (("alias", "challenger"), ("model_label", "V1.0.1"), ("model_version", "2")),
        ): 1.0,
        (
            "kubeloop_registry_alias_since_timestamp_seconds",
            (("alias", "champion"),),
        ): 1767225600.0,  # the promotion's tag
        (
            "kubeloop_registry_alias_since_timestamp_seconds",
            (("alias", "challenger"),),
        ): 2_000.0,  # registration (register() sets the challenger alias)
        ("kubeloop_registry_latest_version_timestamp_seconds", ()): 2_000.0,
    }


def test_a_promoted_challenger_is_not_exported_as_one() -> None:
    """After a promotion the challenger alias stays on the new champion: the loop dashboard's
    "Challenger" showed the champion."""
    from monitoring.job import registry_samples

    client = FakeClient([_version("2", "V1.0.1", 2_000.0)], {"champion": "2", "challenger": "2"})
    aliases = {s.labels.get("alias") for s in registry_samples(client, "demo")}
    assert aliases == {"champion", None}


def test_registry_figures_never_fail_a_monitoring_run() -> None:
    from monitoring.job import registry_samples

    assert registry_samples(FakeClient([], {}, broken=True), "demo") == []
    assert registry_samples(FakeClient([], {}), "demo") == []
