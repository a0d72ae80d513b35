"""Ingest: read a file or a SQL table/query, check quality, write the dataset, version it (DVC)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from components.ingest.quality import QualityReport, check_quality, check_rules, normalize
from kubeloop import production_labels
from kubeloop.data_version import SOURCE_ROWS, DataVersion, dataset_path, version_file
from kubeloop.errors import DataQualityError, SpecError
from kubeloop.settings import PlatformSettings
from kubeloop.spec import ProjectSpec, resolve_source
from kubeloop.sql_source import read_sql_source, reads_sql

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    version: DataVersion
    report: QualityReport
    rows: int


def read_dataset(source: str, settings: PlatformSettings) -> pd.DataFrame:
    """Read a CSV or Parquet file from a path or an object-store URL (s3://, gs://, ...).

    ``${VAR}`` placeholders resolve here, where the step runs; ``s3://`` URLs go to the
    configured S3 endpoint (``KUBELOOP_S3_ENDPOINT_URL``).
    """
    import fsspec

    source = resolve_source(source, settings)
    lowered = source.lower().split("?")[0]
    fs, path = fsspec.core.url_to_fs(source, **(settings.storage_options(source) or {}))
    if not fs.exists(path):
        raise SpecError(
            f"data.source: {source} does not exist (run `kubeloop data generate` for sample data)",
            field="data.source",
        )
    if lowered.endswith((".parquet", ".pq")) or fs.isdir(path):
        return pd.read_parquet(path, filesystem=fs)
    if lowered.endswith((".csv", ".csv.gz")):
        with fs.open(path, compression="infer") as fh:
            return pd.read_csv(fh)
    raise SpecError(f"data.source: {source} must be .csv or .parquet", field="data.source")


def report_path(settings: PlatformSettings, spec: ProjectSpec) -> Path:
    """Where the latest data-quality report of a project is kept (JSON)."""
    return settings.work_dir / "reports" / f"{spec.name}-data-quality.json"


def save_report(report: QualityReport, settings: PlatformSettings, spec: ProjectSpec) -> Path:
    path = report_path(settings, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    return path


def logged_rows(
    spec: ProjectSpec, settings: PlatformSettings, now: datetime | None = None
) -> pd.DataFrame:
    """The served predictions of the last ``retraining.labelled_hours`` with their ground
    truth (production's where the log holds any: ``production_labels.labelled_models``), read
    from the prediction log (``KUBELOOP_PREDICTION_LOG_URL``: the store monitoring
    reads) and checked like any data: a broken rule stops the run with its report."""
    from kubeloop.log_store import make_engine

    hours = spec.retraining.labelled_hours
    if not hours:
        return pd.DataFrame()
    end = now or datetime.now(UTC)
    engine = make_engine(settings.log_url)
    try:
        model, labelled = production_labels.read_production_labelled(
            engine, spec, end - timedelta(hours=hours), end
        )
    finally:
        engine.dispose()
    rows = production_labels.training_rows(labelled, spec)
    report = check_rules(rows, production_labels.rules(spec, rows))
    if not report.passed:
        raise stopped(
            report, f"the labelled predictions of the last {hours:g} h break", spec, settings
        )
    log.info(
        "%d labelled predictions of %s of the last %g h from the prediction log "
        "(%d repeats of an entity, its features and label left out)",
        len(rows),
        model or "no model",
        hours,
        len(labelled) - len(rows),
    )
    return production_labels.as_declared_types(rows, spec)


def stopped(
    report: QualityReport, what: str, spec: ProjectSpec, settings: PlatformSettings
) -> DataQualityError:
    """The error that stops ingest: ``what`` broke how many rules, the report, where it is
    saved (source rows and production's labelled rows alike)."""
    saved = save_report(report, settings, spec)
    return DataQualityError(
        f"ingest stopped: {what} {len(report.violations)} rule(s)\n"
        f"{report.render()}\nreport: {saved}",
        report,
    )


def ingest(
    spec: ProjectSpec, settings: PlatformSettings, source: str | None = None
) -> IngestResult:
    """Check the raw data; on success write it as Parquet and version it, else raise a report.

    With ``retraining.labelled_hours`` the dataset also holds production's labelled rows of
    that window (``kubeloop.production_labels``), versioned with it.
    """
    source = source or spec.data.source
    if reads_sql(source, spec.data):
        raw = read_sql_source(source, spec.data, settings)
    else:
        raw = read_dataset(source, settings)
    report = check_quality(raw, spec)
    log.info(report.render())
    if not report.passed:
        raise stopped(report, "the data breaks", spec, settings)
    clean = normalize(raw, spec)
    from_source = len(clean)
    logged = logged_rows(spec, settings)
    if len(logged):
        clean = pd.concat(
            [clean.assign(**{production_labels.ORIGIN: production_labels.FROM_SOURCE}), logged],
            ignore_index=True,
        )
    path = dataset_path(settings, spec.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean.to_parquet(path, index=False)
    version = version_file(settings, path, meta={SOURCE_ROWS: from_source})
    log.info("dataset %s: %d rows, DVC md5 %s", spec.name, len(clean), version.md5)
    return IngestResult(version=version, report=report, rows=len(clean))


def run_step(spec: ProjectSpec, settings: PlatformSettings, source: str, out_path: str) -> dict:
    """The ingest step as a pipeline sees it: data in, versioned dataset out."""
    result = ingest(spec, settings, source or None)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_bytes(result.version.path.read_bytes())
    return {
        "md5": result.version.md5,
        "pointer": result.version.pointer.read_text(),
        "rows": result.rows,
    }
