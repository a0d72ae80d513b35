"""The compiled pipeline matches its golden IR, and submission sends it to the KFP API."""

from __future__ import annotations

import json
from pathlib import Path

import kfp_server_api
import yaml

from pipelines.runner import compile_pipeline, submit
from tests.utils.factories import REPO, example_spec
from tests.utils.kfp_server import kfp_stub

GOLDEN = REPO / "pipelines" / "training.yaml"


def test_training_pipeline_compiles_to_the_golden_ir(tmp_path: Path):
    fresh = compile_pipeline(tmp_path / "training.yaml").read_text()
    assert fresh == GOLDEN.read_text(), (
        "pipelines/training.yaml is stale: run `make compile` and commit it"
    )


def test_golden_ir_runs_every_step_in_the_kubeloop_image_with_platform_env():
    ir, platform_spec = yaml.safe_load_all(GOLDEN.read_text())
    executors = ir["deploymentSpec"]["executors"]
    assert set(executors) == {
        f"exec-{s}" for s in ("ingest", "features", "train", "evaluate", "register")
    }
    images = {e["container"]["image"] for e in executors.values()}
    from kubeloop.images import PIPELINE_IMAGE

    assert images == {PIPELINE_IMAGE}
    assert not any("pip install" in " ".join(e["container"]["command"]) for e in executors.values())
    k8s = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert all(e["configMapAsEnv"] and e["secretAsEnv"] for e in k8s.values())


def test_golden_ir_registers_only_under_the_gate_and_outputs_the_verdict():
    """A rejected model reads as rejected on KFP: register sits in a condition on the evaluate
    step's ``passed`` (skipped otherwise), and the run's output is the verdict with reasons."""
    ir, _ = yaml.safe_load_all(GOLDEN.read_text())
    root = ir["root"]["dag"]
    assert "register" not in root["tasks"]
    [(name, gate)] = [(n, t) for n, t in root["tasks"].items() if "triggerPolicy" in t]
    assert gate["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--evaluate-passed'] == true"
    )
    assert "register" in ir["components"][gate["componentRef"]["name"]]["dag"]["tasks"]
    assert root["outputs"]["parameters"]["Output"]["valueFromParameter"] == {
        "outputParameterKey": "verdict",
        "producerSubtask": "evaluate",
    }
    evaluate_inputs = root["tasks"]["evaluate"]["inputs"]["parameters"]
    assert evaluate_inputs["pipeline_run"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"


def test_submission_sends_the_compiled_pipeline_and_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client keeps a context file there
    spec = example_spec(source="s3://bucket/energy/2026-11.parquet")
    with kfp_stub() as stub:
        run_id = submit(
            stub.host,
            spec,
            "s3://bucket/energy/2026-12.parquet",
            run_name="energy-nightly",
            experiment="energy",
        )
    assert run_id == "run-1"
    [experiment] = stub.posted("/apis/v2beta1/experiments")
    assert experiment["display_name"] == "energy"
    [body] = stub.posted("/apis/v2beta1/runs")
    api = kfp_server_api.ApiClient()
    run = api._ApiClient__deserialize(body, "V2beta1Run")
    assert run.display_name == "energy-nightly"
    assert run.experiment_id == "exp-1"
    golden, golden_platform = yaml.safe_load_all(GOLDEN.read_text())
    assert run.pipeline_spec["pipeline_spec"] == golden
    assert run.pipeline_spec["platform_spec"] == golden_platform
    params = run.runtime_config.parameters
    sent_spec = json.loads(params["spec"])
    assert sent_spec["name"] == "building-energy"
    assert sent_spec["data"]["source"] == "s3://bucket/energy/2026-11.parquet"
    assert params["source"] == "s3://bucket/energy/2026-12.parquet"


def test_cli_submits_to_the_host_with_a_token(tmp_path, monkeypatch, work_dir):
    from typer.testing import CliRunner

    from kubeloop.cli.main import app

    monkeypatch.setenv("HOME", str(tmp_path))
    with kfp_stub() as stub:
        result = CliRunner().invoke(
            app,
            ["run", "training", "--host", stub.host, "--run-name", "from-cli"],
            env={"KFP_TOKEN": "secret-token"},
        )
    assert result.exit_code == 0, result.output
    assert "submitted run run-1" in result.output
    [body] = stub.posted("/apis/v2beta1/runs")
    assert body["display_name"] == "from-cli"
    assert all(r.headers.get("authorization") == "Bearer secret-token" for r in stub.requests)
