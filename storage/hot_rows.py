"""Storing claimed rows in ``events`` and keeping the read-side rollups in step.

``events`` gets the rows by one COPY (PostgreSQL routes them to their daily partitions).
``daily_users`` gets the batch's distinct ``(day, user_id)`` pairs that it does not hold yet
(looked up first: once a user was active on a day, later batches add nothing; new pairs are
inserted sorted with ON CONFLICT DO NOTHING, as concurrent batches often share users),
``daily_user_counts`` how many it added per day, ``daily_event_counts`` the counts per day
and type. Same transaction as the claim.
"""

from __future__ import annotations

import asyncpg

from storage.copy import STAGING_COLUMNS, copy_source
from storage.rows import RowSet

_ADD_USERS = """
WITH added AS (
    INSERT INTO daily_users (day, user_id)
    SELECT r.day, r.user_id FROM rollup_users r
    WHERE NOT EXISTS (SELECT 1 FROM daily_users d WHERE d.day = r.day AND d.user_id = r.user_id)
    ORDER BY r.day, r.user_id
    ON CONFLICT DO NOTHING
    RETURNING day
)
INSERT INTO daily_user_counts (day, users) SELECT day, count(*) FROM added GROUP BY day
"""
_ADD_COUNTS = """
INSERT INTO daily_event_counts (day, event_type, events)
SELECT * FROM unnest($1::date[], $2::text[], $3::bigint[])
"""


async def store_rows(conn: asyncpg.Connection, rows: RowSet) -> None:
    """COPY ``rows`` (already claimed) into ``events`` and update the rollups."""
    if not rows.rows:
        return
    await conn.copy_to_table(
        "events", source=copy_source(rows.payload), columns=list(STAGING_COLUMNS), format="binary"
    )
    await conn.copy_to_table(
        "rollup_users",
        source=copy_source(rows.users_payload),
        columns=["day", "user_id"],
        format="binary",
    )
    await conn.execute(_ADD_USERS)
    await conn.execute(_ADD_COUNTS, *rows.type_counts)
