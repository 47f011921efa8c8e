"""Database errors classified by SQLSTATE (never by message text).

``classify`` answers the one question retry logic asks: will trying again help?
"""

from __future__ import annotations

import asyncio

import asyncpg

from core.errors import TerminalError, TransientError

# What a call to PostgreSQL raises when the server, the network or the driver fails (as
# opposed to a bug of ours): callers that report "database unavailable" catch exactly these.
DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    TimeoutError,
)


class StorageError(Exception):
    """Root of the storage package's errors."""


class StorageUnavailable(StorageError, TransientError):
    """PostgreSQL cannot be reached or asked us to try again (locks, restarts, resources)."""


class DatabaseDown(StorageUnavailable):
    """The server or its set-up failed: connection lost, server down or restarting, backend
    terminated, a read-only standby, a missing table or permission, I/O errors.

    Never the data's fault: a write failing this way is retried for as long as it takes,
    and never counts towards ``EVENTS_MAX_ATTEMPTS``.
    """


class Contention(StorageUnavailable):
    """Concurrency got in the way: deadlock, serialization failure, lock or statement timeout.

    Also never the data's fault; retried without counting towards ``EVENTS_MAX_ATTEMPTS``.
    """


class BadData(StorageError, TerminalError):
    """PostgreSQL refused the data itself; the same rows will fail again."""


# The server or its set-up is at fault, never the rows (retried for as long as it takes,
# not counted towards EVENTS_MAX_ATTEMPTS): connection exceptions (08), invalid
# transaction state such as a read-only standby after a failover (25), authorization (28),
# missing database/schema (3D, 3F), undefined objects and permissions (42), insufficient
# resources (53), object not in prerequisite state (55), operator intervention (57:
# admin/crash shutdown, cannot connect now), system errors such as I/O (58).
_DOWN_CLASSES = {"08", "25", "28", "3D", "3F", "42", "53", "55", "57", "58"}
# Concurrency: deadlocks and serialization failures (40), lock not available, a query
# cancelled by a timeout. Also never the rows.
_CONTENTION_CODES = {"55P03", "57014"}
_CONTENTION_CLASSES = {"40"}
# Data exceptions, integrity violations, program limits: the rows are at fault.
_DATA_CLASSES = {"22", "23", "54"}


def classify(ex: BaseException) -> StorageError:
    """Map a driver exception to ``DatabaseDown``, ``Contention``, ``BadData`` or (anything
    else, which may follow one message: a trigger's RAISE, an internal error)
    ``StorageUnavailable``, which counts towards EVENTS_MAX_ATTEMPTS. Raise it ``from ex``.
    """
    if isinstance(ex, asyncpg.PostgresError):
        code = str(getattr(ex, "sqlstate", "") or "")
        if code in _CONTENTION_CODES or code[:2] in _CONTENTION_CLASSES:
            return Contention(f"PostgreSQL {code}: {type(ex).__name__}")
        if code[:2] in _DOWN_CLASSES:
            return DatabaseDown(f"PostgreSQL {code}: {type(ex).__name__}: {str(ex)[:300]}")
        if code[:2] in _DATA_CLASSES:
            return BadData(f"PostgreSQL {code}: {ex}")
        # The server's message (never its DETAIL, which may quote row values) says what
        # to fix.
        return StorageUnavailable(f"PostgreSQL {code}: {type(ex).__name__}: {str(ex)[:300]}")
    if isinstance(
        ex,
        OSError | asyncio.TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError,
    ):
        return DatabaseDown(f"PostgreSQL unreachable: {type(ex).__name__}")
    return StorageUnavailable(f"unexpected database error: {type(ex).__name__}")
