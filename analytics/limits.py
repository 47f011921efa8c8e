"""What one analytics query may take: a deadline, a place among the running ones, memory.

Analytics shares the API processes with ingest, so a query must never take more than its
share: at most ``EVENTS_QUERY_CONCURRENCY`` run at once per process (more are refused, not
queued), each within ``EVENTS_QUERY_TIMEOUT`` seconds for its PostgreSQL and DuckDB parts
together, DuckDB within ``EVENTS_QUERY_MEMORY_BYTES``. The errors below are the domain's
(``analytics/engine.py`` turns the drivers' errors into them at its boundary);
``service/errors.py`` answers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")
_log = logging.getLogger(__name__)


class AnalyticsError(Exception):
    """Root of the analytics errors that are not bugs."""


class QueryTimeout(AnalyticsError):
    """The query did not finish within its deadline (it was stopped)."""


class TooManyQueries(AnalyticsError):
    """As many queries as allowed are running in this process."""


class QueryTooLarge(AnalyticsError):
    """The query needs more memory than DuckDB may use."""


class StoreUnavailable(AnalyticsError):
    """PostgreSQL cannot answer (down, refusing, lost the connection)."""


class Retryable(StoreUnavailable):
    """A read that failed for a reason of the moment: computing the answer again may work."""


class RecoveryConflict(Retryable):
    """A standby cancelled the read: the WAL it replays removed rows the read's snapshot
    still needed, or took a lock it holds (``max_standby_streaming_delay``)."""


class ConnectionLost(Retryable):
    """The read's connection closed under it: a standby terminates a session idle in its
    transaction on a recovery conflict; a primary may have restarted."""


# Attempts of one answer against a standby that keeps cancelling it.
RECOVERY_ATTEMPTS = 3


def retried_on_recovery_conflict(
    method: Callable[P, Awaitable[T]],
) -> Callable[P, Awaitable[T]]:
    """An answer computed again when the standby cancelled one of its reads."""

    @functools.wraps(method)
    async def retrying(*args: P.args, **kwargs: P.kwargs) -> T:
        for attempt in range(1, RECOVERY_ATTEMPTS + 1):
            try:
                return await method(*args, **kwargs)
            except Retryable:
                if attempt == RECOVERY_ATTEMPTS:
                    raise
                _log.info("a read was cancelled or lost its connection; retrying")
                await asyncio.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    return retrying


class InvalidQueryValue(AnalyticsError):
    """A value of the request that the database cannot use (a number out of range...)."""


@dataclass(frozen=True, slots=True)
class Deadline:
    """When the query must be done, on the monotonic clock."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left (0 once passed: callers treat that as timed out)."""
        return max(0.0, self.at - time.monotonic())

    def remaining_ms(self) -> int:
        """Milliseconds left, at least 1 (PostgreSQL reads 0 as "no timeout")."""
        return max(1, int(self.remaining() * 1000))


class Gate:
    """At most ``limit`` queries at once; the next one is refused at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0

    @contextlib.contextmanager
    def enter(self) -> Iterator[None]:
        if self.running >= self.limit:
            raise TooManyQueries(f"{self.running} analytics queries are running")
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
