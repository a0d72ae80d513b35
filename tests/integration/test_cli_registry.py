"""The registry commands a user runs first (`kubeloop versions`, `kubeloop lineage`) on a real
MLflow store with registered, promoted versions: a readable answer, never a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kubeloop.cli.main import app
from tests.utils.serving import Seeded


@pytest.fixture
def env(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seeded store and spec, as a user's shell would name them."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", seeded.tracking_uri)
    monkeypatch.setenv("KUBELOOP_WORK_DIR", str(seeded.work_dir))
    monkeypatch.setenv("KUBELOOP_SPEC", str(seeded.spec_path))


def test_versions_lists_every_version_with_its_name_and_aliases(seeded: Seeded, env: None) -> None:
    result = CliRunner().invoke(app, ["versions"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for number, label in enumerate(seeded.labels, start=1):
        [row] = [line for line in lines if label in line]
        assert str(number) in row.split(label)[0]
    assert "champion" in next(line for line in lines if seeded.labels[0] in line)
    assert "challenger" in next(line for line in lines if seeded.labels[-1] in line)


def test_versions_shows_where_each_version_is_in_its_rollout(seeded: Seeded, env: None) -> None:
    from kubeloop import model_store, registry

    client = model_store.configure(seeded.settings())
    last = str(len(seeded.labels))
    client.set_model_version_tag(seeded.model_name, last, registry.TAG_ROLLOUT_STATE, "rolled_back")
    try:
        result = CliRunner().invoke(app, ["versions"], catch_exceptions=False)
    finally:
        client.delete_model_version_tag(seeded.model_name, last, registry.TAG_ROLLOUT_STATE)
    assert result.exit_code == 0, result.output
    assert "rolled_back" in next(
        line for line in result.stdout.splitlines() if seeded.labels[-1] in line
    )


def test_lineage_shows_the_run_and_the_approval_of_a_version(seeded: Seeded, env: None) -> None:
    result = CliRunner().invoke(app, ["lineage", "champion"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seeded.labels[0] in result.output
    assert "MLflow run" in result.output
    assert "tests at" in result.output  # approved by the seeding's approver


def test_lineage_of_an_unknown_version_is_a_one_line_error(env: None) -> None:
    result = CliRunner().invoke(app, ["lineage", "V9.9.9"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.output.strip().startswith("error:")


def test_versions_of_a_model_never_registered_says_so(
    work_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = CliRunner().invoke(app, ["versions"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "has no registered versions yet" in result.output


@pytest.mark.parametrize("ref", ["V9.9.9", "champion", "no-such-run-or-alias"])
def test_data_restore_names_what_it_cannot_restore_in_one_line(ref: str, env: None) -> None:
    """By V-name, alias or run id, as lineage and promote take them; the seeded versions carry
    no dataset pointer, so even the champion's run has nothing to restore."""
    result = CliRunner().invoke(app, ["data", "restore", ref])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.strip().startswith("error:")
    assert ref in result.output
