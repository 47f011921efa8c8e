"""``events sql "SELECT ..."``: DuckDB over the whole store, read-only.

The view ``events`` is every lake file listed in ``lake_files`` plus every hot row, taken
from one PostgreSQL snapshot (so nothing is counted twice while a compaction runs). The
session cannot reach PostgreSQL, and DuckDB may read only the listed lake files: no other
file can be read, attached or written.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO, Any

import asyncpg
import duckdb
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv

from storage.arrow_copy import copy_to_arrow
from storage.db import connect
from storage.lake import HOT_ROWS_COLUMNS, HOT_ROWS_SQL, Lake, to_lake_table

COLUMNS = "event_id, occurred_at, user_id, event_type, properties, received_at, batch_id"


async def snapshot(database_url: str, lake: Lake) -> tuple[list[str], pa.Table]:
    """The lake files and the hot rows, from one snapshot."""
    conn = await connect(database_url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute("LOCK TABLE events IN ACCESS SHARE MODE")
            files = [
                str(lake.absolute(r["path"]))
                for r in await conn.fetch("SELECT path FROM lake_files ORDER BY path")
            ]
            hot = to_lake_table(await copy_to_arrow(conn, HOT_ROWS_SQL, columns=HOT_ROWS_COLUMNS))
    except (OSError, asyncpg.PostgresError) as ex:
        raise SystemExit(f"events sql: cannot read the hot rows from PostgreSQL: {ex}") from ex
    finally:
        await conn.close()
    return files, hot


def open_session(files: Sequence[str], hot: pa.Table) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the view ``events``, locked down to the listed files."""
    con = duckdb.connect(":memory:")
    con.register("hot_events", hot)
    parts = [f"SELECT {COLUMNS} FROM hot_events"]
    if files:
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        parts.insert(0, f"SELECT {COLUMNS} FROM read_parquet([{listed}])")
    con.execute("CREATE VIEW events AS " + " UNION ALL ".join(parts))
    con.execute("SET allowed_paths = $1", [list(files)])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _json_default(value: Any) -> str:
    return str(value)


def print_result(
    con: duckdb.DuckDBPyConnection, query: str, fmt: str, out: IO[str] = sys.stdout
) -> None:
    relation = con.sql(query)
    if relation is None:  # a statement without a result (SET, CREATE ...)
        return
    if fmt == "csv":
        sink = pa.BufferOutputStream()
        result = relation.arrow()  # a RecordBatchReader since DuckDB 2.0
        table = result.read_all() if isinstance(result, pa.RecordBatchReader) else result
        pacsv.write_csv(table, sink)
        out.write(sink.getvalue().to_pybytes().decode())
    elif fmt == "json":
        names = relation.columns
        rows = [dict(zip(names, row, strict=True)) for row in relation.fetchall()]
        out.write(orjson.dumps(rows, default=_json_default, option=orjson.OPT_INDENT_2).decode())
        out.write("\n")
    else:
        out.write(str(relation))
