"""Property columns of lake files: which keys, what they hold, how the footer lists them.

Each file is written by ``Lake.write`` and read back from disk; what a column must hold is
DuckDB's own ``json_extract_string`` over the file's ``properties``, as the query side runs it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analytics import params
from storage.lake import (
    LAKE_SCHEMA,
    MAX_PROPERTY_COLUMNS,
    PROPERTY_NAME,
    PROPERTY_PREFIX,
    SORT_KEYS,
    STATS_KEY,
    FileStats,
    Lake,
    LakeUnreadable,
    check_footer,
    check_schema,
    property_column,
    property_key,
    read_stats,
)

DAY = date(2025, 3, 4)


def lake_table(properties: list[str], *, types: list[str] | None = None) -> pa.Table:
    """Rows of ``DAY`` in ``LAKE_SCHEMA`` with the given properties (JSON texts)."""
    n = len(properties)
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    ids = pa.array([uuid.uuid4().bytes for _ in range(n)], pa.binary(16))
    return pa.table(
        {
            "event_id": pa.ExtensionArray.from_storage(pa.uuid(), ids),
            "occurred_at": pa.array(
                [start + timedelta(seconds=i) for i in range(n)], pa.timestamp("us", tz="UTC")
            ),
            "user_id": pa.array([f"u{i % 7}" for i in range(n)]),
            "event_type": pa.array(types or [("view", "buy", "open")[i % 3] for i in range(n)]),
            "properties": pa.array(properties, pa.string()).cast(pa.json_(pa.string())),
            "received_at": pa.array([start] * n, pa.timestamp("us", tz="UTC")),
            "batch_id": pa.ExtensionArray.from_storage(pa.uuid(), ids),
        },
        schema=LAKE_SCHEMA,
    )


def write(tmp_path: Path, properties: list[str], **kw: Any) -> str:
    lake = Lake(tmp_path / "lake")
    return str(lake.absolute(lake.write(DAY, lake_table(properties, **kw)).path))


def columns_of(path: str) -> list[str]:
    """The keys of a file's property columns, in the file's order."""
    names = pq.read_schema(path).names
    assert names[: len(LAKE_SCHEMA)] == LAKE_SCHEMA.names
    assert all(n.startswith(PROPERTY_PREFIX) for n in names[len(LAKE_SCHEMA) :])
    return [n.removeprefix(PROPERTY_PREFIX) for n in names[len(LAKE_SCHEMA) :]]


def mismatches(path: str, key: str) -> int:
    """Rows whose column for ``key`` is not exactly the query side's expression."""
    con = duckdb.connect()
    try:
        return int(
            con.execute(
                f'SELECT count(*) FROM read_parquet($file) WHERE "{property_column(key)}" '
                "IS DISTINCT FROM json_extract_string(properties, $path)",
                {"file": path, "path": f'$."{key}"'},
            ).fetchall()[0][0]
        )
    finally:
        con.close()


# Each value as a client may send it (the text is stored as is), in every JSON type.
VALUES = [
    '"UA"',
    '"with \\"quotes\\", \\\\ and \\u00e9"',
    '""',
    "9.99",
    "17",
    "1e3",
    "-0",
    "-0.0",
    "1.0E+2",
    "123456789012345678901234567890",
    "true",
    "false",
    '{"os": "iOS", "v": [1, 2.5, {"deep": null}]}',
    "{}",
    '[1, "x", null]',
    "[]",
    "null",
]


def mixed_rows() -> list[str]:
    """Every value under key ``v``, a string ``country`` in most rows, and keys that must not
    become columns: names outside ``PROPERTY_NAME``, and ``rare`` in under 10 % of rows."""
    rows = []
    for i in range(200):
        doc: dict[str, str] = {"v": VALUES[i % len(VALUES)]}
        if i % 5:
            doc["country"] = json.dumps(["UA", "PL", "DE"][i % 3])
        if i % 3 == 0:
            doc["missing-often"] = "1"
        doc["with space"] = doc["with.dot"] = doc["ключ"] = doc["x" * 65] = doc[""] = '"no"'
        doc["new\nline"] = '"no"'
        if i < 19:
            doc["rare"] = '"below 10 %"'
        elif i < 40:
            doc["rare_null"] = "null"  # present in 21 rows, but JSON null in all of them
        rows.append("{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in doc.items()) + "}")
    return rows


