"""A set of event rows on its way into PostgreSQL, and what it adds to the rollups.

PERF: everything derived from the rows (the binary COPY payloads, the distinct
``(day, user_id)`` pairs of ``daily_users``, the counts of ``daily_event_counts`` and per
batch) is computed here, column-wise, in the worker's thread, rather than by PostgreSQL
from a staging table: PostgreSQL then writes each event once (a COPY straight into
``events``) instead of twice (staging, then INSERT ... SELECT).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from functools import cached_property

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from storage.copy import STAGING_COLUMNS, encode_binary

ROLLUP_USERS_DDL = """
CREATE TEMP TABLE IF NOT EXISTS rollup_users (
    day     date NOT NULL,
    user_id text NOT NULL
) ON COMMIT DELETE ROWS
"""
CLAIM_IDS_DDL = """
CREATE TEMP TABLE IF NOT EXISTS claim_ids (
    pos      integer NOT NULL,
    event_id uuid    NOT NULL
) ON COMMIT DELETE ROWS
"""


@dataclass(frozen=True)
class RowSet:
    """Rows with ``STAGING_COLUMNS`` (16-byte ids, UTC timestamps, JSON text properties)."""

    table: pa.Table

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)

    @cached_property
    def frame(self) -> pl.DataFrame:
        frame = pl.DataFrame(pl.from_arrow(self.table))
        return frame.with_columns(_day=pl.col("occurred_at").dt.date())

    @cached_property
    def days(self) -> tuple[date, ...]:
        return tuple(self.frame["_day"].unique().sort().to_list())

    @cached_property
    def ids_payload(self) -> bytes:
        """COPY payload of ``(pos, event_id)`` for the ledger claim."""
        return encode_binary(
            pa.table(
                {
                    "pos": pa.array(range(self.rows), pa.int32()),
                    "event_id": self.table.column("event_id"),
                }
            )
        )

    @cached_property
    def payload(self) -> bytes:
        """COPY payload of the rows for ``events``."""
        return encode_binary(self.table.select(list(STAGING_COLUMNS)), jsonb=("properties",))

    @cached_property
    def users_payload(self) -> bytes:
        """COPY payload of the distinct ``(day, user_id)`` pairs, sorted."""
        pairs = self.frame.select(day="_day", user_id="user_id").unique().sort("day", "user_id")
        return encode_binary(pairs.to_arrow(compat_level=pl.CompatLevel.oldest()))

    @cached_property
    def type_counts(self) -> tuple[list[date], list[str], list[int]]:
        counts = self.frame.group_by("_day", "event_type").len().sort("_day", "event_type")
        return (counts["_day"].to_list(), counts["event_type"].to_list(), counts["len"].to_list())

    @cached_property
    def per_batch(self) -> dict[uuid.UUID, int]:
        counts = self.frame.group_by("batch_id").len()
        return {uuid.UUID(bytes=b): n for b, n in counts.iter_rows()}

    def without(self, positions: list[int]) -> RowSet:
        """The rows minus those at ``positions``."""
        if not positions:
            return self
        keep = pc.invert(
            pc.is_in(pa.array(range(self.rows), pa.int32()), pa.array(positions, pa.int32()))
        )
        return RowSet(self.table.filter(keep))

    def prepare(self) -> RowSet:
        """Compute everything in advance (called in a worker thread)."""
        for name in ("days", "ids_payload", "payload", "users_payload", "type_counts", "per_batch"):
            getattr(self, name)
        return self
