"""``events sql "SELECT ..."``: DuckDB over the whole store, read-only.

The view ``events`` is every lake file listed in ``lake_files`` plus every hot row, taken
from one PostgreSQL snapshot (so nothing is counted twice while a compaction runs).

The session reads those files and those rows, and nothing else, and writes nothing:

- DuckDB gets no file system at all (``enable_external_access = false`` with no allowed
  paths): it cannot read, write, attach, export or install anything. ``allowed_paths`` is
  not used because it lets DuckDB write the paths it lets it read (``COPY ... TO`` a lake
  file replaced it). The lake files reach DuckDB as a pyarrow dataset over exactly the
  listed files, opened here (DuckDB still pushes projections and filters into the scan),
  and the hot rows as an Arrow table.
- No temporary directory (``temp_directory = ''``): a query that does not fit in memory
  fails instead of spilling into ``<cwd>/.tmp``. No extension is autoloaded or installed,
  Python variables are not scanned, and the configuration is locked.
- Only statements that read are run (``check_read_only``): anything else is refused with
  a message before DuckDB sees it, so the refusal does not depend on DuckDB's error for
  each form of write.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import IO, Any

import asyncpg
import duckdb
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

from storage.arrow_copy import copy_to_arrow
from storage.db import connect
from storage.lake import (
    HOT_ROWS_COLUMNS,
    HOT_ROWS_SQL,
    LAKE_SCHEMA,
    Lake,
    LakeUnreadable,
    check_schema,
    check_size,
    to_lake_table,
)

COLUMNS = "event_id, occurred_at, user_id, event_type, properties, received_at, batch_id"

# Every setting is given when the database opens, before anything can run.
LOCKED_DOWN: dict[str, Any] = {
    "enable_external_access": False,
    "temp_directory": "",
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "python_enable_replacements": False,
    "lock_configuration": True,
}

READS = "SELECT, FROM, WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE, or EXPLAIN of one of them"
_LEADING = r"(?:\s|--[^\n]*(?:\n|$)|/\*.*?\*/)*"  # white space and comments
_FIRST_WORD = re.compile(_LEADING + r"(\w+)", re.S)
_EXPLAIN = re.compile(_LEADING + r"explain\b(?:\s*\([^)]*\))?(?:\s+analy[sz]e\b)?", re.S | re.I)


class NotARead(Exception):
    """A statement ``events sql`` refuses to run: it is not a query that only reads."""


def _first_word(text: str) -> str:
    word = _FIRST_WORD.match(text)
    return word.group(1).upper() if word else "?"


def _kind(statement: duckdb.Statement) -> duckdb.StatementType | None:
    try:
        return statement.type
    except ValueError:  # a type the Python API has no name for (UPDATE EXTENSIONS)
        return None


def _refused(what: str) -> NotARead:
    return NotARead(f"refused {what}: events sql runs only queries that read ({READS})")


def check_read_only(query: str) -> None:
    """Raise ``NotARead`` unless every statement of ``query`` only reads.

    ``duckdb.ParserException`` for text that does not parse.
    """
    statements = duckdb.extract_statements(query)
    if not statements:
        raise NotARead(f"no statement given: events sql runs queries that read ({READS})")
    for statement in statements:
        kind = _kind(statement)
        if kind == duckdb.StatementType.EXPLAIN:
            # EXPLAIN ANALYZE runs what it explains: look at that statement too.
            prefix = _EXPLAIN.match(statement.query)
            if prefix is None:
                raise _refused("EXPLAIN")
            inner = statement.query[prefix.end() :]
            try:
                explained = duckdb.extract_statements(inner)
            except duckdb.ParserException:
                raise _refused("EXPLAIN " + _first_word(inner)) from None
            if [_kind(s) for s in explained] != [duckdb.StatementType.SELECT]:
                raise _refused("EXPLAIN " + _first_word(inner))
        elif kind != duckdb.StatementType.SELECT:
            raise _refused(_first_word(statement.query))


async def snapshot(database_url: str, lake: Lake) -> tuple[list[str], pa.Table]:
    """The lake files and the hot rows, from one snapshot.

    Raises ``LakeUnreadable`` when a listed file is missing or not of its recorded size.
    """
    conn = await connect(database_url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute("LOCK TABLE events IN ACCESS SHARE MODE")
            listed = [
                (str(lake.absolute(r["path"])), int(r["bytes"]))
                for r in await conn.fetch("SELECT path, bytes FROM lake_files ORDER BY path")
            ]
            hot = to_lake_table(await copy_to_arrow(conn, HOT_ROWS_SQL, columns=HOT_ROWS_COLUMNS))
    except (OSError, asyncpg.PostgresError) as ex:
        raise SystemExit(f"events sql: cannot read the hot rows from PostgreSQL: {ex}") from ex
    finally:
        await conn.close()
    for path, size in listed:
        check_size(path, size)
    return [path for path, _ in listed], hot


def lake_dataset(files: Sequence[str]) -> ds.Dataset:
    """Exactly these Parquet files, each checked to have the lake's schema.

    Raises ``LakeUnreadable``. A dataset with a schema fills columns a file lacks with
    NULLs, so a foreign file would otherwise read as rows of NULLs; each footer is read
    once here (the fragments keep it for the scan).
    """
    try:
        dataset = ds.dataset(list(files), format="parquet", schema=LAKE_SCHEMA)
    except FileNotFoundError as ex:  # it names no file: find it
        missing = next((f for f in files if not os.path.exists(f)), "?")
        raise LakeUnreadable(missing, "missing") from ex
    for fragment in dataset.get_fragments():
        try:
            schema = fragment.physical_schema
        except (OSError, pa.ArrowException) as ex:
            raise LakeUnreadable(fragment.path, f"not a readable Parquet file ({ex})") from ex
        check_schema(fragment.path, schema)
    return dataset


def open_session(
    files: Sequence[str], hot: pa.Table, *, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the view ``events`` that can reach no file.

    ``memory_limit`` (DuckDB's default: 80 % of RAM) lets tests reach the limit quickly.
    Raises ``LakeUnreadable``.
    """
    lake = lake_dataset(files) if files else None
    config = dict(LOCKED_DOWN)
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
    con = duckdb.connect(":memory:", config=config)
    con.register("hot_events", hot)
    parts = [f"SELECT {COLUMNS} FROM hot_events"]
    if lake is not None:
        con.register("lake_events", lake)
        parts.insert(0, f"SELECT {COLUMNS} FROM lake_events")
    con.execute("CREATE VIEW events AS " + " UNION ALL ".join(parts))
    return con


def _json_default(value: Any) -> str:
    return str(value)


def print_result(
    con: duckdb.DuckDBPyConnection, query: str, fmt: str, out: IO[str] = sys.stdout
) -> None:
    """Run ``query`` and print its result. Raises ``NotARead`` or ``duckdb.Error``."""
    check_read_only(query)
    relation = con.sql(query)
    if relation is None:  # pragma: no cover - every statement that reads has a result
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
