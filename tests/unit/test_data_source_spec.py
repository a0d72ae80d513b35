"""data.source as a SQLAlchemy URL: table or query, no password in the spec, placeholders."""

from __future__ import annotations

import pytest

from kubeloop.errors import SpecError
from kubeloop.settings import PlatformSettings
from kubeloop.spec import dump_spec, is_database_url, load_spec, parse_spec
from kubeloop.sql_source import database_url, read_sql_source
from tests.utils.factories import EXAMPLE_SPEC

WAREHOUSE = "redshift+redshift_connector://reader@cluster.example.com:5439/dev"


def spec_with(**data: object):
    raw = dump_spec(load_spec(EXAMPLE_SPEC))
    raw["data"] = {**raw["data"], **data}
    return parse_spec(raw)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("postgresql+psycopg://u@h/db", True),
        (WAREHOUSE, True),
        ("sqlite:///data.db", True),
        ("/data/raw.parquet", False),
        ("s3://bucket/raw.csv", False),
        ("file:///data/raw.csv", False),
        ("simplecache::s3://bucket/raw.csv", False),
        ("${KUBELOOP_WORK_DIR}/raw/x.parquet", None),
        ("${WAREHOUSE_URL}", None),
    ],
)
def test_a_database_url_is_told_from_a_file(source, expected):
    assert is_database_url(source) is expected


def test_a_warehouse_table_or_query_is_a_valid_source():
    assert spec_with(source=WAREHOUSE, table="analytics.readings").data.table == (
        "analytics.readings"
    )
    spec = spec_with(source="${WAREHOUSE_URL}", query="SELECT * FROM readings")
    assert spec.data.query == "SELECT * FROM readings" and spec.data.chunk_rows == 50_000


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"source": WAREHOUSE}, "data.source is a database URL: give data.table or data.query"),
        (
            {"source": WAREHOUSE, "table": "t", "query": "SELECT 1"},
            "give data.table or data.query, not both",
        ),
        ({"source": "/data/raw.csv", "table": "t"}, "data.table needs a database URL"),
        ({"source": "s3://b/raw.csv", "query": "SELECT 1"}, "data.query needs a database URL"),
        (
            {"source": "postgresql+psycopg://reader:hunter2@db/w", "table": "t"},
            "data.source: no password in the spec",
        ),
        ({"source": WAREHOUSE, "table": "t", "chunk_rows": 0}, "chunk_rows"),
    ],
    ids=["neither", "both", "table-on-a-file", "query-on-s3", "password", "chunk-rows"],
)
def test_a_bad_database_source_names_the_key(data, says):
    with pytest.raises(SpecError, match="is invalid") as err:
        spec_with(**data)
    assert says in err.value.message
    assert "hunter2" not in err.value.message


def test_placeholders_fill_each_part_of_the_url_so_a_password_needs_no_escaping(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("DB_PASSWORD", "p@ss/w:rd#1")
    monkeypatch.setenv("DB_HOST", "db.internal")
    settings = PlatformSettings(work_dir=tmp_path)
    url = database_url(
        "postgresql+psycopg://reader:${DB_PASSWORD}@${DB_HOST}:5432/w?sslmode=require", settings
    )
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "reader",
        "p@ss/w:rd#1",
        "db.internal",
        5432,
        "w",
    )
    assert url.query == {"sslmode": "require"}


def test_a_placeholder_for_the_whole_url_is_parsed_after_filling(monkeypatch, tmp_path):
    monkeypatch.setenv("WAREHOUSE_URL", WAREHOUSE)
    url = database_url("${WAREHOUSE_URL}", PlatformSettings(work_dir=tmp_path))
    assert url.drivername == "redshift+redshift_connector" and url.port == 5439
    monkeypatch.setenv("WAREHOUSE_URL", "not a url")
    with pytest.raises(SpecError, match=r"data.source: \$\{WAREHOUSE_URL\} is not a database URL"):
        database_url("${WAREHOUSE_URL}", PlatformSettings(work_dir=tmp_path))


def test_a_warehouse_without_its_driver_installed_says_which_package_is_missing(tmp_path):
    spec = spec_with(source=WAREHOUSE, table="readings")
    with pytest.raises(SpecError) as err:
        read_sql_source(spec.data.source, spec.data, PlatformSettings(work_dir=tmp_path))
    assert err.value.field == "data.source"
    assert err.value.message.startswith(
        "data.source: no SQLAlchemy driver for redshift+redshift_connector here"
    )
