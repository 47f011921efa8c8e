"""The staging contract: validated events in, what a writer stores out.

The worker (one micro-batch of queue messages) and the importer (one chunk of a file) both
hand batches of validated events here, each with the batch it belongs to, and get one
``StagedRows``: the rows to COPY (``STAGING_COLUMNS``, one row per event_id, the first of
equal ids kept), the COPY payloads and rollup facts computed column-wise in advance
(``storage/rows.py``), the batches to record in ``ingest_batches``, and how many repeats
within the batches were dropped.

Runs in a thread: Polars and pgpq release the GIL, so the event loop keeps serving
meanwhile.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl
import pyarrow as pa

from storage.copy import STAGING_COLUMNS
from storage.rows import RowSet

# The event columns a batch carries (the validated form of every body and file format).
EVENT_COLUMNS = ("event_id", "occurred_at", "user_id", "event_type", "properties")

_UTC_MICROS = pl.Datetime("us", "UTC")


@dataclass(frozen=True, slots=True)
class Batch:
    """Validated events (``EVENT_COLUMNS``: 16-byte ids, UTC timestamps, JSON text) and the
    batch they arrived in: one accepted request, or one chunk of an import."""

    events: pa.Table
    batch_id: uuid.UUID
    key_id: str
    received_at: datetime

    @property
    def rows(self) -> int:
        return int(self.events.num_rows)


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """One batch inside a staged set, as ``ingest_batches`` records it."""

    batch_id: uuid.UUID
    key_id: str
    received_at: datetime
    events: int  # events the batch carried (before removing duplicates)


@dataclass(frozen=True, slots=True)
class StagedRows:
    """Rows ready to write: unique event_ids, payloads computed in advance."""

    rows: RowSet
    batches: tuple[BatchInfo, ...]
    repeats: int = 0  # events dropped because an earlier one of the set had the same id


def stage(batches: Sequence[Batch], *, prepare: bool = True) -> StagedRows:
    """One deduplicated set of rows for ``batches`` (``prepare``: compute the payloads and
    rollup facts now, in the caller's thread)."""
    frames = [
        pl.DataFrame(pl.from_arrow(b.events.select(list(EVENT_COLUMNS)))).with_columns(
            pl.lit(b.received_at).cast(_UTC_MICROS).alias("received_at"),
            pl.lit(b.batch_id.bytes, dtype=pl.Binary).alias("batch_id"),
        )
        for b in batches
    ]
    frame = pl.concat(frames, how="vertical", rechunk=True)
    # PERF: drop repeats here, so PostgreSQL only probes each id once.
    unique = frame.unique(subset="event_id", keep="first", maintain_order=True)
    rows = RowSet(unique.select(STAGING_COLUMNS).to_arrow(compat_level=pl.CompatLevel.oldest()))
    return StagedRows(
        rows=rows.prepare() if prepare else rows,
        batches=tuple(BatchInfo(b.batch_id, b.key_id, b.received_at, b.rows) for b in batches),
        repeats=frame.height - unique.height,
    )
