"""Versioned SQL migrations: ``storage/migrations/NNNN_name.sql``, applied once, in order.

Each file runs in its own transaction and is recorded in ``schema_migrations`` with a
checksum; an advisory lock makes concurrent starts (API, several workers) safe.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources

import asyncpg

from storage.db import connect, create_database_if_missing

log = logging.getLogger(__name__)

_LOCK_KEY = 0x6576656E7473  # "events"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    """The database's recorded migrations disagree with the code's."""


def available_migrations() -> list[Migration]:
    """Migrations shipped with the package, by version."""
    found = []
    for entry in resources.files("storage.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(version), name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


async def migrate(
    url: str, *, partitions_ahead_days: int = 3, today: date | None = None
) -> list[int]:
    """Create the database if needed, apply pending migrations, create upcoming partitions.

    Returns the versions applied by this call.
    """
    if await create_database_if_missing(url):
        log.info("created database")
    conn = await connect(url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            applied = await _apply(conn)
            await ensure_upcoming_partitions(conn, ahead_days=partitions_ahead_days, today=today)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()


async def _apply(conn: asyncpg.Connection) -> list[int]:
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version    integer     PRIMARY KEY,
               name       text        NOT NULL,
               checksum   text        NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    done = {
        r["version"]: r["checksum"]
        for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
    }
    applied = []
    for m in available_migrations():
        if m.version in done:
            if done[m.version] != m.checksum:
                raise MigrationError(
                    f"migration {m.version}_{m.name} changed after it was applied; "
                    "add a new migration instead of editing an old one"
                )
            continue
        async with conn.transaction():
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                m.version,
                m.name,
                m.checksum,
            )
        log.info("applied migration", extra={"version": m.version, "migration": m.name})
        applied.append(m.version)
    return applied


async def ensure_upcoming_partitions(
    conn: asyncpg.Connection, *, ahead_days: int, today: date | None = None
) -> int:
    """Create the partitions from yesterday to ``ahead_days`` after today (UTC)."""
    start = (today or datetime.now(UTC).date()) - timedelta(days=1)
    days = [start + timedelta(days=i) for i in range(ahead_days + 2)]
    created: int = await conn.fetchval("SELECT events_ensure_partitions($1::date[])", days)
    return created
