"""PostgreSQL query results as Arrow tables, through ``COPY ... TO STDOUT (FORMAT csv)``.

PERF: rows never become Python objects. PostgreSQL writes CSV (its fastest output path),
pyarrow's multi-threaded C++ reader parses it into typed columns. Timestamps travel as
integer microseconds since the epoch (exact, and cheaper to parse than text).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
import pyarrow as pa
import pyarrow.csv as pacsv

# Column types a query may declare; timestamps arrive as int64 microseconds.
TIMESTAMP_US = pa.timestamp("us", tz="UTC")


async def copy_to_arrow(
    conn: asyncpg.Connection,
    query: str,
    *args: Any,
    columns: Mapping[str, pa.DataType],
) -> pa.Table:
    """Run ``query`` and return its rows with the given column names and types, in order.

    A ``TIMESTAMP_US`` column must be selected as integer microseconds since the epoch.
    """
    chunks: list[bytes] = []

    async def sink(data: bytes) -> None:
        chunks.append(data)

    await conn.copy_from_query(query, *args, output=sink, format="csv")
    names = list(columns)
    wire_types = {n: (pa.int64() if t == TIMESTAMP_US else t) for n, t in columns.items()}
    data = b"".join(chunks)
    if not data:
        return pa.table({n: pa.array([], t) for n, t in columns.items()})
    table = pacsv.read_csv(
        pa.py_buffer(data),
        read_options=pacsv.ReadOptions(column_names=names),
        # user_id / event_type may legally contain newlines; PostgreSQL quotes them.
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=wire_types,
            # PostgreSQL writes NULL as an unquoted empty field and "" for an empty string;
            # nothing else (not "NA", "null", "N/A") may be read as NULL.
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    for i, name in enumerate(names):
        if columns[name] == TIMESTAMP_US:
            table = table.set_column(i, name, table.column(i).cast(TIMESTAMP_US))
    return table
