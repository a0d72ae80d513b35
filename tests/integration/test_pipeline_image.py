"""The pipeline steps' image comes from settings (the chart's values feed them), not code."""

from __future__ import annotations

from pathlib import Path

import yaml

from kubeloop import images
from pipelines.runner import compile_pipeline


def executor_images(path: Path) -> dict[str, str]:
    ir = next(yaml.safe_load_all(path.read_text()))  # then the platform (Kubernetes) config
    return {
        name: executor["container"]["image"]
        for name, executor in ir["deploymentSpec"]["executors"].items()
    }


def test_every_step_runs_the_configured_image(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("KUBELOOP_PIPELINE_IMAGE_REGISTRY", "registry.example.com:5000/ml-team")
    monkeypatch.setenv("KUBELOOP_PIPELINE_IMAGE_REPOSITORY", "kubeloop-steps")
    monkeypatch.setenv("KUBELOOP_PIPELINE_IMAGE_TAG", "2026.12.1")
    found = executor_images(compile_pipeline(tmp_path / "training.yaml"))
    assert len(found) == 5
    assert set(found.values()) == {"registry.example.com:5000/ml-team/kubeloop-steps:2026.12.1"}


def test_the_default_is_the_image_docker_build_makes(tmp_path: Path):
    found = executor_images(compile_pipeline(tmp_path / "training.yaml"))
    assert set(found.values()) == {images.PIPELINE_IMAGE}
    given = executor_images(compile_pipeline(tmp_path / "other.yaml", image="local/kl:dev"))
    assert set(given.values()) == {"local/kl:dev"}
