"""Ingest from a SQL table or query on the machine's PostgreSQL: read in chunks, the same quality
gate, the same DVC versioning as a file, one-line errors naming the key to fix."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from components.ingest.core import ingest
from components.ingest.quality import QualityReport
from kubeloop import model_store, registry
from kubeloop.data_version import dataset_path
from kubeloop.errors import DataQualityError, SpecError
from kubeloop.settings import PlatformSettings
from kubeloop.spec import ProjectSpec, dump_spec, load_spec, parse_spec
from pipelines.runner import run_local
from tests.utils import services
from tests.utils.checks import assert_registered_with_full_run
from tests.utils.factories import EXAMPLE_SPEC, REPO, sample_frame

pytestmark = pytest.mark.services

ROWS = 3_000
CHUNK = 700  # several chunks: 700, 1400, 2100, 2800, 3000 rows read


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh PostgreSQL database holding the example's raw rows as table ``readings``."""
    with services.postgres_database() as url:
        engine = sa.create_engine(url)
        sample_frame(ROWS).to_sql("readings", engine, index=False)
        engine.dispose()
        yield url


def sql_spec(source: str, **data: object) -> ProjectSpec:
    """The example spec reading ``source`` (validated, as a spec file would be)."""
    raw = dump_spec(load_spec(EXAMPLE_SPEC))
    raw["data"] = {**raw["data"], "source": source, "chunk_rows": CHUNK, **data}
    return parse_spec(raw)


def test_a_table_is_read_in_chunks_checked_and_versioned_like_a_file(
    database, settings, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="kubeloop.sql_source")
    result = ingest(sql_spec(database, table="public.readings"), settings)
    assert result.rows == ROWS and result.report.passed
    progress = [r.getMessage() for r in caplog.records if "chunk" in r.getMessage()]
    assert len(progress) == 5 and progress[-1].endswith("chunk 5, 3000 rows read")
    assert "postgresql+psycopg://postgres@127.0.0.1" in progress[0]
    from_sql = pd.read_parquet(result.version.path)

    # The same rows from a Parquet file make the same dataset.
    raw = tmp_path / "readings.parquet"
    sample_frame(ROWS).to_parquet(raw, index=False)
    from_file = ingest(sql_spec(str(raw), chunk_rows=1), settings)
    pd.testing.assert_frame_equal(from_sql, pd.read_parquet(from_file.version.path))
    # Versioned by DVC: the pointer names the md5 and the remote holds the content.
    assert yaml.safe_load(result.version.pointer.read_text())["outs"][0]["md5"] == (
        result.version.md5
    )
    md5 = result.version.md5
    assert (Path(result.version.remote) / "files" / "md5" / md5[:2] / md5[2:]).is_file()


def test_a_query_is_ingested_with_placeholders_filled_where_it_runs(
    database, settings, monkeypatch
):
    user = sa.make_url(database).username
    monkeypatch.setenv("SOURCE_USER", user)
    monkeypatch.setenv("SOURCE_DB", sa.make_url(database).database)
    templated = sa.make_url(database).set(username="${SOURCE_USER}", database="${SOURCE_DB}")
    source = templated.render_as_string(hide_password=False)
    spec = sql_spec(source, query="SELECT * FROM readings WHERE building_id::int % 2 = 0")
    result = ingest(spec, settings)
    expected = sample_frame(ROWS).query("building_id % 2 == 0")
    assert result.rows == len(expected) and 0 < len(expected) < ROWS
    assert set(pd.read_parquet(result.version.path)["building_id"]) == set(expected.building_id)


def test_a_quality_violation_in_sql_data_stops_ingest_with_a_report(database, settings):
    engine = sa.create_engine(database)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE readings SET humidity_pct = 140 WHERE building_id < 1005"))
    engine.dispose()
    spec = sql_spec(database, table="readings")
    with pytest.raises(DataQualityError) as err:
        ingest(spec, settings)
    report = err.value.report
    assert isinstance(report, QualityReport)
    assert {(v.rule, v.column) for v in report.violations} == {("range", "humidity_pct")}
    assert "range [humidity_pct]: 300 row(s)" in err.value.message
    assert (settings.work_dir / "reports" / f"{spec.name}-data-quality.json").is_file()
    assert not dataset_path(settings, spec.name).exists()


@pytest.mark.parametrize(
    ("data", "field", "says"),
    [
        ({"table": "reading"}, "data.table", "no table reading in postgresql+psycopg://"),
        ({"table": "missing.readings"}, "data.table", "no table readings in schema missing"),
        ({"query": "SELECT nope FROM readings"}, "data.query", 'column "nope" does not exist'),
    ],
    ids=["misspelt-table", "missing-schema", "bad-query"],
)
def test_a_bad_table_or_query_is_a_one_line_error_naming_the_key(
    database, settings, data, field, says
):
    spec = sql_spec(database, **data)
    with pytest.raises(SpecError) as err:
        ingest(spec, settings)
    assert err.value.field == field
    assert err.value.message.startswith(f"{field}: ") and says in err.value.message
    assert "\n" not in err.value.message
    if data.get("table") == "reading":
        assert err.value.message.endswith("(did you mean readings?)")
    assert not dataset_path(settings, spec.name).exists()


def test_an_unreachable_database_names_data_source_and_hides_the_password(settings, monkeypatch):
    monkeypatch.setenv("SOURCE_PASSWORD", "s3cr#t/pw")
    source = "postgresql+psycopg://reader:${SOURCE_PASSWORD}@127.0.0.1:1/warehouse"
    with pytest.raises(SpecError) as err:
        ingest(sql_spec(source, table="readings"), settings)
    assert err.value.field == "data.source"
    assert err.value.message.startswith(
        "data.source: cannot reach the database at postgresql+psycopg://reader:***@127.0.0.1:1/"
    )
    assert "s3cr" not in err.value.message and "\n" not in err.value.message


def test_an_unset_placeholder_in_the_url_is_named(settings):
    spec = sql_spec("postgresql+psycopg://reader:${NOT_SET_ANYWHERE}@db/w", table="readings")
    with pytest.raises(SpecError, match=r"data.source: \$\{NOT_SET_ANYWHERE\} is not set"):
        ingest(spec, settings)


@pytest.mark.slow
def test_the_cli_reports_a_bad_table_in_one_line(database, work_dir, tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(dump_spec(sql_spec(database, table="no_such_table"))))
    proc = subprocess.run(
        [sys.executable, "-m", "kubeloop", "run", "training", "--spec", str(spec_file)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" not in proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("data.table: no table no_such_table in postgresql+psycopg://"), last


@pytest.mark.slow
def test_the_pipeline_trains_and_registers_from_a_postgresql_table(
    database, settings: PlatformSettings
):
    spec = sql_spec(database, table="readings")
    assert run_local(spec, settings).version == "V1.0.0"
    assert_registered_with_full_run(settings, spec.model_name, "V1.0.0")
    client = model_store.configure(settings)
    version = client.get_model_version_by_alias(spec.model_name, registry.CHALLENGER)
    # The version's data is exactly the table's rows, as ingest versions them.
    assert version.tags[registry.TAG_DATA] == ingest(spec, settings).version.md5
