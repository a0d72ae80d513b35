"""The Feast store, configured from settings (one code path for both backends).

Embedded default: file registry, SQLite online store, DuckDB offline store over Parquet files,
all under ``<work_dir>/feast``. Services: Redis online store
(``KUBELOOP_FEAST_ONLINE_STORE=redis``), a SQL registry on PostgreSQL
(``KUBELOOP_FEAST_REGISTRY=postgresql+psycopg://...``) and Feast's PostgreSQL offline store
(``KUBELOOP_FEAST_OFFLINE_STORE=postgresql+psycopg://...``), which every pipeline step and the
materialize job reach, where a Parquet file in one pod's work folder is seen by no other pod.
The definitions keep their ``FileSource``: with the PostgreSQL store each becomes a
``PostgreSQLSource`` over a table of the same name. ``render_yaml`` gives the same configuration
as a ``feature_store.yaml`` for Feast's own feature server.
"""

from __future__ import annotations

import copy
import csv
import importlib
import io
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kubeloop.settings import PlatformSettings
from kubeloop.spec import ProjectSpec

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


def feast_project(spec: ProjectSpec) -> str:
    """Feast project names allow letters, digits and underscores only."""
    return spec.name.replace("-", "_")


def repo_path(settings: PlatformSettings) -> Path:
    return settings.work_dir / "feast"


def repo_config(settings: PlatformSettings, project: str) -> dict[str, Any]:
    """The ``feature_store.yaml`` content for these settings."""
    root = repo_path(settings)
    if settings.feast_registry:
        registry: dict[str, Any] = {
            "registry_type": "sql",
            "path": settings.feast_registry,
            "cache_ttl_seconds": 60,
        }
    else:
        registry = {"registry_type": "file", "path": str(root / "registry.db")}
    if settings.feast_online_store == "redis":
        online: dict[str, Any] = {"type": "redis", "connection_string": settings.redis_url}
    else:
        online = {"type": "sqlite", "path": str(root / "online.db")}
    return {
        "project": project,
        "provider": "local",
        "registry": registry,
        "online_store": online,
        "offline_store": offline_config(settings),
        "entity_key_serialization_version": 3,
    }


def offline_config(settings: PlatformSettings) -> dict[str, Any]:
    """DuckDB over local Parquet, or Feast's PostgreSQL offline store from a SQLAlchemy URL."""
    if not settings.feast_offline_store:
        return {"type": "duckdb"}
    from sqlalchemy.engine import make_url

    url = make_url(settings.feast_offline_store)
    if not url.drivername.startswith("postgresql") or not url.database:
        raise ValueError(
            "KUBELOOP_FEAST_OFFLINE_STORE must be a PostgreSQL URL with a database "
            "(postgresql+psycopg://user:password@host:5432/feast)"
        )
    return {
        "type": "postgres",
        "host": url.host or "localhost",
        "port": url.port or 5432,
        "database": url.database,
        "db_schema": str(url.query.get("schema", "public")),
        "user": url.username or "",
        "password": url.password or "",
        "sslmode": str(url.query.get("sslmode", "prefer")),
    }


def offline_table(source_name: str) -> str:
    """The PostgreSQL table that holds a source's rows (a safe SQL identifier)."""
    return "kubeloop_" + re.sub(r"[^0-9a-z_]", "_", source_name.lower())


def render_yaml(settings: PlatformSettings, project: str) -> str:
    return yaml.safe_dump(repo_config(settings, project), sort_keys=False)


