"""Prometheus export of a monitoring run: names, textfile, Pushgateway, local scrape."""

from __future__ import annotations

import re
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitoring import exporter
from monitoring.exporter import METRIC_NAMES, Sample, build_registry, publish

PROMETHEUS_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def scrape(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metric_names_follow_prometheus_naming() -> None:
    assert len(set(METRIC_NAMES)) == len(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert PROMETHEUS_NAME.match(name) and name.startswith("kubeloop_"), name
        assert not name.endswith("_total"), f"{name}: gauges must not look like counters"
    assert {
        "kubeloop_drift_share",
        "kubeloop_feature_drift_score",
        "kubeloop_model_rmse",
        "kubeloop_model_trained_timestamp_seconds",
    } <= set(METRIC_NAMES)


def test_an_unlisted_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="not in METRIC_NAMES"):
        build_registry("m", "V1.0.0", [Sample("kubeloop_typo", 1.0)])


def example_registry(model: str = "energy", share: float = 0.5):
    return build_registry(
        model,
        "V1.0.2",
        [
            Sample("kubeloop_drift_share", share),
            Sample(
                "kubeloop_feature_drift_score", 0.7, {"feature": "temp", "method": "wasserstein"}
            ),
            Sample("kubeloop_model_rmse", 12.5, {"dataset": "live"}),
            Sample("kubeloop_model_rmse", 10.0, {"dataset": "baseline"}),
        ],
    )


def test_without_pushgateway_the_figures_go_to_a_textfile(tmp_path: Path) -> None:
    target = publish(
        example_registry(), "energy", pushgateway_url=None, job="j", folder=tmp_path / "metrics"
    )
    assert target == str(tmp_path / "metrics" / "energy.prom")
    samples = scrape(Path(target).read_text())
    base = {("model", "energy"), ("version", "V1.0.2")}
    assert samples[("kubeloop_drift_share", frozenset(base))] == 0.5
    assert samples[("kubeloop_model_rmse", frozenset(base | {("dataset", "live")}))] == 12.5
    assert (
        samples[
            (
                "kubeloop_feature_drift_score",
                frozenset(base | {("feature", "temp"), ("method", "wasserstein")}),
            )
        ]
        == 0.7
    )


class Recorder(BaseHTTPRequestHandler):
    requests: list[tuple[str, str, bytes]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Recorder.requests.append(("PUT", self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def pushgateway() -> Iterator[str]:
    Recorder.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_with_a_pushgateway_the_run_replaces_its_model_group(
    pushgateway: str, tmp_path: Path
) -> None:
    target = publish(
        example_registry(share=0.25),
        "energy",
        pushgateway_url=pushgateway,
        job="kubeloop-monitor",
        folder=tmp_path,
    )
    assert target == pushgateway and not list(tmp_path.iterdir())
    [(method, path, body)] = Recorder.requests
    assert (method, path) == ("PUT", "/metrics/job/kubeloop-monitor/model/energy")
    samples = scrape(body.decode())
    assert (
        samples[("kubeloop_drift_share", frozenset({("model", "energy"), ("version", "V1.0.2")}))]
        == 0.25
    )


def test_a_local_prometheus_can_scrape_every_model_from_one_port(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    publish(example_registry("energy", 0.5), "energy", pushgateway_url=None, job="j", folder=folder)
    publish(example_registry("churn", 0.1), "churn", pushgateway_url=None, job="j", folder=folder)
    server, thread = exporter.serve(folder, 0)
    try:
        port = server.server_address[1]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        samples = scrape(text.decode())
        shares = {
            dict(labels)["model"]: value
            for (name, labels), value in samples.items()
            if name == "kubeloop_drift_share"
        }
        assert shares == {"energy": 0.5, "churn": 0.1}
        # Each family appears once, as the exposition format requires.
        assert text.decode().count("# TYPE kubeloop_drift_share gauge") == 1
        publish(
            example_registry("energy", 0.9), "energy", pushgateway_url=None, job="j", folder=folder
        )
        again = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert "0.9" in again.decode()  # read again at every scrape
    finally:
        server.shutdown()
