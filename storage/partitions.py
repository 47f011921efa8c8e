"""Partition upkeep: days ahead, and property indexes for days that are over.

Run by every worker in the background (``pipeline/worker.py``); an advisory lock makes one
process at a time do it.

The GIN index on ``properties`` (property segments) is not declared on ``events``: each
daily partition gets its own once its UTC day has ended, built in one pass by
``CREATE INDEX CONCURRENTLY`` (writes go on meanwhile). A GIN index maintained row by row
costs the write path about 20 %; today's partition, the one taking nearly all the writes, is
read without it.
"""

from __future__ import annotations

import logging
from datetime import date

import asyncpg

from storage.days import utc_today
from storage.migrate import ensure_upcoming_partitions

log = logging.getLogger(__name__)

_UPKEEP_LOCK = 0x75706B70  # "upkp"

_UNINDEXED = """
SELECT c.relname AS partition, i.indexrelid IS NOT NULL AS invalid
FROM pg_inherits h
JOIN pg_class c ON c.oid = h.inhrelid
LEFT JOIN pg_index i ON i.indrelid = c.oid AND NOT i.indisvalid
     AND i.indexrelid = to_regclass(c.relname || '_properties_idx')
WHERE h.inhparent = 'events'::regclass
  AND c.relname ~ '^events_p[0-9]{8}$'
  AND to_date(substr(c.relname, 9), 'YYYYMMDD') < $1
  AND (to_regclass(c.relname || '_properties_idx') IS NULL OR i.indexrelid IS NOT NULL)
ORDER BY 1
"""


async def index_closed_partitions(conn: asyncpg.Connection, today: date | None = None) -> int:
    """Build the properties index of every partition whose day is over; returns how many."""
    built = 0
    for row in await conn.fetch(_UNINDEXED, today or utc_today()):
        name = row["partition"]
        if row["invalid"]:  # left by an interrupted CREATE INDEX CONCURRENTLY
            await conn.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}_properties_idx"')
        await conn.execute(
            f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{name}_properties_idx" '
            f'ON "{name}" USING gin (properties jsonb_path_ops)'
        )
        built += 1
        log.info("built the properties index of a closed day", extra={"partition": name})
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
