"""The kind quick start and the training workflows, checked without a cluster: no Docker engine
or Kubernetes API server exists on the development machines (docs/kubernetes.md says what runs
only on GitHub's runners). What can be proven here is: the scripts pass shellcheck, every
``kubeloop`` command they run parses against the real CLI, the install does not wait on the
model server, the first model is trained by a run submitted to the cluster's KFP and waited
for, and the helm test asks for an entity the sample data has."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k8s.chart import CHART, REPO, load_values, render
from tests.k8s.processes import resolve_cli
from tests.utils.tools import K8S_INSTALLER, require_command

KIND = REPO / "manifests" / "kind"
WORKFLOWS = REPO / ".github" / "workflows"
SCRIPTS = [KIND / "up.sh", KIND / "train.sh", KIND / "dev-secret.sh", REPO / "docker" / "build.sh"]


def test_the_kind_scripts_pass_shellcheck() -> None:
    shellcheck = require_command("shellcheck", K8S_INSTALLER, "debian")
    proc = subprocess.run(
        [shellcheck, "-x", *map(str, SCRIPTS)], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout


def kubeloop_commands(text: str) -> list[list[str]]:
    """Every ``kubeloop ...`` invocation of a script or workflow step, line continuations joined,
    the script's own variables filled with their defaults and any other with a placeholder."""
    joined = re.sub(r"\\\n\s*", " ", text)
    defaults = {
        name: value.strip('"')
        for name, value in re.findall(r'^([A-Z_]+)=(?:"\$\{[A-Z_]+:-([^}]*)\}"|)', joined, re.M)
    }
    defaults |= dict(re.findall(r"^([A-Z_]+)=([^\s\"$]+)$", joined, re.M))

    def fill(match: re.Match[str]) -> str:
        return defaults.get(match.group(1) or "", "http://x")

    found = []
    for line in joined.splitlines():
        match = re.search(r'(?:"\$KUBELOOP"|\.venv/bin/kubeloop)\s+(.*?)(?:\s*\||$)', line)
        if match:
            args = re.sub(r"\$\{\{[^}]*\}\}|\$\{?([A-Za-z_]+)\}?", fill, match.group(1))
            found.append(["kubeloop", *shlex.split(args)])
    return found


def workflow_text(name: str) -> str:
    return "\n".join(
        step.get("run", "")
        for job in yaml.safe_load((WORKFLOWS / name).read_text())["jobs"].values()
        for step in job["steps"]
    )


@pytest.mark.parametrize(
    "source",
    [KIND / "train.sh", WORKFLOWS / "train-on-merge.yaml"],
    ids=lambda p: p.name,
)
def test_every_kubeloop_command_parses_against_the_real_cli(source: Path) -> None:
    text = workflow_text(source.name) if source.suffix == ".yaml" else source.read_text()
    commands = kubeloop_commands(text)
    assert commands
    for argv in commands:
        resolve_cli(argv)  # raises on an unknown command, option or value


def test_the_install_does_not_wait_on_the_model_server() -> None:
    """The server is ready only once a champion exists: `--wait` on the chart would time out."""
    up = re.sub(r"\\\n\s*", " ", (KIND / "up.sh").read_text())
    [install] = [line for line in up.splitlines() if "helm upgrade --install kubeloop" in line]
    assert "--wait" not in install
    assert "grep -v -- '-server$'" in up  # everything else is waited for


def test_the_first_model_is_trained_through_the_clusters_kfp_and_waited_for() -> None:
    train = kubeloop_commands((KIND / "train.sh").read_text())
    [run] = [c for c in train if c[1:3] == ["run", "training"]]
    assert "--host" in run and "--wait" in run
    assert run[run.index("--source") + 1].startswith("s3://")  # the cluster's MinIO
    assert [*train[-1][:4]] == ["kubeloop", "promote", "challenger", "--approve"]
    text = (KIND / "train.sh").read_text()
    assert "create job --from=cronjob/kubeloop-materialize" in text
    assert text.rstrip().splitlines()[-1].startswith("helm test kubeloop")
    kind = workflow_text("kind-e2e.yaml")
    assert "make kind-up" in kind and "make kind-train" in kind
    assert "kubeloop run training\n" not in kind  # no kfp.local run on the runner


def test_the_merge_workflow_builds_compiles_submits_waits_and_reports() -> None:
    text = workflow_text("train-on-merge.yaml")
    order = ["docker/build.sh", "docker push", "kubeloop compile", "trigger merge", "STEP_SUMMARY"]
    positions = [text.index(marker) for marker in order]
    assert positions == sorted(positions)
    [trigger] = [c for c in kubeloop_commands(text) if c[1] == "trigger"]
    assert trigger[2] == "merge" and "--host" in trigger and "--wait" in trigger
    env = yaml.safe_load((WORKFLOWS / "train-on-merge.yaml").read_text())["jobs"]["train"]["env"]
    assert {"KUBELOOP_PIPELINE_IMAGE_REGISTRY", "KUBELOOP_PIPELINE_IMAGE_TAG"} <= set(env)


def test_the_kind_helm_test_predicts_an_entity_of_the_sample_data() -> None:
    from kubeloop.sample_data import GeneratorConfig, generate

    objects = render(load_values(CHART / "values-dev.yaml"))
    [config] = [
        o for o in objects if o["kind"] == "ConfigMap" and "smoke_test.py" in (o.get("data") or {})
    ]
    entity = yaml.safe_load(config["data"]["entity-request.json"])
    [record] = entity["records"]
    ids = set(generate(GeneratorConfig(rows=2_000, buildings=500))["building_id"])
    assert record == {"entity_id": 1001} and record["entity_id"] in ids
