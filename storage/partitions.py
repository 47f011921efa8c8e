"""Partition upkeep: days ahead, and property indexes for days that are over.

Run by every worker in the background (``pipeline/worker.py``); an advisory lock makes one
process at a time do it.

The indexes of raw rows (``(event_type, occurred_at)`` for event-type segments, GIN on
``properties`` for property segments) are not declared on ``events``: each daily partition
gets its own once its UTC day has ended, built in one pass by ``CREATE INDEX CONCURRENTLY``
(writes go on meanwhile). Indexes maintained row by row cost the write path about a third;
today's partition, the one taking nearly all the writes, is read without them.
"""

from __future__ import annotations

import logging
from datetime import date

import asyncpg

from storage.days import utc_today
from storage.migrate import ensure_upcoming_partitions

log = logging.getLogger(__name__)

_UPKEEP_LOCK = 0x75706B70  # "upkp"

# Index name suffix -> definition, for each closed day's partition.
CLOSED_DAY_INDEXES = {
    "type_time_idx": "(event_type, occurred_at)",
    "properties_idx": "USING gin (properties jsonb_path_ops)",
}

# Every daily partition of ``events`` (``events_pYYYYMMDD``) with its day.
DAILY_PARTITIONS = """
SELECT c.relname AS partition, to_date(substr(c.relname, 9), 'YYYYMMDD') AS day
FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid
WHERE h.inhparent = 'events'::regclass AND c.relname ~ '^events_p[0-9]{8}$'
"""
_CLOSED = f"SELECT partition FROM ({DAILY_PARTITIONS}) AS p WHERE day < $1 ORDER BY 1"
_STATE = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)"


async def index_closed_partitions(conn: asyncpg.Connection, today: date | None = None) -> int:
    """Build the missing indexes of every partition whose day is over; returns how many."""
    built = 0
    for row in await conn.fetch(_CLOSED, today or utc_today()):
        partition = row["partition"]
        for suffix, definition in CLOSED_DAY_INDEXES.items():
            name = f"{partition}_{suffix}"
            valid = await conn.fetchval(_STATE, name)
            if valid:
                continue
            if valid is False:  # left by an interrupted CREATE INDEX CONCURRENTLY
                await conn.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
            await conn.execute(
                f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{name}" ON "{partition}" {definition}'
            )
            built += 1
            log.info("indexed a closed day", extra={"partition": partition, "index": name})
    return built


async def upkeep(conn: asyncpg.Connection, *, ahead_days: int, today: date | None = None) -> bool:
    """Partitions ahead and indexes behind; False if another process holds the upkeep."""
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _UPKEEP_LOCK):
        return False
    try:
        await ensure_upcoming_partitions(conn, ahead_days=ahead_days, today=today)
        await index_closed_partitions(conn, today)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _UPKEEP_LOCK)
    return True
