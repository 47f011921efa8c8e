"""UTC calendar days: the unit of partitions, lake directories and analytics.

The hot window is the last ``hot_days`` UTC days, today included. Days before it are cold:
they belong to the Parquet lake, and PostgreSQL gets no partition for them (an event for a
cold day waits in the default partition until the next compaction moves it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

Today = Callable[[], date]


def utc_today() -> date:
    return datetime.now(UTC).date()


def first_hot_day(today: date, hot_days: int) -> date:
    return today - timedelta(days=hot_days - 1)


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of ``day``."""
    return datetime.combine(day, time(0), tzinfo=UTC)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """``[start, end)`` of a UTC day."""
    start = day_start(day)
    return start, start + timedelta(days=1)


def days_between(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last``, both included."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
