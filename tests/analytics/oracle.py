"""A brute-force oracle of the ``/stats`` endpoints (issue 12's contract), in plain Python.

Nothing here imports the service: the events are generated from a seed, deduplicated by
``event_id`` (first occurrence wins, as the writer promises), and every answer is computed
straight from its definition in the spec (``/work/spec/issue12.md``) and the README, by
brute force where the definition is a search (the funnel).

Property values as text follow DuckDB's ``json_extract_string`` over the *stored* document,
which is PostgreSQL ``jsonb`` text: a string unquoted, a number as DuckDB prints it (``17``,
``9.99``, ``100.0``), ``true``/``false``, an object or array as compact JSON with jsonb's key
order (shorter keys first, then by bytes: ``{"v":17,"os":"iOS"}``), a JSON null or a missing
path nothing at all. Generated floats stay where orjson, jsonb and DuckDB all write the same
decimal text (``1e-4 <= |x| < 1e15``), so the stored text of a float is its ``repr``.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

Segment = tuple[str, str]  # ("event_type", "purchase") or ("properties.device.os", "iOS")
Wire = dict[str, Any]  # an event as a client sends it

# ---------------------------------------------------------------------------------------
# Property values as text (DuckDB's json_extract_string over jsonb text).


def jsonb_key_order(keys: Iterable[str]) -> list[str]:
    """PostgreSQL jsonb's object key order: by length in bytes, then bytewise."""
    return sorted(keys, key=lambda k: (len(k.encode()), k.encode()))


def duck_double(x: float) -> str:
    """A double as DuckDB (yyjson) writes it: shortest round-trip digits, plain decimal
    notation with ``.0`` for integral values when the decimal exponent is -6..20, else
    ``d.ddde<exp>`` (no ``+``)."""
    if math.isnan(x) or math.isinf(x):
        raise ValueError("not a JSON number")
    if x == 0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    # value = 0.<digits> * 10**point
    point = len(whole.lstrip("0")) if whole.strip("0") else -(len(frac) - len(frac.lstrip("0")))
    point += int(exp or 0)
    digits = digits.rstrip("0") or "0"
    if -6 < point <= 21:
        if point <= 0:
            return f"{sign}0.{'0' * -point}{digits}"
        if point >= len(digits):
            return f"{sign}{digits}{'0' * (point - len(digits))}.0"
        return f"{sign}{digits[:point]}.{digits[point:]}"
    rest = f".{digits[1:]}" if len(digits) > 1 else ""
    return f"{sign}{digits[0]}{rest}e{point - 1}"


def compact_json(value: Any) -> str:
    """A JSON value as DuckDB re-serialises a jsonb document's part."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return duck_double(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(compact_json(v) for v in value) + "]"
    if isinstance(value, dict):
        ordered = jsonb_key_order(value)
        items = (f"{json.dumps(k, ensure_ascii=False)}:{compact_json(value[k])}" for k in ordered)
        return "{" + ",".join(items) + "}"
    raise TypeError(f"not JSON: {value!r}")


def value_text(value: Any) -> str | None:
    """``json_extract_string`` of a value found at a path: None for JSON null."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return compact_json(value)


def extract(properties: dict[str, Any], path: Sequence[str]) -> str | None:
    """The text at ``path`` (``("device", "os")``), None when missing, null or unreachable."""
    current: Any = properties
    for name in path:
        if not isinstance(current, dict) or name not in current:
            return None
        current = current[name]
    return value_text(current)


# ---------------------------------------------------------------------------------------
# Events.


@dataclass(frozen=True, slots=True)
class Event:
    """A stored event, as the oracle sees it."""

    event_id: str
    at: datetime  # UTC, microseconds
    user: str
    type: str
    properties: dict[str, Any]

    @property
    def day(self) -> date:
        return self.at.date()

    @classmethod
    def from_wire(cls, e: Wire) -> Event:
        at = datetime.fromisoformat(e["occurred_at"]).astimezone(UTC)
        return cls(str(e["event_id"]), at, str(e["user_id"]), e["event_type"], e["properties"])


