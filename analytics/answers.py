"""The answers of ``/stats/*``, as typed models: the engine builds them, the OpenAPI
document's component schemas are derived from them (``service/openapi.py``)."""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

import msgspec

Count = Annotated[int, msgspec.Meta(ge=0)]
Segments = Annotated[list[str], msgspec.Meta(description="The segments applied, as `field:value`.")]


class DayUsers(msgspec.Struct, forbid_unknown_fields=True):
    date: datetime.date
    unique_users: Count


class Dau(msgspec.Struct, forbid_unknown_fields=True, rename={"first": "from", "last": "to"}):
    """Distinct users per UTC day of the range, every day listed."""

    first: datetime.date
    last: datetime.date
    segments: Segments
    dau: list[DayUsers]


class EventCount(msgspec.Struct, forbid_unknown_fields=True):
    event_type: str
    count: Annotated[int, msgspec.Meta(ge=1)]


class TopEvents(msgspec.Struct, forbid_unknown_fields=True, rename={"first": "from", "last": "to"}):
    """Counting events per type over the range, by count descending, ties by type."""

    first: datetime.date
    last: datetime.date
    limit: Annotated[int, msgspec.Meta(ge=1)]
    segments: Segments
    top_events: list[EventCount]


class RetentionWindow(msgspec.Struct, forbid_unknown_fields=True):
    window: Count
    start: datetime.date
    active_users: Count
    rate: Annotated[float, msgspec.Meta(ge=0, le=1)]


class Retention(msgspec.Struct, forbid_unknown_fields=True):
    """The cohort of ``start_date`` (first counting event ever in window 0), and how many
    of it were active in each window."""

    start_date: datetime.date
    granularity: Literal["day", "week"]
    windows: Annotated[int, msgspec.Meta(ge=1)]
    segments: Segments
    cohort_size: Count
    retention: list[RetentionWindow]
