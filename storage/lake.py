"""The Parquet lake: layout, the file schema, and crash-safe file publication.

Layout (Hive-style, readable by DuckDB, Polars, Spark, Trino, pyarrow...)::

    <EVENTS_LAKE_DIR>/events/date=YYYY-MM-DD/part-<uuid7>.parquet

Each file holds events of one UTC day, sorted by ``(event_type, user_id, occurred_at)`` so
row-group statistics let readers skip by event type; zstd compressed. Its footer also
carries exact statistics (``FileStats``: rows, distinct users, events per type). Columns:
``event_id`` (UUID), ``occurred_at`` (timestamp UTC, µs), ``user_id``, ``event_type``,
``properties`` (JSON text), ``received_at``, ``batch_id`` (UUID).

A file is written under a temporary name, fsynced, renamed into place and the directory
fsynced; only then is it recorded in PostgreSQL's ``lake_files``, with its size and the SHA-256
of its bytes (see ``storage/compactor.py``; ``storage/lake_verify.py`` checks them). A file
that is on disk but not recorded is the leftover of an interrupted run (or one in progress).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path

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
    """

    rows: int
    users: int
    event_types: dict[str, int]

    def encode(self) -> bytes:
        return orjson.dumps(
            {"rows": self.rows, "users": self.users, "event_types": self.event_types}
        )

    @classmethod
    def of(cls, table: pa.Table) -> FileStats:
        counts = pc.value_counts(table.column("event_type")).to_pylist()
        return cls(
            rows=table.num_rows,
            users=int(pc.count_distinct(table.column("user_id")).as_py()),
            event_types={c["values"]: int(c["counts"]) for c in counts},
        )


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
    """Raise ``LakeUnreadable`` unless a file's schema is ``LAKE_SCHEMA``."""
    if not schema.remove_metadata().equals(LAKE_SCHEMA, check_metadata=False):
        raise LakeUnreadable(path, f"foreign schema: {', '.join(schema.names)}")


def check_footer(path: str) -> None:
    """Raise ``LakeUnreadable`` unless the file is Parquet with ``LAKE_SCHEMA`` (its footer)."""
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
        doc = orjson.loads(raw)
        return FileStats(
            int(doc["rows"]),
            int(doc["users"]),
            {str(k): int(v) for k, v in doc["event_types"].items()},
        )
    except FileNotFoundError:
        raise LakeUnreadable(path, "missing") from None
    except (OSError, pa.ArrowException, ValueError, TypeError, KeyError, AttributeError) as ex:
        raise LakeUnreadable(path, f"unreadable footer ({type(ex).__name__}: {ex})") from ex


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
        """Sort, write, fsync and publish one file of ``day``'s events (``LAKE_SCHEMA``)."""
        directory = self.day_dir(day)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"part-{uuid7()}.parquet"
        temp = directory / f"{TEMP_PREFIX}{uuid.uuid4().hex}.parquet"
        table = table.cast(LAKE_SCHEMA).sort_by(SORT_KEYS)
        stats = FileStats.of(table)
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