def open_store(settings: PlatformSettings, spec: ProjectSpec):
    """A ``FeatureStore`` for the spec's project on the configured backends."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    root = repo_path(settings)
    root.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(repo_path=root, **repo_config(settings, feast_project(spec)))
    return FeatureStore(config=config)


def definitions(spec: ProjectSpec, settings: PlatformSettings) -> list[Any]:
    """Every Feast object (entities, sources, views, services) of the spec: generated from its
    declared features, or found in its definitions module.

    Relative file-source paths are made absolute under the repo path (DuckDB reads them from the
    process's working directory otherwise). The module's objects are copied, not changed, so
    one process can hold stores of several work folders.
    """
    from feast import Entity, FeatureService, FeatureView, FileSource
    from feast.data_source import DataSource

    if spec.features.declared is not None:
        from kubeloop.declared_features import feast_objects

        objects = feast_objects(spec)
    else:
        module = importlib.import_module(spec.features.definitions or "")
        kinds = (Entity, DataSource, FeatureView, FeatureService)
        objects = copy.deepcopy([obj for obj in vars(module).values() if isinstance(obj, kinds)])
    if settings.feast_offline_store:
        return _on_postgres(objects)
    root = repo_path(settings)
    sources = [o for o in objects if isinstance(o, FileSource)]
    sources += [
        o.batch_source
        for o in objects
        if isinstance(o, FeatureView) and isinstance(o.batch_source, FileSource)
    ]
    for source in sources:
        if not Path(source.path).is_absolute():
            source.file_options.uri = str(root / source.path)
    return objects


def _on_postgres(objects: list[Any]) -> list[Any]:
    """The same objects with every ``FileSource`` replaced by a ``PostgreSQLSource`` (the
    source's name, timestamps and mapping kept; its table from ``offline_table``)."""
    from feast import FeatureView, FileSource
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
        PostgreSQLSource,
    )

    def swap(source: Any) -> Any:
        if not isinstance(source, FileSource):
            return source
        return PostgreSQLSource(
            name=source.name,
            table=offline_table(source.name),
            timestamp_field=source.timestamp_field,
            created_timestamp_column=source.created_timestamp_column,
            field_mapping=source.field_mapping,
            description=source.description,
            tags=source.tags,
            owner=source.owner,
        )

    swapped = [swap(o) for o in objects]
    for view in swapped:
        if isinstance(view, FeatureView):
            view.batch_source = swap(view.batch_source)
    return swapped


def write_offline(store: Any, view: Any, frame: pd.DataFrame, settings: PlatformSettings) -> str:
    """Replace a view's offline rows with ``frame``; returns where they went (path or table)."""
    from feast.infra.offline_stores.file_source import FileSource

    source = view.batch_source
    if isinstance(source, FileSource):
        path = Path(FileSource.get_uri_for_file_path(store.config.repo_path, source.path))
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
        return str(path)
    import sqlalchemy

    table = offline_table(source.name)
    engine = sqlalchemy.create_engine(settings.feast_offline_store or "")
    try:
        frame.to_sql(
            table, engine, if_exists="replace", index=False, chunksize=10_000, method=copy_rows
        )
    finally:
        engine.dispose()
    return f"table {table}"


def copy_rows(table: Any, conn: Any, keys: list[str], data_iter: Any) -> int:
    """pandas' ``to_sql`` insertion through ``COPY ... FROM STDIN`` (psycopg 3), the method
    pandas documents for PostgreSQL: its INSERTs took most of the features step at 1M rows.
    pandas hands over rows with NaN as None (NULL) and timestamps as datetimes, one chunk per
    call, all in one transaction: a chunk's rows and text, not the whole view's, are held."""
    rows = list(data_iter)
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    columns = ", ".join(f'"{key}"' for key in keys)
    name = f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
    with (
        conn.connection.driver_connection.cursor() as cursor,
        cursor.copy(f"COPY {name} ({columns}) FROM STDIN WITH (FORMAT csv)") as copy,
    ):
        copy.write(buffer.getvalue())
    return len(rows)


def joins_as_of(store: Any, views: list[tuple[Any, list[str]]]) -> bool:
    """Whether ``asof_join`` can serve these views: every source a Parquet file of the
    embedded DuckDB store, or a table of the PostgreSQL store, without a field mapping."""
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
        PostgreSQLSource,
    )
    from feast.infra.offline_stores.file_source import FileSource

    kind = {"duckdb": FileSource, "postgres": PostgreSQLSource}.get(store.config.offline_store.type)
    return kind is not None and all(
        isinstance(view.batch_source, kind) and not view.batch_source.field_mapping
        for view, _ in views
    )


def offline_rows(
    store: Any, view: Any, names: list[str], start: datetime, end: datetime
) -> str | pa.Table:
    """What ``asof_join`` reads for a view: its Parquet file on the embedded store; on
    PostgreSQL, the view's rows a join of labels from ``start`` to ``end`` can pick (those of
    the TTL before ``start`` included), pulled through Feast's offline store as the
    materialization does: one scan of the table, whatever the rows per entity."""
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import (
        PostgreSQLOfflineStore,
    )
    from feast.infra.offline_stores.file_source import FileSource

    source = view.batch_source
    if isinstance(source, FileSource):
        return FileSource.get_uri_for_file_path(store.config.repo_path, source.path)
    return PostgreSQLOfflineStore.pull_all_from_table_or_query(
        config=store.config,
        data_source=source,
        join_key_columns=[e.name for e in view.entity_columns],
        feature_name_columns=names,
        timestamp_field=source.timestamp_field,
        start_date=start - view.ttl if view.ttl else datetime(1970, 1, 1, tzinfo=UTC),
        end_date=end,
    ).to_arrow()


def asof_join(
    entity_df: pd.DataFrame,
    views: list[tuple[Any, list[str], str | pa.Table]],
    timestamp: str,
) -> pd.DataFrame:
    """Feast's point-in-time join as one DuckDB ``ASOF LEFT JOIN`` per view.

    Each entity row gets the latest feature row of its key at or before its time, none when
    that row is older than the view's TTL: Feast's semantics. Feast's own joins pair every
    label with every feature row of its entity inside the TTL and keep the newest (its DuckDB
    store in ibis, its PostgreSQL store in SQL), so their cost grows with rows times rows per
    entity (21x the time for 10x the rows in ``bench/pipeline.py``); an as-of join sorts once
    and grows with the rows.

    Args:
        entity_df: The labels: join keys, ``timestamp`` (UTC) and anything else, kept.
        views: (FeatureView, feature names, its rows from ``offline_rows``: a Parquet path or
            an Arrow table) triples, in output order.
        timestamp: The entity rows' event-time column.
    """
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("entities", entity_df)
        current = "entities"
        for i, (view, names, rows) in enumerate(views):
            source = view.batch_source
            if isinstance(rows, str):
                relation, parameters = "read_parquet(?)", [rows]
            else:
                relation, parameters = f"rows_{i}", []
                con.register(relation, rows)
            keys = view.projection.join_key_map or {e.name: e.name for e in view.entity_columns}
            on = " AND ".join(f'e."{v}" = f."{k}"' for k, v in keys.items())
            ts = source.timestamp_field
            fresh = (
                f'f."{ts}" >= e."{timestamp}" - INTERVAL \'{view.ttl.total_seconds()} seconds\''
                if view.ttl
                else "TRUE"
            )
            picked = ", ".join(f'CASE WHEN {fresh} THEN f."{n}" END AS "{n}"' for n in names)
            con.execute(
                f"CREATE TEMP TABLE joined_{i} AS SELECT e.*, {picked} FROM {current} e "
                f'ASOF LEFT JOIN {relation} f ON {on} AND e."{timestamp}" >= f."{ts}"',
                parameters,
            )
            current = f"joined_{i}"
        return con.execute(f"SELECT * FROM {current}").df()
    finally:
        con.close()
