"""Query parameters of the analytics endpoints, parsed and validated.

Every problem is a 400 ``invalid_parameter`` naming the parameter. Property names in
segments are checked against ``_NAME`` and only ever reach SQL as bound parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from core.codes import ErrorCode, Refusal

_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
MAX_DEPTH = 8
MAX_SEGMENTS = 8
MAX_VALUE_LENGTH = 256


def invalid(parameter: str, message: str) -> Refusal:
    return Refusal(ErrorCode.INVALID_PARAMETER, message, parameter=parameter)


@dataclass(frozen=True, slots=True)
class Segment:
    """Events count only if ``event_type`` (or the property at ``path``) equals ``value``."""

    kind: Literal["event_type", "property"]
    path: tuple[str, ...]
    value: str

    def describe(self) -> str:
        key = "event_type" if self.kind == "event_type" else "properties." + ".".join(self.path)
        return f"{key}:{self.value}"


@dataclass(frozen=True, slots=True)
class DateRange:
    first: date
    last: date

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


EARLIEST = date(1970, 1, 1)
LATEST = date(2999, 12, 31)


def parse_date(raw: str | None, name: str) -> date:
    if raw is None or not raw.strip():
        raise invalid(name, f"{name} is required (YYYY-MM-DD)")
    try:
        if len(raw.strip()) != 10:
            raise ValueError
        value = date.fromisoformat(raw.strip())
    except ValueError:
        raise invalid(name, f"{name} must be a date written YYYY-MM-DD, not {raw[:40]!r}") from None
    if not EARLIEST <= value <= LATEST:
        raise invalid(name, f"{name} must be between {EARLIEST} and {LATEST}")
    return value


def first_of(params: Mapping[str, str | list[str]], *names: str) -> tuple[str, str | None]:
    """The value of the first of ``names`` present (aliases), and which one it was."""
    for name in names:
        if name in params:
            value = params[name]
            if isinstance(value, list):
                raise invalid(name, f"{name} may be given only once")
            return name, value
    return names[0], None


def parse_range(params: Mapping[str, str | list[str]], max_days: int) -> DateRange:
    name_from, raw_from = first_of(params, "from", "from_date")
    name_to, raw_to = first_of(params, "to", "to_date")
    first = parse_date(raw_from, name_from)
    last = parse_date(raw_to, name_to)
    if first > last:
        raise invalid("from", f"from ({first}) is after to ({last})")
    span = DateRange(first, last)
    if span.days > max_days:
        raise invalid("to", f"the range covers {span.days} days; the limit is {max_days}")
    return span


def parse_int(
    params: Mapping[str, str | list[str]], name: str, default: int, low: int, high: int
) -> int:
    _, raw = first_of(params, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(name, f"{name} must be an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise invalid(name, f"{name} must be from {low} to {high}, not {value}")
    return value


def _segment(text: str, parameter: str) -> Segment:
    match = re.match(r"^([^:=]+)[:=](.*)$", text, re.S)
    if match is None:
        raise invalid(parameter, f"segment {text[:60]!r} must be written field:value")
    key, value = match.group(1).strip(), match.group(2)
    return _segment_for(key, value, parameter)


def _segment_for(key: str, value: str, parameter: str) -> Segment:
    if len(value) > MAX_VALUE_LENGTH:
        raise invalid(parameter, f"a segment value is at most {MAX_VALUE_LENGTH} characters")
    if key == "event_type":
        return Segment("event_type", (), value)
    if key.startswith("properties."):
        path = tuple(key.split(".")[1:])
        if not path or len(path) > MAX_DEPTH or not all(_NAME.fullmatch(p) for p in path):
            raise invalid(
                parameter,
                f"{key[:80]!r}: property paths are up to {MAX_DEPTH} names of letters, digits, "
                "'_' or '-', separated by dots",
            )
        return Segment("property", path, value)
    raise invalid(parameter, f"cannot segment on {key[:60]!r}: use event_type or properties.<path>")


def parse_segments(params: Mapping[str, str | list[str]]) -> tuple[Segment, ...]:
    """``segment=field:value`` (repeatable; ``=`` works as separator too), and the shorthand
    query parameters ``event_type=value`` and ``properties.<path>=value``."""
    segments: list[Segment] = []
    raw = params.get("segment")
    for text in [raw] if isinstance(raw, str) else list(raw or []):
        segments.append(_segment(text, "segment"))
    for key, value in params.items():
        if key == "event_type" or key.startswith("properties."):
            for v in [value] if isinstance(value, str) else value:
                segments.append(_segment_for(key, v, key))
    if len(segments) > MAX_SEGMENTS:
        raise invalid("segment", f"at most {MAX_SEGMENTS} segments")
    return tuple(dict.fromkeys(segments))


@dataclass(frozen=True, slots=True)
class RetentionParams:
    start: date
    windows: int
    granularity: Literal["day", "week"]
    segments: tuple[Segment, ...]

    @property
    def window_days(self) -> int:
        return 7 if self.granularity == "week" else 1

    def window_start(self, k: int) -> date:
        return self.start + timedelta(days=k * self.window_days)

    @property
    def end(self) -> date:
        """First day after the last window."""
        return self.window_start(self.windows)


def parse_retention(params: Mapping[str, str | list[str]], max_days: int) -> RetentionParams:
    name, raw = first_of(params, "start_date", "start")
    start = parse_date(raw, name)
    granularity = _granularity(params)
    per = 7 if granularity == "week" else 1
    windows = parse_int(params, "windows", 3, 1, max(1, max_days // per))
    return RetentionParams(start, windows, granularity, parse_segments(params))


def segments_of(values: Sequence[Segment]) -> list[str]:
    return [s.describe() for s in values]


MIN_STEPS = 2
MAX_STEPS = 10
MAX_WINDOW_SECONDS = 90 * 86_400
DEFAULT_WINDOW_SECONDS = 7 * 86_400
MAX_ACTIVE_WINDOW = 90
MAX_BREAKDOWN_LIMIT = 100


@dataclass(frozen=True, slots=True)
class FunnelParams:
    days: DateRange
    steps: tuple[str, ...]
    window_seconds: int
    segments: tuple[Segment, ...]


def parse_steps(params: Mapping[str, str | list[str]]) -> tuple[str, ...]:
    """``steps=A,B,C`` (one value, split on commas), or ``steps`` repeated (one event type
    each, not split: a type may hold a comma)."""
    raw = params.get("steps")
    if raw is None:
        raise invalid("steps", "steps is required: 2 to 10 event types, comma-separated")
    steps = raw.split(",") if isinstance(raw, str) else list(raw)
    if not MIN_STEPS <= len(steps) <= MAX_STEPS:
        raise invalid("steps", f"a funnel has {MIN_STEPS} to {MAX_STEPS} steps, not {len(steps)}")
    for step in steps:
        if not step.strip() or len(step) > MAX_VALUE_LENGTH:
            raise invalid(
                "steps", f"each step is an event type of 1 to {MAX_VALUE_LENGTH} characters"
            )
    return tuple(steps)


def parse_funnel(params: Mapping[str, str | list[str]], max_days: int) -> FunnelParams:
    return FunnelParams(
        days=parse_range(params, max_days),
        steps=parse_steps(params),
        window_seconds=parse_int(params, "window", DEFAULT_WINDOW_SECONDS, 1, MAX_WINDOW_SECONDS),
        segments=parse_segments(params),
    )


@dataclass(frozen=True, slots=True)
class ActiveUsersParams:
    days: DateRange
    window: int
    segments: tuple[Segment, ...]

    @property
    def lookback_first(self) -> date:
        """The first day any answer of the range looks at."""
        return self.days.first - timedelta(days=self.window - 1)


def parse_active_users(params: Mapping[str, str | list[str]], max_days: int) -> ActiveUsersParams:
    return ActiveUsersParams(
        days=parse_range(params, max_days),
        window=parse_int(params, "window", 7, 1, MAX_ACTIVE_WINDOW),
        segments=parse_segments(params),
    )


def _granularity(params: Mapping[str, str | list[str]]) -> Literal["day", "week"]:
    gname, graw = first_of(params, "granularity", "window_type", "period_type")
    granularity = (graw or "day").strip().lower()
    if granularity in ("daily", "days"):
        return "day"
    if granularity in ("weekly", "weeks"):
        return "week"
    if granularity not in ("day", "week"):
        raise invalid(gname, f"{gname} must be day or week")
    return granularity  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class CohortsParams:
    days: DateRange
    windows: int
    granularity: Literal["day", "week"]
    segments: tuple[Segment, ...]

    @property
    def starts(self) -> list[date]:
        step = 7 if self.granularity == "week" else 1
        return [
            self.days.first + timedelta(days=i)
            for i in range(0, (self.days.last - self.days.first).days + 1, step)
        ]

    def cohort(self, start: date) -> RetentionParams:
        return RetentionParams(start, self.windows, self.granularity, self.segments)

    @property
    def end(self) -> date:
        """First day after the last window of the last cohort."""
        return self.cohort(self.starts[-1]).end


def parse_cohorts(params: Mapping[str, str | list[str]], max_days: int) -> CohortsParams:
    days = parse_range(params, max_days)
    granularity = _granularity(params)
    per = 7 if granularity == "week" else 1
    windows = parse_int(params, "windows", 3, 1, max(1, max_days // per))
    return CohortsParams(days, windows, granularity, parse_segments(params))


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Split by ``event_type`` or by the text of the property at ``path``."""

    kind: Literal["event_type", "property"]
    path: tuple[str, ...]
    limit: int

    def describe(self) -> str:
        return "event_type" if self.kind == "event_type" else "properties." + ".".join(self.path)


def parse_breakdown(params: Mapping[str, str | list[str]]) -> Breakdown | None:
    name, raw = first_of(params, "breakdown")
    limit = parse_int(params, "limit", 10, 1, MAX_BREAKDOWN_LIMIT)  # checked even unused
    if raw is None:
        return None
    key = raw.strip()
    if key == "event_type":
        return Breakdown("event_type", (), limit)
    found = _segment_for(key, "", name) if key.startswith("properties.") else None
    if found is None:
        raise invalid(
            name, f"cannot break down by {key[:60]!r}: use event_type or properties.<path>"
        )
    return Breakdown("property", found.path, limit)
