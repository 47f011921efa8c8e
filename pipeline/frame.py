"""Decoded messages -> one Polars frame -> COPY payload for the writer.

Runs in a worker thread: Polars and pgpq release the GIL, so the event loop keeps
serving the broker connection (heartbeats, deliveries) meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from pipeline.message import DecodedBatch
from storage.copy import STAGING_COLUMNS
from storage.rows import RowSet
from storage.writer import BatchInfo, StagedRows

_UTC_MICROS = pl.Datetime("us", "UTC")


def to_frame(batches: Sequence[DecodedBatch]) -> pl.DataFrame:
    """All events of a micro-batch with their batch columns; the first of equal event_ids wins."""
    frames = []
    for b in batches:
        frame = pl.DataFrame(pl.from_arrow(b.table))
        frames.append(
            frame.with_columns(
                pl.lit(b.meta.received_at).cast(_UTC_MICROS).alias("received_at"),
                pl.lit(b.meta.batch_id.bytes, dtype=pl.Binary).alias("batch_id"),
            )
        )
    df = pl.concat(frames, how="vertical", rechunk=True)
    # PERF: drop in-batch duplicates here, so PostgreSQL only probes each id once.
    return df.unique(subset="event_id", keep="first", maintain_order=True)


def stage(batches: Sequence[DecodedBatch]) -> StagedRows:
    """One frame for the micro-batch, with everything the writer needs computed ahead."""
    rows = RowSet(
        to_frame(batches).select(STAGING_COLUMNS).to_arrow(compat_level=pl.CompatLevel.oldest())
    )
    return StagedRows(
        rows=rows.prepare(),
        batches=tuple(
            BatchInfo(b.meta.batch_id, b.meta.key_id, b.meta.received_at, b.rows) for b in batches
        ),
    )
