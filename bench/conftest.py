"""Fixtures of the micro-benchmarks (``make bench-micro``); excluded from ``make test``."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator

import pytest

from storage.db import drop_database
from storage.migrate import migrate


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    base = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/events")
    url = base.rsplit("/", 1)[0] + f"/events_micro_{secrets.token_hex(4)}"
    asyncio.run(migrate(url))
    yield url
    asyncio.run(drop_database(url))
