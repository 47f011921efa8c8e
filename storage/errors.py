"""Database errors classified by SQLSTATE (never by message text).

``classify`` answers the one question retry logic asks: will trying again help?
"""

from __future__ import annotations

import asyncio

import asyncpg

from core.errors import TerminalError, TransientError


class StorageError(Exception):
    """Root of the storage package's errors."""


class StorageUnavailable(StorageError, TransientError):
    """PostgreSQL cannot be reached or asked us to try again (locks, restarts, resources)."""


class DatabaseDown(StorageUnavailable):
    """The connection itself failed (server down, restarting, backend terminated).

    Never the data's fault: a write failing this way is retried for as long as it takes,
    and never counts towards ``EVENTS_MAX_ATTEMPTS``.
    """


class Contention(StorageUnavailable):
    """Concurrency got in the way: deadlock, serialization failure, lock or statement timeout.

    Also never the data's fault; retried without counting towards ``EVENTS_MAX_ATTEMPTS``.
    """


class BadData(StorageError, TerminalError):
    """PostgreSQL refused the data itself; the same rows will fail again."""


# SQLSTATE classes worth retrying: connection exceptions, transaction rollbacks
# (serialization failure, deadlock), insufficient resources, operator intervention
# (admin shutdown, crash recovery), system errors.
_TRANSIENT_CLASSES = {"08", "40", "53", "57", "58"}
# Connection exceptions and operator intervention that ends the session (admin/crash
# shutdown, cannot connect now), and running out of resources: the server, not the rows.
_DOWN_CLASSES = {"08", "53"}
_DOWN_CODES = {"57P01", "57P02", "57P03", "57P04", "57P05"}
# Lock not available / query cancelled by a timeout.
_TRANSIENT_CODES = {"55P03", "57014"}
# Data exceptions, integrity violations, program limits: the rows are at fault.
_DATA_CLASSES = {"22", "23", "54"}


def classify(ex: BaseException) -> StorageError:
    """Map a driver exception to ``StorageUnavailable`` or ``BadData`` (raise it ``from ex``)."""
    if isinstance(ex, asyncpg.PostgresError):
        code = str(getattr(ex, "sqlstate", "") or "")
        if code in _DOWN_CODES or code[:2] in _DOWN_CLASSES:
            return DatabaseDown(f"PostgreSQL {code}: {type(ex).__name__}")
        if code in _TRANSIENT_CODES or code[:2] == "40":
            return Contention(f"PostgreSQL {code}: {type(ex).__name__}")
        if code[:2] in _TRANSIENT_CLASSES:
            return StorageUnavailable(f"PostgreSQL {code}: {type(ex).__name__}")
        if code[:2] in _DATA_CLASSES:
            return BadData(f"PostgreSQL {code}: {ex}")
        # Anything else (undefined table, permissions, a trigger's RAISE, ...) is retried;
        # it counts towards EVENTS_MAX_ATTEMPTS. The server's message (never its DETAIL,
        # which may quote row values) says what to fix.
        return StorageUnavailable(f"PostgreSQL {code}: {type(ex).__name__}: {str(ex)[:300]}")
    if isinstance(
        ex,
        OSError | asyncio.TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError,
    ):
        return DatabaseDown(f"PostgreSQL unreachable: {type(ex).__name__}")
    return StorageUnavailable(f"unexpected database error: {type(ex).__name__}")
