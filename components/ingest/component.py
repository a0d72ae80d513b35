"""kfp component of the ingest step (interface only; the work is in ``core``)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Output

from kubeloop.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def ingest(
    spec: str,
    source: str,
    dataset: Output[Dataset],
) -> NamedTuple("IngestOutputs", data_version=str, dvc_pointer=str, rows=int):
    """Check raw data against the spec and version it with DVC.

    Args:
        spec: The project spec as JSON (validated again here).
        source: CSV or Parquet path or URL; empty means the spec's ``data.source``.
        dataset: The clean dataset (Parquet).

    Returns:
        data_version: DVC md5 of the dataset.
        dvc_pointer: The ``.dvc`` file that restores exactly this data.
        rows: Number of rows.
    """
    from collections import namedtuple

    from components.ingest.core import run_step
    from components.step import prepare

    project, settings = prepare(spec)
    out = run_step(project, settings, source, dataset.path)
    dataset.metadata.update({"rows": out["rows"], "dvc_md5": out["md5"]})
    outputs = namedtuple("IngestOutputs", ["data_version", "dvc_pointer", "rows"])
    return outputs(out["md5"], out["pointer"], out["rows"])
