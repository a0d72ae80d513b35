"""The quickstart notebook runs top to bottom in local mode: this is also the test of the whole
kfp.local pipeline on the embedded default (one pipeline run serves both)."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from kubeloop import model_store, registry
from tests.utils.checks import assert_registered_with_full_run
from tests.utils.factories import REPO


@pytest.mark.slow
def test_quickstart_notebook_runs_the_kfp_local_pipeline_on_the_embedded_default(
    settings, monkeypatch
):
    monkeypatch.setenv("KUBELOOP_QUICKSTART_ROWS", "3000")
    monkeypatch.delenv("KFP_HOST", raising=False)
    notebook = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    ).execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "registered V1.0.0" in outputs
    # One line per step as it runs, kfp.local's whole output in a file (it printed 400 lines)
    run_cell = next(c for c in notebook.cells if "run_local(" in "".join(c.source))
    printed = "".join(o.get("text", "") for o in run_cell.outputs)
    assert "done in" in printed and "full log:" in printed
    assert len(printed.splitlines()) < 30, printed
    assert "ran locally only" in outputs
    assert_registered_with_full_run(settings, "building-energy", "V1.0.0")
    assert (settings.work_dir / "feast" / "online.db").exists()
    assert any((settings.work_dir / "dvc-remote").rglob("*"))
    client = model_store.configure(settings)
    champion = registry.by_alias(client, "building-energy", registry.CHAMPION)
    assert champion.tags["kubeloop.approved_by"] == "notebook"
