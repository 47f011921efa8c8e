"""The Parquet lake: layout, the file schema, and crash-safe file publication.

Layout (Hive-style, readable by DuckDB, Polars, Spark, Trino, pyarrow...)::

    <EVENTS_LAKE_DIR>/events/date=YYYY-MM-DD/part-<uuid7>.parquet

Each file holds events of one UTC day, sorted by ``(event_type, user_id, occurred_at)`` so
row-group statistics let readers skip by event type; zstd compressed. Its footer also
carries exact statistics (``FileStats``: rows, distinct users, events per type). Columns:
``event_id`` (UUID), ``occurred_at`` (timestamp UTC, µs), ``user_id``, ``event_type``,
``properties`` (JSON text), ``received_at``, ``batch_id`` (UUID) (``LAKE_SCHEMA``), then the
file's *property columns*: ``p:<key>`` (string, nullable) for each frequent top-level key of
its rows' properties, sorted by key, holding DuckDB's ``json_extract_string(properties,
'$."<key>"')`` for each row, so a segment on the key reads a dictionary-encoded column instead
of parsing every row's JSON. Files differ in them; the footer lists each file's keys
(``FileStats.properties``), and files written before them have none.

A file is written under a temporary name, fsynced, renamed into place and the directory
fsynced; only then is it recorded in PostgreSQL's ``lake_files``, with its size and the SHA-256
of its bytes (see ``storage/compactor.py``; ``storage/lake_verify.py`` checks them). A file
that is on disk but not recorded is the leftover of an interrupted run (or one in progress).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from dataclasses import dataclass
from datetime import date
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import duckdb
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.ids import uuid7
from storage.arrow_copy import TIMESTAMP_US

LAKE_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.uuid(), nullable=False),
        pa.field("occurred_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("properties", pa.json_(pa.string()), nullable=False),
        pa.field("received_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("batch_id", pa.uuid(), nullable=False),
    ]
)
# Hot rows as the lake stores them: read with ``storage.arrow_copy.copy_to_arrow`` (UUIDs as
# text, timestamps as epoch microseconds), then ``to_lake_table``.
HOT_ROWS_COLUMNS = {
    "event_id": pa.string(),
    "occurred_at": TIMESTAMP_US,
    "user_id": pa.string(),
    "event_type": pa.string(),
    "properties": pa.string(),
    "received_at": TIMESTAMP_US,
    "batch_id": pa.string(),
}
# The lake's properties text is PostgreSQL's output of a ``jsonb`` column named ``properties``
# (keys in jsonb's order, shorter first; the last of duplicate keys; numbers as ``numeric``
# prints them). Analytics compares property values as text, so every writer of the lake must
# produce exactly this: the compactor selects it from ``events``, the importer from the jsonb
# it sends through PostgreSQL (``storage/bulk.py``, ``lake_properties``).
PROPERTIES_TEXT = "properties::text"
HOT_ROWS_SQL = (
    "SELECT event_id, (extract(epoch FROM occurred_at) * 1000000)::bigint, user_id, event_type, "
    f"{PROPERTIES_TEXT}, (extract(epoch FROM received_at) * 1000000)::bigint, batch_id FROM events"
)
SORT_KEYS = [("event_type", "ascending"), ("user_id", "ascending"), ("occurred_at", "ascending")]
ROW_GROUP_ROWS = 128 * 1024
TEMP_PREFIX = ".tmp-"

log = logging.getLogger(__name__)

# Property columns. Only names a segment path may use (``analytics/params.py``), so the query
# side can name the column of any key it is asked for; present (not null) in at least
# PROPERTY_MIN_PERCENT % of a file's rows (a rarer key costs a column in every row group and
# spares little JSON parsing); at most MAX_PROPERTY_COLUMNS per file, the most frequent.
PROPERTY_PREFIX = "p:"
PROPERTY_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
PROPERTY_MIN_PERCENT = 10
MAX_PROPERTY_COLUMNS = 32


def property_column(key: str) -> str:
    """The name of the column that holds top-level property ``key`` in files that have it."""
    return PROPERTY_PREFIX + key


def property_key(column: str) -> str | None:
    """The key of a property column's name; None for any other column name."""
    if not column.startswith(PROPERTY_PREFIX):
        return None
    key = column[len(PROPERTY_PREFIX) :]
    return key if PROPERTY_NAME.fullmatch(key) else None