def dedupe(sent: Iterable[Wire]) -> list[Event]:
    """Events by ``event_id``, the first occurrence winning (later resends change nothing)."""
    seen: dict[str, Event] = {}
    for e in sent:
        key = str(uuid.UUID(str(e["event_id"])))
        if key not in seen:
            seen[key] = Event.from_wire(e)
    return list(seen.values())


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def field_of(key: str) -> Callable[[Event], str | None]:
    """The text of ``key`` (``event_type`` or ``properties.<path>``) that an event compares
    to a segment's value, or is grouped by in a breakdown (None: in no group)."""
    if key == "event_type":
        return lambda e: e.type
    if not key.startswith("properties."):
        raise ValueError(key)
    path = tuple(key.split(".")[1:])
    return lambda e: extract(e.properties, path)


def rate(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


# ---------------------------------------------------------------------------------------
# The oracle.


class Oracle:
    """Every endpoint's answer computed from the deduplicated events."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = list(events)

    def matching(self, segments: Sequence[Segment]) -> list[Event]:
        tests = [(field_of(k), v) for k, v in segments]
        return [e for e in self.events if all(f(e) == v for f, v in tests)]

    def counting(self, first: date, last: date, segments: Sequence[Segment]) -> list[Event]:
        return [e for e in self.matching(segments) if first <= e.day <= last]

    @staticmethod
    def described(segments: Sequence[Segment]) -> list[str]:
        return [f"{k}:{v}" for k, v in dict.fromkeys(segments)]

    # -- existing endpoints ------------------------------------------------------------

    def dau(self, first: date, last: date, segments: Sequence[Segment] = ()) -> dict[str, Any]:
        users: dict[date, set[str]] = defaultdict(set)
        for e in self.counting(first, last, segments):
            users[e.day].add(e.user)
        return {
            "from": first.isoformat(),
            "to": last.isoformat(),
            "segments": self.described(segments),
            "dau": [
                {"date": d.isoformat(), "unique_users": len(users[d])} for d in days(first, last)
            ],
        }

    def top_events(
        self, first: date, last: date, limit: int = 10, segments: Sequence[Segment] = ()
    ) -> dict[str, Any]:
        counts = Counter(e.type for e in self.counting(first, last, segments))
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
        return {
            "from": first.isoformat(),
            "to": last.isoformat(),
            "limit": limit,
            "segments": self.described(segments),
            "top_events": [{"event_type": t, "count": n} for t, n in ranked],
        }

    def _cohort(
        self, start: date, windows: int, g: int, segments: Sequence[Segment]
    ) -> tuple[int, list[dict[str, Any]]]:
        matching = self.matching(segments)
        first_day: dict[str, date] = {}
        for e in matching:
            if e.user not in first_day or e.day < first_day[e.user]:
                first_day[e.user] = e.day
        cohort = {u for u, d in first_day.items() if start <= d < start + timedelta(days=g)}
        out = []
        for k in range(windows):
            lo = start + timedelta(days=k * g)
            hi = lo + timedelta(days=g)
            active = {e.user for e in matching if lo <= e.day < hi} & cohort
            out.append(
                {
                    "window": k,
                    "start": lo.isoformat(),
                    "active_users": len(active),
                    "rate": rate(len(active), len(cohort)),
                }
            )
        return len(cohort), out

    def retention(
        self,
        start: date,
        windows: int = 3,
        granularity: str = "day",
        segments: Sequence[Segment] = (),
    ) -> dict[str, Any]:
        size, windows_out = self._cohort(start, windows, _g(granularity), segments)
        return {
            "start_date": start.isoformat(),
            "granularity": granularity,
            "windows": windows,
            "segments": self.described(segments),
            "cohort_size": size,
            "retention": windows_out,
        }

    # -- issue 12 ----------------------------------------------------------------------

    @staticmethod
    def funnel_depth(user_events: Sequence[Event], steps: Sequence[str], window: int) -> int:
        """How many steps one user reaches: the longest k with distinct events e1..ek of
        types steps[0..k-1], times non-decreasing, e_k - e_1 <= window (exhaustive search)."""
        evs = sorted(user_events, key=lambda e: (e.at, e.event_id))
        best = 0
        for i, e1 in enumerate(evs):
            if e1.type == steps[0]:
                best = max(best, _Chains(evs, steps, e1.at + timedelta(seconds=window)).reach(i))
            if best == len(steps):
                break
        return best

    def funnel(
        self,
        steps: Sequence[str],
        first: date,
        last: date,
        window: int = 604800,
        segments: Sequence[Segment] = (),
    ) -> dict[str, Any]:
        by_user: dict[str, list[Event]] = defaultdict(list)
        for e in self.counting(first, last, segments):
            by_user[e.user].append(e)
        depth = {u: self.funnel_depth(evs, steps, window) for u, evs in by_user.items()}
        reached = [sum(1 for d in depth.values() if d >= k + 1) for k in range(len(steps))]
        out = []
        for k, step in enumerate(steps):
            if k == 0:
                conv = step_conv = 1.0 if reached[0] else 0.0
            else:
                conv = rate(reached[k], reached[0])
                step_conv = rate(reached[k], reached[k - 1])
            out.append(
                {
                    "event_type": step,
                    "users": reached[k],
                    "conversion": conv,
                    "step_conversion": step_conv,
                }
            )
        return {
            "from": first.isoformat(),
            "to": last.isoformat(),
            "window": window,
            "segments": self.described(segments),
            "steps": out,
        }

    def active_users(
        self, first: date, last: date, window: int = 7, segments: Sequence[Segment] = ()
    ) -> dict[str, Any]:
        matching = self.matching(segments)
        out = []
        for d in days(first, last):
            lo = d - timedelta(days=window - 1)
            out.append(
                {
                    "date": d.isoformat(),
                    "users": len({e.user for e in matching if lo <= e.day <= d}),
                }
            )
        return {
            "from": first.isoformat(),
            "to": last.isoformat(),
            "window": window,
            "segments": self.described(segments),
            "active_users": out,
        }

    def cohorts(
        self,
        first: date,
        last: date,
        windows: int = 3,
        granularity: str = "day",
        segments: Sequence[Segment] = (),
    ) -> dict[str, Any]:
        g = _g(granularity)
        rows = []
        start = first
        while start <= last:
            size, windows_out = self._cohort(start, windows, g, segments)
            rows.append({"start": start.isoformat(), "cohort_size": size, "retention": windows_out})
            start += timedelta(days=g)
        return {
            "from": first.isoformat(),
            "to": last.isoformat(),
            "granularity": granularity,
            "windows": windows,
            "segments": self.described(segments),
            "cohorts": rows,
        }

    def dau_breakdown(
        self,
        first: date,
        last: date,
        breakdown: str,
        limit: int = 10,
        segments: Sequence[Segment] = (),
    ) -> dict[str, Any]:
        value_of = field_of(breakdown)
        users: dict[str, set[str]] = defaultdict(set)
        daily: dict[tuple[str, date], set[str]] = defaultdict(set)
        for e in self.counting(first, last, segments):
            v = value_of(e)
            if v is None:
                continue
            users[v].add(e.user)
            daily[v, e.day].add(e.user)
        # Python compares str by code point: the spec's order for ties.
        ranked = sorted(users, key=lambda v: (-len(users[v]), v))[:limit]
        return {
            "from": first.isoformat(),
            "to": last.isoformat(),
            "segments": self.described(segments),
            "breakdown": breakdown,
            "limit": limit,
            "series": [
                {
                    "value": v,
                    "dau": [
                        {"date": d.isoformat(), "unique_users": len(daily[v, d])}
                        for d in days(first, last)
                    ],
                }
                for v in ranked
            ],
        }


class _Chains:
    """Every chain from one first event, searched exhaustively.

    The search remembers only what can still matter: the step, the time of the last event
    taken, and which events *at that very time* are taken already (every earlier event is
    out of reach anyway, and no later one has been taken).
    """

    def __init__(self, evs: Sequence[Event], steps: Sequence[str], horizon: datetime) -> None:
        self.evs = evs
        self.steps = steps
        self.horizon = horizon
        self.memo: dict[tuple[int, datetime, frozenset[int]], int] = {}

    def reach(self, first: int) -> int:
        return 1 + self.deeper(1, self.evs[first].at, frozenset({first}))

    def deeper(self, step: int, last: datetime, used_at_last: frozenset[int]) -> int:
        """The most further steps after taking events ``used_at_last`` at time ``last``."""
        if step == len(self.steps):
            return 0
        key = (step, last, used_at_last)
        if key in self.memo:
            return self.memo[key]
        found = 0
        for j, e in enumerate(self.evs):
            if e.type != self.steps[step] or e.at < last or e.at > self.horizon:
                continue
            if e.at == last:
                if j in used_at_last:
                    continue
                used = used_at_last | {j}
            else:
                used = frozenset({j})
            found = max(found, 1 + self.deeper(step + 1, e.at, used))
            if found == len(self.steps) - step:
                break
        self.memo[key] = found
        return found


def _g(granularity: str) -> int:
    return {"day": 1, "week": 7}[granularity]


# ---------------------------------------------------------------------------------------
# The seeded events.

FIRST_DAY = date(2025, 2, 24)
LAST_DAY = date(2025, 3, 15)
TYPES = ["app_open", "view_item", "add_to_cart", "purchase", "login", "promo,click"]
TYPE_WEIGHTS = [3, 3, 2, 1, 1, 0.3]
OFFSETS = [
    timezone(timedelta(hours=3)),
    timezone(timedelta(hours=-5)),
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=-9, minutes=-30)),
    UTC,
]
# Floats whose stored text is their repr (see the module's docstring).
FLOATS = [9.99, 19.99, 0.5, 100.0, 2.25, 1234.5678, 0.0001]
# Ties on purpose for a breakdown on properties.plan: each value held by exactly 3 users
# ("9" by two users as a string and one as the number 9), so the limit cuts among ties and
# code-point order decides ("10" < "9" < "B" < "a" < "b" < "é").
PLAN_TIES = ["b", "a", "é", "B", "9", "10"]
PLAN_TOP = "zz-top"  # 4 users: first whatever the order of ties


def at_offset(at: datetime, tz: timezone) -> str:
    """``at`` (UTC) written in another offset, microseconds always shown."""
    text = at.astimezone(tz).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z") if tz is UTC else text


@dataclass
class Dataset:
    """What is sent, in order: the first load's batches, then the late ones (``sent``);
    ``more`` and ``after`` only for the test that follows one app through every state."""

    initial: list[list[Wire]] = field(default_factory=list)
    late: list[list[Wire]] = field(default_factory=list)
    more: list[Wire] = field(default_factory=list)
    after: list[Wire] = field(default_factory=list)

    @property
    def sent(self) -> list[Wire]:
        return [e for b in [*self.initial, *self.late] for e in b]

    def events(self) -> list[Event]:
        return dedupe(self.sent)


class _Gen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def wire(
        self,
        user: str | int,
        type_: str,
        at: datetime,
        properties: dict[str, Any] | None = None,
        tz: timezone | None = None,
    ) -> Wire:
        return {
            "event_id": self.uuid(),
            "occurred_at": at_offset(at, tz or self.rng.choice(OFFSETS)),
            "user_id": user,
            "event_type": type_,
            "properties": self.properties() if properties is None else properties,
        }

    def properties(self) -> dict[str, Any]:
        r = self.rng
        p: dict[str, Any] = {}
        if r.random() < 0.8:
            p["country"] = r.choice(["UA", "UA", "PL", "DE", "US", "ua"])
        roll = r.random()
        if roll < 0.55:
            device: dict[str, Any] = {"os": r.choice(["iOS", "iOS", "Android", "android"])}
            if r.random() < 0.6:
                device["v"] = r.choice([16, 17, 17, "17"])
            p["device"] = device
        elif roll < 0.62:
            p["device"] = None  # JSON null: no nested path reaches through it
        elif roll < 0.67:
            p["device"] = "desktop"  # not an object: device.os is missing
        if r.random() < 0.35:
            p["price"] = r.choice([*FLOATS, 17, "9.99", 0])
        if r.random() < 0.3:
            p["premium"] = r.choice([True, False, "true", None])
        if r.random() < 0.25:
            p["n"] = r.choice([17, 17.0, "17", 170])
        if r.random() < 0.1:
            p["tags"] = r.choice([["a", "b"], [], ["a", 1, None, 2.5]])
        if r.random() < 0.1:
            p["ab-test"] = {"arm_id": r.choice(["A", "B"]), "on": r.choice([True, False])}
        return p

    def instant(self, day: date) -> datetime:
        """A time on ``day`` (UTC), often within two hours of a UTC midnight."""
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if self.rng.random() < 0.3:
            seconds = self.rng.choice([self.rng.uniform(0, 7200), self.rng.uniform(79200, 86399)])
        else:
            seconds = self.rng.uniform(0, 86399)
        return start + timedelta(seconds=int(seconds), microseconds=self.rng.randrange(1_000_000))


def generate(seed: int = 12) -> Dataset:
    """~30 random users over ``FIRST_DAY..LAST_DAY`` plus hand-made cases, late events and
    resends (see the comments for what each case is for)."""
    g = _Gen(seed)
    r = g.rng
    first_load: list[Wire] = []
    user_ids: list[str | int] = [f"u{i:02d}" for i in range(30)]
    user_ids[7] = 7007  # an integer user_id: stored as the text "7007"
    span = (LAST_DAY - FIRST_DAY).days
    for user in user_ids:
        signup = FIRST_DAY + timedelta(days=r.randrange(span))
        for d in days(signup, LAST_DAY):
            if r.random() > 0.65:
                continue
            for _ in range(r.choice([1, 2, 2, 3, 4, 5])):
                at = g.instant(d)
                first_load.append(g.wire(user, r.choices(TYPES, TYPE_WEIGHTS)[0], at))
                if r.random() < 0.08:
                    # A tie: another event of the same user at the identical instant, of the
                    # same type or of another, written in another offset.
                    type_ = first_load[-1]["event_type"] if r.random() < 0.5 else r.choice(TYPES)
                    first_load.append(g.wire(user, type_, at))

    # Hand-made funnel cases (their users have no other events).
    t0 = datetime(2025, 3, 4, 21, 30, 0, 250_000, tzinfo=UTC)
    us = timedelta(microseconds=1)
    hour = timedelta(hours=1)
    plus3, minus5 = OFFSETS[0], OFFSETS[1]
    cases: list[tuple[str, str, datetime]] = [
        # two events of one type at the identical instant: view_item,view_item reached
        ("f-tie-same", "view_item", t0),
        ("f-tie-same", "view_item", t0),
        # two types at the identical instant: reached in either order
        ("f-tie-diff", "view_item", t0),
        ("f-tie-diff", "add_to_cart", t0),
        # exactly the window (3600 s) apart, across a UTC midnight: reached
        ("f-edge-in", "view_item", datetime(2025, 3, 5, 23, 30, 0, 123_456, tzinfo=UTC)),
        ("f-edge-in", "add_to_cart", datetime(2025, 3, 6, 0, 30, 0, 123_456, tzinfo=UTC)),
        # one microsecond more than the window: not reached with window=3600
        ("f-edge-out", "view_item", datetime(2025, 3, 5, 23, 30, 0, 123_456, tzinfo=UTC)),
        ("f-edge-out", "add_to_cart", datetime(2025, 3, 6, 0, 30, 0, 123_457, tzinfo=UTC)),
        # one microsecond less than the window
        ("f-edge-under", "view_item", datetime(2025, 3, 7, 10, 0, tzinfo=UTC)),
        ("f-edge-under", "add_to_cart", datetime(2025, 3, 7, 10, 59, 59, 999_999, tzinfo=UTC)),
        # a tie (so the exact walk, not the ASOF joins) and a step exactly the window later
        ("f-tie-edge", "view_item", datetime(2025, 3, 8, 22, 0, 0, 999_999, tzinfo=UTC)),
        ("f-tie-edge", "view_item", datetime(2025, 3, 8, 22, 0, 0, 999_999, tzinfo=UTC)),
        ("f-tie-edge", "add_to_cart", datetime(2025, 3, 8, 23, 0, 0, 999_999, tzinfo=UTC)),
        # the wrong order only
        ("f-order", "add_to_cart", t0),
        ("f-order", "view_item", t0 + us),
        # only a later first step fits the window (a search from the earliest one fails)
        ("f-later-start", "view_item", t0),
        ("f-later-start", "view_item", t0 + 2 * hour),
        ("f-later-start", "add_to_cart", t0 + 2.5 * hour),
        # A,B,C where the first A cannot finish in 1 h but the second can
        ("f-abc", "view_item", t0),
        ("f-abc", "add_to_cart", t0 + timedelta(minutes=10)),
        ("f-abc", "view_item", t0 + timedelta(minutes=30)),
        ("f-abc", "add_to_cart", t0 + timedelta(minutes=40)),
        ("f-abc", "purchase", t0 + timedelta(minutes=70)),
        # one view_item only: view_item,view_item,add_to_cart stops at step 1
        ("f-once", "view_item", t0),
        ("f-once", "add_to_cart", t0 + us),
        # three of a kind with a tie: view_item x3 reached
        ("f-three", "view_item", t0),
        ("f-three", "view_item", t0),
        ("f-three", "view_item", t0 + us),
        ("f-three", "add_to_cart", t0 + us),
        # a tie whose sort order is "wrong": B,A at one instant then A later; steps A,B,A
        ("f-aba", "add_to_cart", t0),
        ("f-aba", "view_item", t0),
        ("f-aba", "view_item", t0 + us),
        # the first step the day before the range (02-28 23:30 UTC, 03-01 02:30 local +03)
        ("f-before", "view_item", datetime(2025, 2, 28, 23, 30, tzinfo=UTC)),
        ("f-before", "add_to_cart", datetime(2025, 3, 1, 0, 10, tzinfo=UTC)),
        # long chains for 10-step funnels
        *[
            ("f-long", t, datetime(2025, 3, 9, 8, tzinfo=UTC) + i * timedelta(minutes=7))
            for i, t in enumerate(TYPES[:5] * 2)
        ],
        # a chain across the last compacted day and the first hot one
        ("f-straddle", "view_item", datetime(2025, 3, 10, 23, 50, tzinfo=UTC)),
        ("f-straddle", "add_to_cart", datetime(2025, 3, 11, 0, 20, tzinfo=UTC)),
        # the first step in a day that is compacted, the second sent late (below)
        ("f-late", "view_item", datetime(2025, 3, 5, 8, tzinfo=UTC)),
        # a tie between a compacted event and a late one (below)
        ("f-late-tie", "view_item", datetime(2025, 3, 6, 23, 0, 0, 5, tzinfo=UTC)),
    ]
    for user, type_, at in cases:
        tz = plus3 if at.hour >= 21 else minus5 if at.hour < 5 else r.choice(OFFSETS)
        first_load.append(g.wire(user, type_, at, {"country": "UA"}, tz))
    # exactly at UTC midnights (written in other offsets), and a microsecond before
    midnight = datetime(2025, 3, 1, tzinfo=UTC)
    for user, type_, at, tz in [
        ("d-midnight", "view_item", midnight, minus5),  # 2025-02-28T19:00:00-05:00
        ("d-midnight", "add_to_cart", midnight - us, plus3),  # 02-28 (UTC), 03-01 local
        ("d-midnight", "add_to_cart", datetime(2025, 3, 15, tzinfo=UTC) - us, plus3),
        ("d-midnight", "purchase", datetime(2025, 3, 15, tzinfo=UTC), minus5),
        ("d-midnight", "view_item", datetime(2025, 3, 11, tzinfo=UTC), UTC),  # first hot day
        ("d-midnight", "add_to_cart", datetime(2025, 3, 11, tzinfo=UTC) - us, UTC),
    ]:
        first_load.append(g.wire(user, type_, at, {"country": "PL"}, tz))
    # a tie that only exists without a segment: view_item,view_item with country UA is 1 step
    for country in ("UA", "PL"):
        first_load.append(g.wire("f-tie-seg", "view_item", t0, {"country": country}))

    # properties.plan with ties (see PLAN_TIES), all inside 03-01..03-14.
    plan_users = [u for u in user_ids if u != 7007]
    r.shuffle(plan_users)
    holders: list[tuple[str | int, Any]] = []
    for k, value in enumerate(PLAN_TIES):
        for j, user in enumerate(plan_users[3 * k : 3 * k + 3]):
            holders.append((user, 9 if value == "9" and j == 0 else value))
    holders += [(u, PLAN_TOP) for u in plan_users[18:22]]
    holders += [(plan_users[22], None)]  # a JSON null is in no series
    for user, value in holders:
        for _ in range(r.choice([1, 2, 3])):  # several events of one user count once
            day = date(2025, 3, 1) + timedelta(days=r.randrange(14))
            props = {"plan": value, "src": "ads"}
            first_load.append(g.wire(user, "app_open", g.instant(day), props))
    # A nested object as a segment value and as a breakdown value, keys in both orders.
    for user in ("u01", "u02"):
        for props in ({"device": {"os": "iOS", "v": 17}}, {"device": {"v": 17, "os": "iOS"}}):
            first_load.append(
                g.wire(user, "purchase", g.instant(date(2025, 3, 6)), {**props, "country": "UA"})
            )

    r.shuffle(first_load)
    # Duplicates within the first load: a copy right behind its original in the same batch
    # (changed), and copies in a later batch (one unchanged, one changed).
    for i in r.sample(range(len(first_load)), 6):
        original = first_load[i]
        changed = dict(original, event_type="purchase", properties={"country": "XX"})
        first_load.insert(i + 1, changed)
    batches = [first_load[i : i + 250] for i in range(0, len(first_load), 250)]
    resend = r.sample(batches[0], 8)
    batches[-1] = [
        *batches[-1],
        *resend[:4],
        *(
            dict(e, user_id="intruder", occurred_at=at_offset(g.instant(date(2025, 3, 12)), UTC))
            for e in resend[4:]
        ),
    ]

    # Late: sent after days up to 03-10 were compacted.
    late: list[Wire] = [
        g.wire("f-late", "add_to_cart", datetime(2025, 3, 5, 8, 30, tzinfo=UTC), {"country": "UA"}),
        g.wire(
            "f-late-tie",
            "view_item",
            datetime(2025, 3, 6, 23, 0, 0, 5, tzinfo=UTC),
            {"country": "UA"},
            OFFSETS[1],
        ),
        # moves a user's first event ever earlier (cohorts, retention)
        g.wire("u03", "login", g.instant(date(2025, 2, 25))),
        g.wire("late-new", "purchase", g.instant(date(2025, 3, 2)), {"country": "UA"}),
        g.wire("late-new", "login", g.instant(date(2025, 3, 9))),
    ]
    for _ in range(25):
        day = FIRST_DAY + timedelta(days=r.randrange(15))
        late.append(g.wire(r.choice(user_ids), r.choices(TYPES, TYPE_WEIGHTS)[0], g.instant(day)))
    late.append(g.wire("u05", "view_item", g.instant(date(2025, 3, 13))))  # a hot day
    # Resends of stored events, now in the lake for compacted days: unchanged, and changed in
    # every field but the id (another day, type, user, properties): first write wins.
    stored = [e for b in batches for e in b]
    for e in r.sample(stored, 6):
        late.append(dict(e))
    for e in r.sample(stored, 10):
        late.append(
            dict(
                e,
                occurred_at=at_offset(g.instant(date(2025, 3, 13)), OFFSETS[1]),
                user_id="ghost",
                event_type="view_item",
                properties={"device": {"os": "iOS"}, "plan": "a"},
            )
        )
    r.shuffle(late)

    # More for compacted days, written with a hot window that covers them again: the writer
    # gives those days partitions, and moves their late rows out of the default partition.
    more = [
        g.wire("f-more", "view_item", datetime(2025, 3, 5, 9, tzinfo=UTC), {"country": "UA"}),
        g.wire("f-more", "add_to_cart", datetime(2025, 3, 5, 9, 10, tzinfo=UTC), {"country": "UA"}),
        g.wire("u04", "purchase", g.instant(date(2025, 2, 26)), {"device": {"os": "iOS"}}),
    ]
    # After everything was compacted: a new hot day, a late event, resends (one changed).
    sent_so_far = [e for b in [*batches, late] for e in b]
    after = [
        g.wire("f-after", "view_item", datetime(2025, 3, 15, tzinfo=UTC) - us, tz=plus3),
        g.wire("f-after", "add_to_cart", datetime(2025, 3, 15, tzinfo=UTC), tz=minus5),
        g.wire("f-after", "purchase", g.instant(date(2025, 3, 3))),
        g.wire("u09", "app_open", g.instant(date(2025, 3, 14)), {"plan": "b"}),
        *(dict(e) for e in r.sample(sent_so_far, 2)),
        *(dict(e, user_id="ghost", event_type="login") for e in r.sample(sent_so_far, 3)),
    ]
    return Dataset(initial=batches, late=[late], more=more, after=after)
