"""What several commands share: migrations with a retry, uvloop, duration arguments."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time

from core.config import Settings
from core.errors import ConfigError
from core.redact import redact_url

log = logging.getLogger("events")

_DB_DOWN = (OSError, TimeoutError)


def install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def migrate(settings: Settings, *, retry_for: float = 0.0) -> list[int]:
    """Apply the migrations, retrying for ``retry_for`` seconds while PostgreSQL is down."""
    import asyncpg

    from storage.migrate import migrate as apply

    deadline = time.monotonic() + retry_for
    while True:
        try:
            return await apply(
                settings.database_url, partitions_ahead_days=settings.partitions_ahead_days
            )
        except (*_DB_DOWN, asyncpg.CannotConnectNowError) as ex:
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"cannot reach PostgreSQL at {redact_url(settings.database_url)}: {ex}"
                ) from ex
            log.warning("PostgreSQL unreachable; retrying migrations", extra={"error": str(ex)})
            await asyncio.sleep(2)


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``15m``, ``1h`` or ``1d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    try:
        value = float(raw[:-1]) * units[raw[-1]] if raw[-1:] in units else float(raw)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30s, 15m, 1h)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the duration must be positive")
    return value
