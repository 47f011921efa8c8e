"""SQLSTATE classification: what is retried for ever, what counts attempts, what is bad data."""

from __future__ import annotations

import asyncpg
import pytest

from storage.errors import BadData, Contention, DatabaseDown, StorageUnavailable, classify

E = asyncpg.exceptions


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (E.AdminShutdownError, DatabaseDown),  # 57P01: backend terminated
        (E.CannotConnectNowError, DatabaseDown),  # 57P03: starting up
        (E.ReadOnlySQLTransactionError, DatabaseDown),  # 25006: a standby after failover
        (E.InsufficientPrivilegeError, DatabaseDown),  # 42501: a permission was revoked
        (E.UndefinedTableError, DatabaseDown),  # 42P01
        (E.DiskFullError, DatabaseDown),  # 53100
        (E.PostgresIOError, DatabaseDown),  # 58030
        (E.DeadlockDetectedError, Contention),  # 40P01
        (E.SerializationError, Contention),  # 40001
        (E.LockNotAvailableError, Contention),  # 55P03
        (E.QueryCanceledError, Contention),  # 57014: statement timeout
        (E.InvalidTextRepresentationError, BadData),  # 22P02
        (E.UniqueViolationError, BadData),  # 23505
        (E.RaiseError, StorageUnavailable),  # P0001: a trigger refusing a row
        (E.InternalServerError, StorageUnavailable),  # XX000
    ],
)
def test_sqlstate_classes(error: type[asyncpg.PostgresError], kind: type[Exception]) -> None:
    got = classify(error("message"))
    assert type(got) is kind
    assert error.sqlstate in str(got)


def test_connection_level_errors_are_the_server() -> None:
    assert type(classify(ConnectionResetError())) is DatabaseDown
    assert type(classify(TimeoutError())) is DatabaseDown
    assert type(classify(asyncpg.InterfaceError("closed"))) is DatabaseDown
