"""Connections to PostgreSQL, and creating the database itself when it is missing."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg

from core.redact import redact_url

# The events schema is read with an explicit UTC session time zone, whatever the server's
# default, so dates derived in SQL are UTC calendar days.
SERVER_SETTINGS = {"timezone": "UTC", "application_name": "events"}


def database_name(url: str) -> str:
    """The database a URL points at."""
    path = urlsplit(url).path.lstrip("/")
    if not path:
        raise ValueError(f"DATABASE_URL names no database: {redact_url(url)}")
    return path


def maintenance_url(url: str) -> str:
    """The same server, database ``postgres`` (to create or drop other databases)."""
    return urlunsplit(urlsplit(url)._replace(path="/postgres"))


async def connect(url: str, *, timeout: float = 10.0) -> asyncpg.Connection:
    return await asyncpg.connect(url, timeout=timeout, server_settings=SERVER_SETTINGS)


async def create_database_if_missing(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist; True if it was created."""
    name = database_name(url)
    conn = await connect(maintenance_url(url))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        try:
            await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
        except asyncpg.DuplicateDatabaseError:
            return False  # created concurrently
        return True
    finally:
        await conn.close()


async def drop_database(url: str) -> None:
    """Drop the database named in ``url`` (tests), disconnecting its sessions."""
    name = database_name(url)
    conn = await connect(maintenance_url(url))
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
