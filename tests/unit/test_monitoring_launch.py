"""Retraining launchers: the map of names, the local runner's outcome, the KFP request."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from kubeloop.spec import dump_spec
from monitoring.errors import LaunchError
from monitoring.launch import LAUNCHERS, KfpLauncher, LocalLauncher, make_launcher
from monitoring.settings import MonitoringSettings
from pipelines.runner import LocalRun
from tests.utils.factories import example_spec

SPEC = example_spec()


@pytest.fixture
def work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A work folder without an MLflow store: nothing here touches MLflow."""
    monkeypatch.setenv("KUBELOOP_WORK_DIR", str(tmp_path / "work"))
    for name in ("KUBELOOP_KFP_HOST", "KUBELOOP_LAUNCHER", "KUBELOOP_KFP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "work"


def settings(**kw) -> MonitoringSettings:
    return MonitoringSettings(**kw)


def test_launchers_are_chosen_by_name(work_dir: Path) -> None:
    assert set(LAUNCHERS) == {"local", "kfp"}
    assert isinstance(make_launcher(settings()), LocalLauncher)
    assert isinstance(make_launcher(settings(kfp_host="http://kfp:8888")), KfpLauncher)
    assert make_launcher(settings(launcher="none")) is None
    with pytest.raises(LaunchError, match="KUBELOOP_KFP_HOST"):
        make_launcher(settings(launcher="kfp"))


def test_local_launcher_reports_the_registered_version(work_dir: Path, monkeypatch) -> None:
    calls = []

    def fake_run_local(spec, run_settings, source=None, progress=None):
        assert callable(progress)  # the steps' progress lines go to the job's log
        calls.append((spec.name, source))
        return LocalRun(version="V1.0.1")

    monkeypatch.setattr("pipelines.runner.run_local", fake_run_local)
    started: list[str] = []
    launched = LocalLauncher(settings()).launch(
        SPEC, reason="drift", source="/data/new.parquet", on_start=started.append
    )
    assert calls == [("building-energy", "/data/new.parquet")]
    assert launched.finished and launched.succeeded and launched.version == "V1.0.1"
    host, pid, name = launched.run_id.removeprefix("local:").split(":")
    assert (host, int(pid)) == (socket.gethostname(), os.getpid())
    assert name.startswith("building-energy-retrain-")
    assert started == [launched.run_id]  # known before the run ended: a newer trigger can stop it


def test_local_launcher_reports_a_gate_rejection_and_a_failure(work_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(
        "pipelines.runner.run_local",
        lambda *a, **k: LocalRun(version="", reasons=("r2 0.4100 is below the minimum 0.5",)),
    )
    rejected = LocalLauncher(settings()).launch(SPEC, reason="drift")
    assert rejected.succeeded and rejected.version == ""
    assert rejected.detail == "rejected by the evaluation gate: r2 0.4100 is below the minimum 0.5"

    def boom(*a, **k):
        raise RuntimeError("ingest failed")

    monkeypatch.setattr("pipelines.runner.run_local", boom)
    failed = LocalLauncher(settings()).launch(SPEC, reason="drift")
    assert failed.finished and failed.succeeded is False and "ingest failed" in failed.detail


@dataclass
class FakeKfp:
    """A KFP API server at the HTTP level: records requests, answers like the v2beta1 API."""

    requests: list[dict] = field(default_factory=list)
    run_state: str = "RUNNING"


@pytest.fixture
def kfp_server() -> Iterator[tuple[str, FakeKfp]]:
    fake = FakeKfp()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> dict:
            length = int(self.headers.get("Content-Length") or 0)
            entry = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": self.rfile.read(length),
            }
            fake.requests.append(entry)
            return entry

        def do_GET(self) -> None:
            self._record()
            if self.path.startswith("/apis/v2beta1/healthz"):
                self._answer({"multi_user": False})
            elif self.path.startswith("/apis/v2beta1/experiments"):
                self._answer({"experiments": [], "total_size": 0})
            elif self.path.startswith("/apis/v2beta1/runs/run-42"):
                self._answer({"run_id": "run-42", "state": fake.run_state})
            else:
                self.send_error(404)

        def do_POST(self) -> None:
            entry = self._record()
            if self.path == "/apis/v2beta1/experiments":
                sent = json.loads(entry["body"])
                self._answer({"experiment_id": "exp-7", "display_name": sent["display_name"]})
            elif self.path == "/apis/v2beta1/runs":
                sent = json.loads(entry["body"])
                self._answer({**sent, "run_id": "run-42", "state": "PENDING"})
            elif self.path == "/apis/v2beta1/runs/run-42:terminate":
                fake.run_state = "CANCELING"
                self._answer({})
            else:
                self.send_error(404)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", fake
    server.shutdown()


def as_model(body: bytes, model: str):
    """Parse a request body into a kfp_server_api model, as the API server would."""
    import kfp_server_api

    @dataclass
    class Response:
        data: str

    return kfp_server_api.ApiClient().deserialize(Response(body.decode()), model)


def test_cluster_launcher_sends_the_compiled_pipeline_and_parameters(
    work_dir: Path, tmp_path: Path, kfp_server
) -> None:
    from pipelines.runner import compile_pipeline

    host, fake = kfp_server
    launcher = KfpLauncher(settings(kfp_host=host, kfp_experiment="retraining", kfp_token="s3cret"))
    launched = launcher.launch(SPEC, reason="drift", source="s3://drops/2026-11.parquet")
    assert launched.run_id == "run-42" and not launched.finished

    [experiment] = [
        r
        for r in fake.requests
        if r["method"] == "POST" and r["path"] == "/apis/v2beta1/experiments"
    ]
    assert as_model(experiment["body"], "V2beta1Experiment").display_name == "retraining"
    [run_request] = [
        r for r in fake.requests if r["method"] == "POST" and r["path"] == "/apis/v2beta1/runs"
    ]
    assert run_request["headers"]["authorization"] == "Bearer s3cret"
    run = as_model(run_request["body"], "V2beta1Run")
    assert run.experiment_id == "exp-7"
    assert run.display_name.startswith("building-energy-retrain-")
    assert run.runtime_config.parameters == {
        "spec": json.dumps(dump_spec(SPEC)),
        "source": "s3://drops/2026-11.parquet",
    }
    # The compiled IR: the pipeline spec, then (kfp-kubernetes) the platform spec.
    compiled = list(yaml.safe_load_all(compile_pipeline(tmp_path / "ir.yaml").read_text()))
    sent = run.pipeline_spec
    pipeline_spec = sent["pipeline_spec"] if len(compiled) > 1 else sent
    assert pipeline_spec["pipelineInfo"]["name"] == "kubeloop-training"
    assert pipeline_spec == compiled[0]
    if len(compiled) > 1:
        assert sent["platform_spec"] == compiled[1]


def test_cluster_launcher_polls_the_run_until_it_ends(work_dir: Path, kfp_server) -> None:
    host, fake = kfp_server
    launcher = KfpLauncher(settings(kfp_host=host))
    running = launcher.status("run-42", "energy")
    assert running is not None and not running.finished
    fake.run_state = "FAILED"
    failed = launcher.status("run-42", "energy")
    assert failed is not None and failed.finished and failed.succeeded is False


def test_an_unreachable_kfp_server_is_a_launch_error(work_dir: Path) -> None:
    launcher = KfpLauncher(settings(kfp_host="http://127.0.0.1:9"))
    with pytest.raises(LaunchError, match="could not submit"):
        launcher.launch(SPEC, reason="drift")


def test_cluster_launcher_terminates_a_superseded_run_through_the_api(
    work_dir: Path, kfp_server
) -> None:
    host, fake = kfp_server
    launcher = KfpLauncher(settings(kfp_host=host))
    assert launcher.terminate("run-42") == "KFP run run-42: terminated"
    assert [r["method"] for r in fake.requests if r["path"].endswith(":terminate")] == ["POST"]
    assert launcher.terminate("run-7").startswith("KFP run run-7: not terminated")


def test_a_superseded_local_run_gets_sigterm_with_its_process_group() -> None:
    """A local run's handle names host and pid; the run's process (a group leader, like a CLI
    started from a shell) and the steps it started die together."""
    import signal
    import subprocess
    import sys

    from monitoring.launch import terminate_local

    step = "import time; time.sleep(60)"
    code = (
        "import subprocess, sys, time\n"
        f"print(subprocess.Popen([sys.executable, '-c', {step!r}]).pid, flush=True)\n"
        "time.sleep(60)"
    )
    run = subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    assert run.stdout is not None
    step_pid = int(run.stdout.readline())
    try:
        handle = f"local:{socket.gethostname()}:{run.pid}:energy-retrain-1"
        assert terminate_local(handle) == f"{handle}: terminated (SIGTERM to pid {run.pid})"
        assert run.wait(timeout=10) == -signal.SIGTERM
        deadline = time.monotonic() + 10
        while Path(f"/proc/{step_pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # the orphaned step is reaped by init once it died
        assert not Path(f"/proc/{step_pid}").exists() or _zombie(step_pid)
    finally:
        run.kill()
    assert terminate_local(handle).endswith("already ended")
    assert "not here" in terminate_local(f"local:elsewhere:{run.pid}:energy-retrain-1")
    assert "this process" in terminate_local(f"local:{socket.gethostname()}:{os.getpid()}:x")


def _zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