def test_each_column_is_json_extract_string_of_its_key(tmp_path: Path) -> None:
    path = write(tmp_path, mixed_rows())
    assert columns_of(path) == ["country", "missing-often", "v"]
    stats = read_stats(path)
    assert stats is not None and stats.properties == ("country", "missing-often", "v")
    for key in stats.properties:
        assert mismatches(path, key) == 0, key
    table = pq.read_table(path)
    for key in stats.properties:
        assert table.schema.field(property_column(key)).type == pa.string()
        assert table.schema.field(property_column(key)).nullable
    # Rows are sorted before the columns are computed: each value sits with its own row.
    got = {
        (json.loads(p).get("country"), c)
        for p, c in zip(
            table.column("properties").to_pylist(),
            table.column("p:country").to_pylist(),
            strict=True,
        )
    }
    assert got == {("UA", "UA"), ("PL", "PL"), ("DE", "DE"), (None, None)}
    values = set(table.column("p:v").to_pylist())
    assert {"UA", "", "true", "false", "17", None} <= values  # strings unquoted; null is NULL
    assert '"UA"' not in values


def test_ten_percent_of_rows_is_enough(tmp_path: Path) -> None:
    rows = ['{"a": 1, "b": 2}' if i < 10 else '{"b": null}' if i < 40 else "{}" for i in range(100)]
    rows[99] = '{"c": 1}'
    path = write(tmp_path, rows)
    # a: 10 of 100 rows; b: 10 values, 30 nulls; c: 1 row.
    assert columns_of(path) == ["a", "b"]
    assert mismatches(path, "a") == mismatches(path, "b") == 0
    path = write(tmp_path, [*rows, "{}"])  # 10 of 101 rows: under 10 %
    assert columns_of(path) == []


def test_at_most_32_keys_the_most_frequent_first(tmp_path: Path) -> None:
    """40 keys: ``n00``-``n31`` in every row but null in 80 % of them (so they count 20),
    ``m0``-``m9`` with a value in half the rows, ``t*`` tied at 20 rows with the ``n``."""
    rows = []
    for i in range(100):
        doc: dict[str, Any] = {f"n{k:02d}": (i if i < 20 else None) for k in range(32)}
        doc |= {f"m{k}": f"v{i}" for k in range(10) if i % 2}
        doc |= {f"t{k}": i for k in range(5) if i >= 80}
        rows.append(orjson.dumps(doc).decode())
    path = write(tmp_path, rows)
    kept = [f"m{k}" for k in range(10)] + [f"n{k:02d}" for k in range(22)]
    assert len(kept) == MAX_PROPERTY_COLUMNS
    assert columns_of(path) == sorted(kept)
    stats = read_stats(path)
    assert stats is not None and stats.properties == tuple(sorted(kept))
    for key in kept:
        assert mismatches(path, key) == 0, key


def test_property_columns_are_dictionary_encoded(tmp_path: Path) -> None:
    path = write(
        tmp_path, [orjson.dumps({"country": ("UA", "PL")[i % 2]}).decode() for i in range(1000)]
    )
    metadata = pq.read_metadata(path)
    names = metadata.schema.to_arrow_schema().names
    chunk = metadata.row_group(0).column(names.index("p:country"))
    assert chunk.has_dictionary_page
    assert "RLE_DICTIONARY" in chunk.encodings


@pytest.mark.parametrize("bad", ['{"country": "\\ud800"}', '{"country": ', '{"a": 1}}'])
def test_rows_duckdb_cannot_read_give_a_file_without_property_columns(
    tmp_path: Path, bad: str
) -> None:
    path = write(tmp_path, ['{"country": "UA"}'] * 9 + [bad])
    assert columns_of(path) == []
    stats = read_stats(path)
    assert stats is not None and (stats.rows, stats.properties) == (10, ())
    # DuckDB's json_keys fails on such text with an internal error that invalidates its
    # database: the files after it get their columns all the same.
    assert columns_of(write(tmp_path, ['{"country": "UA"}'] * 10)) == ["country"]


