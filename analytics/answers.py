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


Rate = Annotated[float, msgspec.Meta(ge=0, le=1)]


class FunnelStep(msgspec.Struct, forbid_unknown_fields=True):
    event_type: str
    users: Count
    conversion: Annotated[Rate, msgspec.Meta(description="users / users of step 1")]
    step_conversion: Annotated[Rate, msgspec.Meta(description="users / users of the step before")]


class Funnel(msgspec.Struct, forbid_unknown_fields=True, rename={"first": "from", "last": "to"}):
    """Users reaching each step: distinct counting events of the steps' types in order of
    time (equal times allowed), the last at most ``window`` seconds after the first."""

    first: datetime.date
    last: datetime.date
    window: Annotated[int, msgspec.Meta(ge=1)]
    segments: Segments
    steps: list[FunnelStep]


class DayActive(msgspec.Struct, forbid_unknown_fields=True):
    date: datetime.date
    users: Count


class ActiveUsers(
    msgspec.Struct, forbid_unknown_fields=True, rename={"first": "from", "last": "to"}
):
    """For each day d of the range, distinct users with a counting event on days
    [d - window + 1, d] (looking back before ``from``)."""

    first: datetime.date
    last: datetime.date
    window: Annotated[int, msgspec.Meta(ge=1, le=90)]
    segments: Segments
    active_users: list[DayActive]


class Cohort(msgspec.Struct, forbid_unknown_fields=True):
    start: datetime.date
    cohort_size: Count
    retention: list[RetentionWindow]


class Cohorts(msgspec.Struct, forbid_unknown_fields=True, rename={"first": "from", "last": "to"}):
    """One cohort per start ``from``, ``from + g``, ... <= ``to``, each what
    ``/stats/retention`` answers for that ``start_date``."""

    first: datetime.date
    last: datetime.date
    granularity: Literal["day", "week"]
    windows: Annotated[int, msgspec.Meta(ge=1)]
    segments: Segments
    cohorts: list[Cohort]


class Series(msgspec.Struct, forbid_unknown_fields=True):
    value: str
    dau: list[DayUsers]


class DauBreakdown(
    msgspec.Struct, forbid_unknown_fields=True, rename={"first": "from", "last": "to"}
):
    """Daily active users per value of ``breakdown``, for the ``limit`` values with the most
    distinct users over the range (ties by value ascending)."""

    first: datetime.date
    last: datetime.date
    segments: Segments
    breakdown: str
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)]
    series: list[Series]
