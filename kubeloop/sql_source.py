"""Raw data from a SQL table or query, read through SQLAlchemy in chunks.

Any database SQLAlchemy has a dialect for is reached by its URL: PostgreSQL through psycopg
here, a warehouse such as Redshift (``redshift+redshift_connector://...``) once its dialect
package is in the pipeline image. Nothing below is specific to one database. Rows come through
a server-side cursor (``stream_results``), ``data.chunk_rows`` at a time, so neither the driver
nor pandas holds more than one chunk of unconverted rows; the frames are then concatenated into
the dataset that ingest checks and versions like a file. The read runs in a transaction that is
rolled back, so a query cannot change the database.

Credentials never sit in the spec: ``${VAR}`` placeholders in the URL are filled from the
environment where the step runs, each part of the URL on its own, so a password needs no
URL escaping.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from kubeloop.errors import SpecError
from kubeloop.settings import PlatformSettings
from kubeloop.spec import DataSpec, is_database_url, resolve_source

log = logging.getLogger(__name__)


def database_url(source: str, settings: PlatformSettings) -> URL:
    """``source`` as a SQLAlchemy URL, its ``${VAR}`` placeholders filled part by part."""
    try:
        template = make_url(source)
    except ArgumentError:  # a placeholder stands for the whole URL, the driver or the port
        return _parse(resolve_source(source, settings), shown=source)

    def fill(part: str | None) -> str | None:
        return None if part is None else resolve_source(part, settings)

    return template.set(
        username=fill(template.username),
        password=fill(template.password),
        host=fill(template.host),
        database=fill(template.database),
        query={
            k: resolve_source(v, settings) if isinstance(v, str) else v
            for k, v in template.query.items()
        },
    )


def _parse(url: str, *, shown: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise SpecError(
            f"data.source: {shown} is not a database URL (dialect+driver://user@host/db)",
            field="data.source",
        ) from None


def reads_sql(source: str, data: DataSpec) -> bool:
    """Whether ``source`` is read here: a database URL, or a URL whose scheme is a ``${VAR}``
    placeholder, given with data.table or data.query."""
    database = is_database_url(source)
    if database is None:
        return data.table is not None or data.query is not None
    return database


def read_sql_source(source: str, data: DataSpec, settings: PlatformSettings) -> pd.DataFrame:
    """The rows of ``data.table`` or ``data.query`` at the database ``source``.

    Every failure is a one-line ``SpecError`` naming the key to fix: the database cannot be
    reached (``data.source``), the table does not exist (``data.table``), the database refused
    the query (``data.query``). The password is never shown.
    """
    if data.table is None and data.query is None:
        raise SpecError(
            "data.table: a database source needs data.table or data.query", field="data.table"
        )
    url = database_url(source, settings)
    shown = url.render_as_string(hide_password=True)
    try:
        engine = sa.create_engine(url)
    except (NoSuchModuleError, ImportError) as exc:
        raise SpecError(
            f"data.source: no SQLAlchemy driver for {url.drivername} here ({exc}); install "
            "its package in the pipeline image",
            field="data.source",
        ) from None
    try:
        try:
            conn = engine.connect()
        except DBAPIError as exc:
            raise SpecError(
                f"data.source: cannot reach the database at {shown}: {_reason(exc)}",
                field="data.source",
            ) from None
        field = "data.table" if data.table is not None else "data.query"
        with conn:
            conn.begin()  # pandas then leaves the transaction alone; closing rolls it back
            streaming = conn.execution_options(stream_results=True, max_row_buffer=data.chunk_rows)
            try:
                return _concat(_chunks(streaming, data, shown), shown)
            except DBAPIError as exc:
                raise SpecError(
                    f"{field}: reading it from {shown} failed: {_reason(exc)}", field=field
                ) from None
    finally:
        engine.dispose()


def _chunks(conn: sa.Connection, data: DataSpec, shown: str) -> Iterator[pd.DataFrame]:
    if data.table is None:
        yield from pd.read_sql_query(sa.text(data.query or ""), conn, chunksize=data.chunk_rows)
        return
    schema, _, name = data.table.rpartition(".")
    _check_table(conn, name, schema or None, shown)
    yield from pd.read_sql_table(name, conn, schema=schema or None, chunksize=data.chunk_rows)


def _check_table(conn: sa.Connection, name: str, schema: str | None, shown: str) -> None:
    inspector = sa.inspect(conn)
    if inspector.has_table(name, schema=schema):
        return
    known = inspector.get_table_names(schema=schema) + inspector.get_view_names(schema=schema)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    where = f"schema {schema} of " if schema else ""
    raise SpecError(f"data.table: no table {name} in {where}{shown}{hint}", field="data.table")


def _concat(chunks: Iterator[pd.DataFrame], shown: str) -> pd.DataFrame:
    frames: list[pd.DataFrame] = []
    rows = 0
    for number, chunk in enumerate(chunks, start=1):
        frames.append(chunk)
        rows += len(chunk)
        log.info("data.source %s: chunk %d, %d rows read", shown, number, rows)
    return pd.concat(frames, ignore_index=True)


def _reason(exc: DBAPIError) -> str:
    """The driver's own message, first line only (the SQL and its parameters stay out)."""
    return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