def uuids_from_text(text: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Canonical UUID text (as PostgreSQL prints it) -> the lake's Arrow UUID, column-wise."""
    series = pl.Series(pl.from_arrow(text))
    raw = series.str.replace_all("-", "", literal=True).str.decode("hex").to_arrow()
    return uuids_from_bytes(raw)


def uuids_from_bytes(raw: pa.ChunkedArray | pa.Array) -> pa.Array:
    """16-byte UUIDs (binary) -> the lake's Arrow UUID (the extension type over them)."""
    if isinstance(raw, pa.ChunkedArray):
        raw = raw.combine_chunks()
    return pa.ExtensionArray.from_storage(pa.uuid(), raw.cast(pa.binary(16)))


def to_lake_table(rows: pa.Table) -> pa.Table:
    """Rows read with ``HOT_ROWS_SQL`` in the lake's column types (``LAKE_SCHEMA``)."""
    return pa.table(
        {
            "event_id": uuids_from_text(rows.column("event_id")),
            "occurred_at": rows.column("occurred_at"),
            "user_id": rows.column("user_id"),
            "event_type": rows.column("event_type"),
            "properties": rows.column("properties").cast(pa.json_(pa.string())),
            "received_at": rows.column("received_at"),
            "batch_id": uuids_from_text(rows.column("batch_id")),
        },
        schema=LAKE_SCHEMA,
    )


STATS_KEY = b"events.stats"


@dataclass(frozen=True, slots=True)
class FileStats:
    """Exact statistics of one file, kept in its own footer (``events.stats``, JSON).

    Like Parquet's min/max statistics (and Iceberg's distinct-count sketches), they let a
    reader answer some questions without reading the rows: the number of distinct users of
    a day that has a single file, and counts per event type (additive across files).
    ``properties`` are the keys the file has a property column for (``property_column``), so
    a query knows which files it may read a key from without opening them; files written
    before property columns existed have none (and no ``properties`` entry).
    """

    rows: int
    users: int
    event_types: dict[str, int]
    properties: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "rows": self.rows,
                "users": self.users,
                "event_types": self.event_types,
                "properties": list(self.properties),
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> FileStats:
        """Raises ``ValueError``, ``TypeError``, ``KeyError`` or ``AttributeError`` for a
        document that is not ours."""
        doc = orjson.loads(raw)
        properties = doc.get("properties", [])
        if not isinstance(properties, list) or not all(isinstance(k, str) for k in properties):
            raise TypeError(f"properties must be a list of keys, not {properties!r:.80}")
        return cls(
            int(doc["rows"]),
            int(doc["users"]),
            {str(k): int(v) for k, v in doc["event_types"].items()},
            tuple(properties),
        )

    @classmethod
    def of(cls, table: pa.Table, properties: tuple[str, ...] = ()) -> FileStats:
        counts = pc.value_counts(table.column("event_type")).to_pylist()
        return cls(
            rows=table.num_rows,
            users=int(pc.count_distinct(table.column("user_id")).as_py()),
            event_types={c["values"]: int(c["counts"]) for c in counts},
            properties=properties,
        )


# DuckDB computes the property columns, so they hold exactly what the query side's
# ``json_extract_string`` returns (strings unquoted, other values as DuckDB's JSON text, JSON
# null and missing keys NULL). In-memory, no file system, no extensions, rows in input order.
# Only the processes that write lake files (compactor, importer) ever open it.
_DUCKDB_CONFIG: dict[str, Any] = {
    "enable_external_access": False,
    "temp_directory": "",
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "python_enable_replacements": False,
    "preserve_insertion_order": True,
    "lock_configuration": True,
}
# How often each key occurs: at least the number of rows where it is not null (more if a
# JSON text repeats a key, which costs nothing but a needless candidate). PERF: three times
# cheaper than counting each key once per row (``list_distinct``). Only over valid JSON:
# DuckDB 2.0's ``json_keys`` fails on malformed JSON with an internal error, which
# invalidates the whole database (``json_extract_string`` then fails on the row properly).
_KEY_COUNTS_SQL = (
    "SELECT key, count(*) AS n FROM (SELECT unnest(json_keys(properties)) AS key "
    "FROM lake_rows WHERE json_valid(properties)) GROUP BY key"
)


@cache
def _duckdb() -> duckdb.DuckDBPyConnection:
    """The process's DuckDB for property columns, opened on first use.

    PERF: opening an in-memory database costs 10-30 ms, more than the columns of a small
    file take; a cursor of this one (one per file: registrations stay apart when the
    importer writes files in several threads) about 1 ms. Two threads racing here the first
    time may each open one; the one not cached is dropped with its cursor.
    """
    return duckdb.connect(":memory:", config=_DUCKDB_CONFIG)


def _extract(con: duckdb.DuckDBPyConnection, keys: list[str]) -> pa.Table:
    """``json_extract_string(properties, '$."<key>"')`` for each key, one column per key.

    PERF: one call with a list of paths parses each row's JSON once for all of them.
    """
    paths = [f'$."{key}"' for key in keys]  # keys are PROPERTY_NAMEs: nothing to escape
    columns = ", ".join(f"v[{i + 1}] AS c{i}" for i in range(len(keys)))
    extracted = "SELECT json_extract_string(properties, $paths) AS v FROM lake_rows"
    result = con.sql(f"SELECT {columns} FROM ({extracted})", params={"paths": paths})
    result = result.to_arrow_table()
    return result.rename_columns(keys)


def _candidates(con: duckdb.DuckDBPyConnection, floor: int) -> list[tuple[str, int]]:
    """Keys that may be in ``floor`` rows or more, with that bound, most frequent first."""
    counts = ((str(key), int(n)) for key, n in con.sql(_KEY_COUNTS_SQL).fetchall())
    return sorted(
        (c for c in counts if c[1] >= floor and PROPERTY_NAME.fullmatch(c[0])),
        key=lambda c: (-c[1], c[0]),
    )


def property_columns(table: pa.Table) -> dict[str, pa.ChunkedArray]:
    """The property columns of a file's rows, by key, sorted by key (see the module's
    docstring for which keys). Raises ``duckdb.Error`` when DuckDB cannot read a row's JSON.

    Key counts (``json_keys``) bound how often a key is not null, so candidates are
    extracted most frequent first, MAX_PROPERTY_COLUMNS at a time, until no candidate left
    could displace the last one kept: usually a single pass, and exact either way.
    """
    rows = table.num_rows
    if not rows:
        return {}
    floor = -(-rows * PROPERTY_MIN_PERCENT // 100)  # rows a key must be in: 10 %, rounded up
    kept: list[tuple[int, str, pa.ChunkedArray]] = []  # (-rows not null, key, column), ranked
    con = _duckdb().cursor()
    try:
        con.register("lake_rows", table.select(["properties"]))
        candidates = _candidates(con, floor)
        for start in range(0, len(candidates), MAX_PROPERTY_COLUMNS):
            key, bound = candidates[start]
            if len(kept) == MAX_PROPERTY_COLUMNS and (-bound, key) > kept[-1][:2]:
                break  # neither it nor any later one can rank above the last one kept
            batch = _extract(con, [k for k, _ in candidates[start : start + MAX_PROPERTY_COLUMNS]])
            for name, column in zip(batch.column_names, batch.columns, strict=True):
                present = rows - column.null_count
                if present >= floor:
                    kept.append((-present, name, column.cast(pa.string())))
            kept = sorted(kept, key=lambda k: k[:2])[:MAX_PROPERTY_COLUMNS]
    finally:
        con.close()
    return {key: column for _, key, column in sorted(kept, key=lambda k: k[1])}


class LakeUnreadable(Exception):
    """A published lake file is missing, unreadable, or not the file that was published."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"lake file {path}: {reason}")
        self.path = path
        self.reason = reason


def check_size(path: str, recorded: int) -> None:
    """Raise ``LakeUnreadable`` unless the file exists with its recorded size.

    One ``stat``: cheap enough before every query, and it catches a deleted, truncated or
    replaced file before DuckDB or pyarrow trip over it (``events lake verify`` also
    compares checksums).
    """
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise LakeUnreadable(path, "missing") from None
    except OSError as ex:
        raise LakeUnreadable(path, f"cannot be read ({ex.strerror})") from ex
    if size != recorded:
        raise LakeUnreadable(path, f"changed: {size} bytes, {recorded} recorded")


def check_schema(path: str, schema: pa.Schema) -> None:
    """Raise ``LakeUnreadable`` unless a file's schema is ``LAKE_SCHEMA`` followed by property
    columns (strings, each key once), and those are the ones its statistics list, if it has
    any: a reader trusts ``FileStats.properties`` to name columns the file holds.
    """
    width = len(LAKE_SCHEMA)
    base = pa.schema([schema.field(i) for i in range(min(width, len(schema)))])
    extra = [schema.field(i) for i in range(width, len(schema))]
    keys = [property_key(f.name) for f in extra]
    if (
        not base.equals(LAKE_SCHEMA, check_metadata=False)
        or any(k is None for k in keys)
        or any(f.type != pa.string() for f in extra)
        or len(set(keys)) != len(keys)
    ):
        raise LakeUnreadable(path, f"foreign schema: {', '.join(schema.names)}")
    raw = (schema.metadata or {}).get(STATS_KEY)
    if raw is None:
        return
    try:
        listed = FileStats.decode(raw).properties
    except (ValueError, TypeError, KeyError, AttributeError) as ex:
        raise LakeUnreadable(path, f"unreadable footer ({type(ex).__name__}: {ex})") from ex
    if sorted(listed) != sorted(k for k in keys if k is not None):
        raise LakeUnreadable(
            path,
            f"property columns {', '.join(f.name for f in extra) or '(none)'} are not "
            f"the ones its footer lists ({', '.join(listed) or 'none'})",
        )


def check_footer(path: str) -> None:
    """Raise ``LakeUnreadable`` unless the file is Parquet with the lake's schema (its footer;
    see ``check_schema``)."""
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        raise LakeUnreadable(path, "missing") from None
    except (OSError, pa.ArrowException) as ex:
        raise LakeUnreadable(path, f"not a readable Parquet file ({ex})") from ex
    check_schema(path, schema)


@lru_cache(maxsize=65536)
def read_stats(path: str) -> FileStats | None:
    """The statistics in a lake file's footer (files are immutable, so this is cached).

    Raises ``LakeUnreadable`` when the file cannot be read or its statistics make no sense.
    """
    try:
        metadata = pq.read_metadata(path).metadata or {}
        raw = metadata.get(STATS_KEY)
        if raw is None:
            return None
        return FileStats.decode(raw)
    except FileNotFoundError:
        raise LakeUnreadable(path, "missing") from None
    except (OSError, pa.ArrowException, ValueError, TypeError, KeyError, AttributeError) as ex:
        raise LakeUnreadable(path, f"unreadable footer ({type(ex).__name__}: {ex})") from ex


def with_property_columns(table: pa.Table) -> pa.Table:
    """``table`` (``LAKE_SCHEMA``) followed by its property columns (``property_columns``).

    Rows DuckDB cannot read as JSON must not keep a day from leaving PostgreSQL, so such a
    file is written without property columns (as before they existed); queries then parse
    its JSON, and meet the error there.
    """
    try:
        columns = property_columns(table)
    except duckdb.Error as ex:
        # Whatever it was, the next file gets a new database: a fatal error would leave
        # this one unusable for the rest of the process.
        _duckdb.cache_clear()
        log.warning("lake file written without property columns", extra={"error": str(ex)[:300]})
        return table
    for key, column in columns.items():
        table = table.append_column(pa.field(property_column(key), pa.string()), column)
    return table


@dataclass(frozen=True, slots=True)
class LakeFile:
    """A published file: its path relative to the lake root, its day, size and SHA-256 (hex)."""

    path: str
    day: date
    rows: int
    bytes: int
    sha256: str


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class Lake:
    """The lake directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def day_dir(self, day: date) -> Path:
        return self.root / "events" / f"date={day.isoformat()}"

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def absolute(self, relative: str) -> Path:
        return self.root / relative

    def files_on_disk(self, day: date) -> list[Path]:
        """Every file in a day's directory, temporary ones included."""
        directory = self.day_dir(day)
        return sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []

    def write(self, day: date, table: pa.Table) -> LakeFile:
        """Sort, write, fsync and publish one file of ``day``'s events (``LAKE_SCHEMA``, plus
        the property columns of its rows)."""
        directory = self.day_dir(day)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"part-{uuid7()}.parquet"
        temp = directory / f"{TEMP_PREFIX}{uuid.uuid4().hex}.parquet"
        table = with_property_columns(table.cast(LAKE_SCHEMA).sort_by(SORT_KEYS))
        keys = tuple(k for k in map(property_key, table.column_names) if k is not None)
        stats = FileStats.of(table, keys)
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), STATS_KEY: stats.encode()}
        )
        try:
            with temp.open("wb") as sink:
                pq.write_table(
                    table,
                    sink,
                    compression="zstd",
                    row_group_size=ROW_GROUP_ROWS,
                    write_statistics=True,
                    # pyarrow's default, stated: the property columns are meant to be read
                    # as dictionaries (a column chunk goes plain once its dictionary passes
                    # 1 MiB: a key with many distinct values).
                    use_dictionary=True,
                )
                sink.flush()
                os.fsync(sink.fileno())
            # The bytes as they are on disk, read back (from the page cache) rather than
            # hashed on the way out, so the checksum vouches for what readers will read.
            size, digest = temp.stat().st_size, file_sha256(temp)
            final = directory / name
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(directory)
        return LakeFile(self.relative(final), day, table.num_rows, size, digest)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