def test_a_file_from_before_property_columns(tmp_path: Path) -> None:
    """No columns, and statistics without a ``properties`` entry: read as no keys."""
    path = write_old_style(tmp_path / "old.parquet", lake_table(['{"country": "UA"}'] * 10))
    check_footer(path)
    stats = read_stats(path)
    assert stats is not None and (stats.rows, stats.properties) == (10, ())


def write_old_style(path: Path, table: pa.Table) -> str:
    """A file as ``Lake.write`` wrote them before property columns."""
    table = table.cast(LAKE_SCHEMA).sort_by(SORT_KEYS)
    stats = FileStats.of(table)
    doc = {"rows": stats.rows, "users": stats.users, "event_types": stats.event_types}
    table = table.replace_schema_metadata({STATS_KEY: orjson.dumps(doc)})
    pq.write_table(table, path, compression="zstd", write_statistics=True)
    return str(path)


def with_stats(schema: pa.Schema, properties: list[str]) -> pa.Schema:
    doc = {"rows": 1, "users": 1, "event_types": {"x": 1}, "properties": properties}
    return schema.with_metadata({STATS_KEY: orjson.dumps(doc)})


def test_schemas_accepted() -> None:
    extra = [pa.field("p:b", pa.string()), pa.field("p:a-1", pa.string(), nullable=False)]
    check_schema("f", LAKE_SCHEMA)
    check_schema("f", with_stats(LAKE_SCHEMA, []))
    check_schema("f", pa.schema([*LAKE_SCHEMA, *extra]))  # no statistics: nothing to match
    check_schema("f", with_stats(pa.schema([*LAKE_SCHEMA, *extra]), ["a-1", "b"]))


@pytest.mark.parametrize(
    ("fields", "listed", "reason"),
    [
        ([pa.field("pwned", pa.int64())], None, "foreign schema"),
        ([*LAKE_SCHEMA][:-1], None, "foreign schema"),
        ([*LAKE_SCHEMA][1:], None, "foreign schema"),
        ([*LAKE_SCHEMA, pa.field("p:a", pa.int64())], None, "foreign schema"),
        ([*LAKE_SCHEMA, pa.field("p:a", pa.large_string())], None, "foreign schema"),
        ([*LAKE_SCHEMA, pa.field("q:a", pa.string())], None, "foreign schema"),
        ([*LAKE_SCHEMA, pa.field("p:a b", pa.string())], None, "foreign schema"),
        ([*LAKE_SCHEMA, pa.field("p:", pa.string())], None, "foreign schema"),
        (
            [*LAKE_SCHEMA, pa.field("p:a", pa.string()), pa.field("p:a", pa.string())],
            None,
            "foreign schema",
        ),
        ([pa.field("p:a", pa.string()), *LAKE_SCHEMA], None, "foreign schema"),
        ([*LAKE_SCHEMA, pa.field("p:a", pa.string())], [], "not the ones its footer lists"),
        ([*LAKE_SCHEMA], ["a"], "not the ones its footer lists"),
        ([*LAKE_SCHEMA, pa.field("p:a", pa.string())], ["b"], "not the ones its footer lists"),
    ],
)
def test_schemas_refused(fields: list[pa.Field], listed: list[str] | None, reason: str) -> None:
    schema = pa.schema(fields)
    if listed is not None:
        schema = with_stats(schema, listed)
    with pytest.raises(LakeUnreadable, match=reason):
        check_schema("f", schema)


def test_refused_footers(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    table = lake_table(['{"a": 1}'])
    pq.write_table(table.replace_schema_metadata({STATS_KEY: b'{"rows": 1}'}), path)
    with pytest.raises(LakeUnreadable, match="unreadable footer"):
        check_footer(str(path))
    bad = b'{"rows": 1, "users": 1, "event_types": {}, "properties": "a"}'
    pq.write_table(table.replace_schema_metadata({STATS_KEY: bad}), path)
    with pytest.raises(LakeUnreadable, match="unreadable footer"):
        check_footer(str(path))
    with pytest.raises(LakeUnreadable, match="unreadable footer"):
        read_stats(str(path))


def test_names_are_those_a_segment_may_use() -> None:
    assert PROPERTY_NAME.pattern == params._NAME.pattern
    assert property_column("country") == "p:country"
    assert property_key("p:country") == "country"
    assert property_key("country") is None
    assert property_key("p:a b") is None
    assert property_key("p:a\n") is None
