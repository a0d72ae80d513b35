"""The new-data trigger: enough new rows at the source, counted against the last trained data
version (``monitoring.new_source_rows`` in the spec; ``kubeloop trigger new-data``).

Rows are counted as ingest keeps them (read, then normalized) on both sides: the source now, and
the dataset the newest registered version was trained on, as ingest recorded it in the DVC
pointer its MLflow run logged (``meta``), so the count is against the data version, not a
guess, and a check does not pull the whole dataset from the remote.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from kubeloop.settings import PlatformSettings
from kubeloop.spec import ProjectSpec


def new_rows_reason(
    source_rows: int, trained_rows: int | None, threshold: int | None
) -> str | None:
    """Why enough new rows call for training, or None.

    ``trained_rows`` is the row count of the last trained data version (None: nothing trained
    yet, so any data is new). Fewer rows than trained (a source rewritten) count as no new rows.
    """
    if threshold is None:
        return None
    if trained_rows is None:
        return f"new data: {source_rows:,} rows at the source and no trained data version yet"
    new = source_rows - trained_rows
    if new < threshold:
        return None
    return f"new data: {new:,} rows since the last trained data version (threshold {threshold:,})"


def source_rows(spec: ProjectSpec, settings: PlatformSettings, source: str | None = None) -> int:
    """Rows at the source as ingest would keep them (read, then normalized)."""
    from components.ingest.core import read_dataset
    from components.ingest.quality import normalize
    from kubeloop.sql_source import read_sql_source, reads_sql

    source = source or spec.data.source
    raw = (
        read_sql_source(source, spec.data, settings)
        if reads_sql(source, spec.data)
        else read_dataset(source, settings)
    )
    return len(normalize(raw, spec))


def trained_rows(client, spec: ProjectSpec, settings: PlatformSettings) -> int | None:
    """Rows of the data source the newest registered version was trained on (production's
    labelled rows versioned with them are not the source's): from its DVC pointer's ``meta``,
    or, for a pointer written before ingest recorded them, counted in the restored dataset."""
    import mlflow

    from kubeloop import registry
    from kubeloop.data_version import SOURCE_ROWS, pointer_meta

    versions = registry.all_versions(client, spec.model_name)
    if not versions:
        return None
    newest = max(versions, key=lambda v: int(v.version))
    pointer = mlflow.artifacts.load_text(f"runs:/{newest.run_id}/data/dataset.parquet.dvc")
    recorded = pointer_meta(pointer).get(SOURCE_ROWS)
    if recorded is not None:
        return int(recorded)
    return restored_source_rows(settings, pointer)


def restored_source_rows(settings: PlatformSettings, pointer: str) -> int:
    """Rows from the source in the dataset a pointer names, pulled from the DVC remote."""
    from kubeloop import production_labels
    from kubeloop.data_version import checkout

    with tempfile.TemporaryDirectory(prefix="kubeloop-rows-") as tmp:
        path = checkout(settings, pointer, Path(tmp) / "dataset.parquet")
        return production_labels.source_rows(path)
