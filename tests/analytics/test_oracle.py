"""Every ``/stats`` endpoint against the brute-force oracle (``tests/analytics/oracle.py``).

The seeded events go through the real write path (``EventWriter``, the real ``Compactor``)
into one of three states, and each endpoint is asked through the ASGI app with many sets of
parameters; every answer must equal the oracle's, whole:

- ``hot``: everything in PostgreSQL (the late batch too, just written after the rest);
- ``split``: days before 2025-03-11 compacted to the lake, the later ones hot, then the late
  batch (events for compacted days, resends of events already in the lake) in PostgreSQL's
  default partition;
- ``cold``: everything compacted, the late batch included (a second file for its days).

The expected answers never come from the service's code: the oracle is plain Python over
the list of events sent.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg
import duckdb
import pytest
from falcon import testing

from core.config import Settings
from importer.run import Options, run_import
from pipeline.steps.write import stage_messages as stage
from service.app import create_app
from storage.compactor import Compactor
from storage.db import drop_database
from storage.lake import Lake
from storage.migrate import migrate
from storage.writer import EventWriter, create_writer_pool
from tests.analytics.oracle import (
    FIRST_DAY,
    LAST_DAY,
    PLAN_TIES,
    PLAN_TOP,
    TYPES,
    Dataset,
    Oracle,
    Segment,
    dedupe,
    duck_double,
    extract,
    generate,
    jsonb_key_order,
)
from tests.conftest import API_KEY, make_settings
from tests.storage.test_writer import batch

TODAY = date(2025, 3, 17)  # the writer's and the compactor's today
FIRST_HOT = date(2025, 3, 11)  # with hot_days=7: the split state's first hot day
F, T = date(2025, 3, 1), date(2025, 3, 14)  # the usual range of the queries

DATASET = generate(seed=12)
ORACLE = Oracle(DATASET.events())

# ---------------------------------------------------------------------------------------
# Storing the events.


async def store(settings: Settings, lake: Lake, data: Dataset, state: str) -> None:
    pool = await create_writer_pool(settings.database_url, size=2)
    try:
        everything_hot = EventWriter(pool, notify_channel="x", hot_days=40, today=lambda: TODAY)
        for b in data.initial:  # one after the other: across batches, the first write wins
            await everything_hot.write(stage([batch(b)]))
        if state != "hot":
            report = await Compactor(
                settings.database_url, lake, hot_days=7, today=lambda: TODAY
            ).run_once()
            assert report.days[0] == FIRST_DAY and report.days[-1] == FIRST_HOT - timedelta(1)
        late_writer = EventWriter(
            pool, notify_channel="x", hot_days=40 if state == "hot" else 7, today=lambda: TODAY
        )
        for b in data.late:
            await late_writer.write(stage([batch(b)]))
        if state == "cold":
            report = await Compactor(
                settings.database_url, lake, hot_days=1, today=lambda: date(2025, 5, 1)
            ).run_once()
            assert report.days
    finally:
        await pool.close()


STATES = ("hot", "split", "cold")


async def _store_checked(url: str, lake_dir: str, state: str) -> None:
    await migrate(url)
    s = make_settings(database_url=url, lake_dir=lake_dir)
    lake = Lake(lake_dir)
    await store(s, lake, DATASET, state)
    conn = await asyncpg.connect(url)
    try:
        hot = await conn.fetchval("SELECT count(*) FROM events")
        late_hot = await conn.fetchval("SELECT count(*) FROM events_default")
    finally:
        await conn.close()
    files = list(lake.root.rglob("*.parquet"))
    stored = len(DATASET.events())
    if state == "hot":
        assert (hot, files) == (stored, [])
    elif state == "split":
        assert 0 < hot < stored and files and late_hot > 0
    else:
        assert hot == 0 and files


@pytest.fixture(scope="module")
def stored_states(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[str, str]]]:
    """The dataset stored once in each state, each in a database of its own (so the
    endpoint tests need not store it again): state -> (database URL, lake directory)."""
    made: dict[str, tuple[str, str]] = {}
    try:
        for state in STATES:
            parts = urlsplit(database_url)
            url = urlunsplit(parts._replace(path=f"{parts.path}_oracle_{state}"))
            made[state] = (url, str(tmp_path_factory.mktemp(f"lake-{state}")))
            asyncio.run(_store_checked(*made[state], state))
        yield made
    finally:
        for url, _ in made.values():
            asyncio.run(drop_database(url))


@dataclass
class Service:
    state: str
    client: testing.ASGIConductor


# How the API process answers in test_one_app_through_every_state: from its bitmaps of users
# over its mirror of the hot rows (the default), or from rows with the mirror but the user
# index turned off (it meets more than 20 users in the first query, and turns itself off).
# The endpoint tests use the default; test_oracle_paths.py runs their cases the other ways.
WAYS: dict[str, dict[str, int]] = {"": {}, "-no-index": {"user_index_users": 20}}


@pytest.fixture(params=STATES)
async def service(
    request: pytest.FixtureRequest,
    settings: Settings,
    stored_states: dict[str, tuple[str, str]],
) -> AsyncIterator[Service]:
    """The app, over the dataset stored in one of the three states."""
    url, lake_dir = stored_states[request.param]
    s = settings.with_overrides(database_url=url, lake_dir=lake_dir)
    async with testing.ASGIConductor(create_app(s), headers={"X-API-Key": API_KEY}) as c:
        yield Service(request.param, c)


# ---------------------------------------------------------------------------------------
# Comparing.


def differences(expected: Any, got: Any, where: str = "$") -> list[str]:
    """Where two JSON values differ; floats equal within 1e-9 (both rounded to 6 places)."""
    if isinstance(expected, float) and isinstance(got, int | float) and not isinstance(got, bool):
        return (
            [] if math.isclose(expected, got, abs_tol=1e-9) else [f"{where}: {expected} != {got}"]
        )
    if isinstance(expected, dict) and isinstance(got, dict):
        out = [f"{where}: missing {k!r}" for k in expected if k not in got]
        out += [f"{where}: unexpected {k!r}" for k in got if k not in expected]
        for k in expected:
            if k in got:
                out += differences(expected[k], got[k], f"{where}.{k}")
        return out
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return [
                f"{where}: {len(expected)} items != {len(got)}: expected "
                f"{json.dumps(expected, ensure_ascii=False)[:600]} got "
                f"{json.dumps(got, ensure_ascii=False)[:600]}"
            ]
        out = []
        for i, (a, b) in enumerate(zip(expected, got, strict=True)):
            out += differences(a, b, f"{where}[{i}]")
        return out
    if type(expected) is not type(got) or expected != got:
        return [f"{where}: {expected!r} != {got!r}"]
    return []


@dataclass(frozen=True)
class Case:
    """One request and the oracle's answer to it."""

    id: str
    path: str
    params: list[tuple[str, str]]
    expected: Callable[[Oracle], dict[str, Any]]


def seg_params(segments: Sequence[Segment]) -> list[tuple[str, str]]:
    return [("segment", f"{k}:{v}") for k, v in segments]


def rng(first: date, last: date) -> list[tuple[str, str]]:
    return [("from", first.isoformat()), ("to", last.isoformat())]


async def check(service: Service, cases: Sequence[Case], oracle: Oracle = ORACLE) -> None:
    """Ask every case; fail once at the end with every mismatch (which case, where)."""
    problems = []
    for case in cases:
        result = await service.client.simulate_get(case.path, query_string=urlencode(case.params))
        if result.status_code != 200:
            problems.append(f"[{case.id}] {result.status_code}: {result.text[:300]}")
            continue
        diffs = differences(case.expected(oracle), result.json)
        if diffs:
            problems.append(
                f"[{case.id}] {urlencode(case.params)}\n    " + "\n    ".join(diffs[:8])
            )
    assert not problems, f"{service.state}: {len(problems)} of {len(cases)} cases differ\n" + (
        "\n".join(problems)
    )


# ---------------------------------------------------------------------------------------
# The cases.

UA: Segment = ("properties.country", "UA")
IOS: Segment = ("properties.device.os", "iOS")
PURCHASE: Segment = ("event_type", "purchase")
# Segments that PostgreSQL's jsonb containment matches more widely than the text test
# (17.0 = 17 as numbers; an object contains one with fewer keys): hot rows need the exact test.
INT17: Segment = ("properties.n", "17")
IOS_ONLY: Segment = ("properties.device", '{"os":"iOS"}')
SEGMENT_SETS: list[tuple[str, list[Segment]]] = [
    ("none", []),
    ("type", [PURCHASE]),
    ("type-with-comma", [("event_type", "promo,click")]),
    ("top-level", [UA]),
    ("lowercase-value", [("properties.country", "ua")]),
    ("nested", [IOS]),
    ("nested-number", [("properties.device.v", "17")]),
    ("float", [("properties.price", "9.99")]),
    ("float-integral", [("properties.price", "100.0")]),
    ("int-not-float", [("properties.n", "17")]),
    ("float-not-int", [("properties.n", "17.0")]),
    ("zero", [("properties.price", "0")]),
    ("boolean", [("properties.premium", "true")]),
    ("boolean-false", [("properties.premium", "false")]),
    ("object-jsonb-order", [("properties.device", '{"v":17,"os":"iOS"}')]),
    ("object-sent-order", [("properties.device", '{"os":"iOS","v":17}')]),
    ("array", [("properties.tags", '["a","b"]')]),
    ("not-an-object", [("properties.device", "desktop")]),
    ("dash-name", [("properties.ab-test.arm_id", "A")]),
    ("null-never", [("properties.premium", "null")]),
    ("combined", [PURCHASE, IOS]),
    ("combined-3", [UA, ("properties.device.os", "Android"), ("event_type", "view_item")]),
]

ALIAS_RANGE = (date(2025, 3, 2), date(2025, 3, 12))
ALIASES = [("from_date", "2025-03-02"), ("to_date", "2025-03-12")]

DAU_CASES = [
    Case(
        f"dau-{name}",
        "/stats/dau",
        rng(F, T) + seg_params(segs),
        lambda o, segs=segs: o.dau(F, T, segs),  # type: ignore[misc]
    )
    for name, segs in SEGMENT_SETS
] + [
    Case(
        "dau-whole-history",
        "/stats/dau",
        rng(FIRST_DAY - timedelta(2), LAST_DAY + timedelta(2)),
        lambda o: o.dau(FIRST_DAY - timedelta(2), LAST_DAY + timedelta(2)),
    ),
    Case(
        "dau-one-day-aliases",
        "/stats/dau",
        [("from_date", "2025-03-06"), ("to_date", "2025-03-06"), *seg_params([IOS])],
        lambda o: o.dau(date(2025, 3, 6), date(2025, 3, 6), [IOS]),
    ),
    Case(
        "dau-same-segment-twice",
        "/stats/dau",
        [*rng(F, T), *seg_params([IOS, IOS])],
        lambda o: o.dau(F, T, [IOS, IOS]),
    ),
    Case(
        "dau-midnights",
        "/stats/dau",
        [*rng(date(2025, 2, 28), date(2025, 3, 1)), *seg_params([("properties.country", "PL")])],
        lambda o: o.dau(date(2025, 2, 28), date(2025, 3, 1), [("properties.country", "PL")]),
    ),
    Case(
        "dau-shorthand",
        "/stats/dau",
        [*rng(F, T), ("properties.device.os", "Android"), ("event_type", "view_item")],
        lambda o: o.dau(F, T, [("properties.device.os", "Android"), ("event_type", "view_item")]),
    ),
]

TOP_CASES = [
    Case(
        f"top-{name}",
        "/stats/top-events",
        rng(F, T) + seg_params(segs),
        lambda o, segs=segs: o.top_events(F, T, 10, segs),  # type: ignore[misc]
    )
    for name, segs in SEGMENT_SETS
] + [
    Case(
        "top-limit-3",
        "/stats/top-events",
        [*rng(FIRST_DAY, LAST_DAY), ("limit", "3")],
        lambda o: o.top_events(FIRST_DAY, LAST_DAY, 3),
    ),
    Case(
        "top-limit-1000-ua",
        "/stats/top-events",
        [*rng(date(2025, 2, 26), date(2025, 3, 5)), ("limit", "1000"), *seg_params([UA])],
        lambda o: o.top_events(date(2025, 2, 26), date(2025, 3, 5), 1000, [UA]),
    ),
]

RETENTION_PARAMS: list[tuple[date, int, str, list[Segment]]] = [
    (F, 3, "week", []),
    (date(2025, 3, 2), 5, "day", [IOS]),
    (date(2025, 2, 26), 7, "day", []),
    (date(2025, 3, 5), 3, "day", [("event_type", "login")]),
    (FIRST_DAY, 3, "week", [UA]),
    (date(2025, 3, 9), 4, "day", [("properties.price", "9.99")]),
    (date(2025, 2, 25), 3, "week", [UA, ("properties.device.os", "iOS")]),
]
RETENTION_CASES = [
    Case(
        f"retention-{start}-{w}-{g}-{len(segs)}",
        "/stats/retention",
        [
            ("start_date", start.isoformat()),
            ("windows", str(w)),
            ("granularity", g),
            *seg_params(segs),
        ],
        lambda o, a=(start, w, g, segs): o.retention(*a),  # type: ignore[misc]
    )
    for start, w, g, segs in RETENTION_PARAMS
]

FUNNEL_PARAMS: list[tuple[str, list[str], int | None, date, date, list[Segment]]] = [
    ("3-steps-default-window", ["view_item", "add_to_cart", "purchase"], None, F, T, []),
    ("2-steps-1h", ["view_item", "add_to_cart"], 3600, F, T, []),
    ("2-steps-1h-ua", ["view_item", "add_to_cart"], 3600, F, T, [UA]),
    ("reverse-1d", ["add_to_cart", "view_item"], 86400, F, T, []),
    ("repeat-60s", ["view_item", "view_item"], 60, F, T, []),
    ("repeat-1s-ua", ["view_item", "view_item"], 1, F, T, [UA]),
    ("repeat-3-1s", ["view_item", "view_item", "view_item"], 1, F, T, []),
    ("repeat-3-week", ["view_item", "view_item", "view_item"], 604800, F, T, []),
    ("aba-1h", ["view_item", "add_to_cart", "view_item"], 3600, F, T, []),
    ("aab-1d", ["view_item", "view_item", "add_to_cart", "purchase"], 86400, F, T, []),
    ("tiny-window", ["app_open", "purchase"], 1, F, T, []),
    ("max-window", ["login", "app_open", "login"], 7776000, FIRST_DAY, LAST_DAY, []),
    ("10-steps-2h", TYPES[:5] * 2, 7200, F, T, []),
    ("10-steps-1h", TYPES[:5] * 2, 3600, F, T, []),
    ("seg-type", ["view_item", "add_to_cart"], 604800, F, T, [("event_type", "view_item")]),
    ("seg-type-repeat", ["view_item", "view_item"], 604800, F, T, [("event_type", "view_item")]),
    ("seg-nested", ["view_item", "add_to_cart"], 604800, F, T, [IOS]),
    ("seg-two", ["app_open", "view_item"], 86400, F, T, [UA, ("properties.device.v", "17")]),
    ("seg-int-not-float", ["app_open", "view_item"], 604800, F, T, [INT17]),
    ("seg-object", ["view_item", "add_to_cart"], 604800, F, T, [IOS_ONLY]),
    ("seg-object-aab", ["view_item", "view_item", "add_to_cart"], 86400, F, T, [IOS_ONLY]),
    ("range-edge", ["view_item", "add_to_cart"], 3600, date(2025, 2, 28), date(2025, 3, 5), []),
    ("range-short", ["view_item", "add_to_cart"], 7200, date(2025, 3, 5), date(2025, 3, 6), []),
    ("unknown-step", ["view_item", "no_such_type"], 604800, F, T, []),
    ("same-segment-twice", ["view_item", "add_to_cart"], 3600, F, T, [UA, UA]),
    ("366-days", ["view_item", "add_to_cart"], 7776000, date(2024, 3, 14), T, []),
    ("midnight", ["add_to_cart", "view_item"], 1, date(2025, 2, 28), date(2025, 3, 1), []),
    ("nobody", ["no_such_type", "view_item"], 604800, F, T, []),
]


def _funnel_params(
    steps: list[str], window: int | None, first: date, last: date, segs: list[Segment]
) -> list[tuple[str, str]]:
    out = [*rng(first, last), ("steps", ",".join(steps))]
    if window is not None:
        out.append(("window", str(window)))
    return out + seg_params(segs)


FUNNEL_CASES = [
    Case(
        f"funnel-{name}",
        "/stats/funnel",
        _funnel_params(steps, window, first, last, segs),
        lambda o, a=(steps, first, last, window or 604800, segs): o.funnel(*a),  # type: ignore[misc]
    )
    for name, steps, window, first, last, segs in FUNNEL_PARAMS
] + [
    Case(  # the parameter repeated: each value one type, a comma included
        "funnel-repeated-parameter",
        "/stats/funnel",
        [*rng(F, T), ("steps", "view_item"), ("steps", "promo,click"), ("window", "7776000")],
        lambda o: o.funnel(["view_item", "promo,click"], F, T, 7776000),
    ),
    Case(
        "funnel-shorthand",
        "/stats/funnel",
        [*rng(F, T), ("steps", "view_item,add_to_cart"), ("properties.country", "UA")],
        lambda o: o.funnel(["view_item", "add_to_cart"], F, T, 604800, [UA]),
    ),
    Case(
        "funnel-aliases",
        "/stats/funnel",
        [*ALIASES, ("steps", "app_open,view_item"), ("window", "86400")],
        lambda o: o.funnel(["app_open", "view_item"], *ALIAS_RANGE, 86400),
    ),
    Case(
        "funnel-repeated-parameter-3",
        "/stats/funnel",
        [*rng(F, T), ("steps", "app_open"), ("steps", "app_open"), ("steps", "purchase")],
        lambda o: o.funnel(["app_open", "app_open", "purchase"], F, T),
    ),
]

ACTIVE_PARAMS: list[tuple[int | None, date, date, list[Segment]]] = [
    (1, F, T, []),
    (7, F, T, []),
    (30, F, T, []),
    (None, FIRST_DAY, LAST_DAY + timedelta(3), []),
    (7, F, T, [PURCHASE]),
    (30, F, T, [UA, IOS]),
    (2, F, T, [("properties.price", "9.99")]),
    (90, LAST_DAY, LAST_DAY + timedelta(5), []),
    (7, F, T, [INT17]),
    (90, date(2024, 3, 14), T, []),  # 366 days, looking back 89 more
    (1, date(2025, 2, 28), date(2025, 3, 1), [("properties.country", "PL")]),
    (3, F, T, [IOS_ONLY]),
]
ACTIVE_CASES = [
    Case(
        f"active-{n}-{first}-{len(segs)}",
        "/stats/active-users",
        rng(first, last) + ([("window", str(n))] if n else []) + seg_params(segs),
        lambda o, a=(first, last, n or 7, segs): o.active_users(*a),  # type: ignore[misc]
    )
    for n, first, last, segs in ACTIVE_PARAMS
]
ACTIVE_CASES += [
    Case(
        "active-aliases",
        "/stats/active-users",
        [*ALIASES, ("window", "3")],
        lambda o: o.active_users(*ALIAS_RANGE, 3),
    ),
]

COHORT_PARAMS: list[tuple[date, date, int | None, str, list[Segment]]] = [
    (FIRST_DAY, LAST_DAY, None, "day", []),
    (F, T, 2, "week", []),
    (date(2025, 2, 26), date(2025, 3, 12), 5, "day", [IOS]),
    (FIRST_DAY, LAST_DAY, 3, "week", [("event_type", "login")]),
    (date(2025, 3, 3), date(2025, 3, 3), 1, "day", []),
    (date(2025, 3, 2), date(2025, 3, 10), 4, "day", [UA]),
    (FIRST_DAY, LAST_DAY, 2, "day", [INT17]),
    (date(2024, 3, 14), T, 2, "week", []),  # 366 days
    (FIRST_DAY, LAST_DAY, 2, "week", [IOS_ONLY]),
    (FIRST_DAY, LAST_DAY, 3, "day", [UA, ("event_type", "app_open")]),
]
COHORT_CASES = [
    Case(
        f"cohorts-{first}-{last}-{w}-{g}-{len(segs)}",
        "/stats/retention/cohorts",
        rng(first, last)
        + ([("windows", str(w))] if w else [])
        + [("granularity", g)]
        + seg_params(segs),
        lambda o, a=(first, last, w or 3, g, segs): o.cohorts(*a),  # type: ignore[misc]
    )
    for first, last, w, g, segs in COHORT_PARAMS
]
COHORT_CASES += [
    Case(
        "cohorts-aliases",
        "/stats/retention/cohorts",
        [*ALIASES, ("windows", "2"), ("granularity", "day")],
        lambda o: o.cohorts(*ALIAS_RANGE, 2, "day"),
    ),
]

BREAKDOWN_PARAMS: list[tuple[str, int | None, date, date, list[Segment]]] = [
    ("event_type", None, F, T, []),
    ("event_type", 2, F, T, []),
    ("event_type", 100, FIRST_DAY, LAST_DAY, [UA]),
    ("properties.plan", 4, F, T, []),  # the limit cuts among ties
    ("properties.plan", 4, F, T, [("event_type", "app_open"), ("properties.src", "ads")]),
    ("properties.plan", 1, F, T, []),
    ("properties.plan", 100, F, T, []),
    ("properties.plan", 3, date(2025, 3, 3), date(2025, 3, 9), []),
    ("properties.country", None, F, T, []),
    ("properties.device.os", 10, F, T, []),
    ("properties.device.os", 10, F, T, [PURCHASE]),
    ("properties.device", 100, F, T, []),  # objects (and one string)
    ("properties.device.v", 100, F, T, []),
    ("properties.price", 100, F, T, []),
    ("properties.n", 100, F, T, []),
    ("properties.premium", 100, F, T, []),
    ("properties.tags", 100, F, T, []),
    ("properties.ab-test", 100, F, T, []),
    ("properties.ab-test.on", 100, FIRST_DAY, LAST_DAY, []),
    ("properties.no_such_key", 10, F, T, []),
    ("event_type", 100, F, T, [INT17]),
    ("event_type", 100, date(2024, 3, 14), T, [UA, UA]),  # 366 days; a segment twice
    ("event_type", 10, date(2025, 3, 1), date(2025, 3, 1), [("properties.country", "PL")]),
    ("properties.country", 100, F, T, [IOS_ONLY]),
]
BREAKDOWN_CASES = [
    Case(
        f"breakdown-{field}-{limit}-{first}-{len(segs)}",
        "/stats/dau",
        rng(first, last)
        + [("breakdown", field)]
        + ([("limit", str(limit))] if limit else [])
        + seg_params(segs),
        lambda o, a=(first, last, field, limit or 10, segs): o.dau_breakdown(*a),  # type: ignore[misc]
    )
    for field, limit, first, last, segs in BREAKDOWN_PARAMS
]
BREAKDOWN_CASES += [
    Case(
        "breakdown-aliases",
        "/stats/dau",
        [*ALIASES, ("breakdown", "properties.device.os"), ("limit", "2")],
        lambda o: o.dau_breakdown(*ALIAS_RANGE, "properties.device.os", 2),
    ),
]


# ---------------------------------------------------------------------------------------
# The endpoints against the oracle, in each state.


async def test_dau(service: Service) -> None:
    await check(service, DAU_CASES)


async def test_top_events(service: Service) -> None:
    await check(service, TOP_CASES)


async def test_retention(service: Service) -> None:
    await check(service, RETENTION_CASES)


async def test_funnel(service: Service) -> None:
    await check(service, FUNNEL_CASES)


async def test_active_users(service: Service) -> None:
    await check(service, ACTIVE_CASES)


async def test_retention_cohorts(service: Service) -> None:
    await check(service, COHORT_CASES)


async def test_dau_breakdown(service: Service) -> None:
    await check(service, BREAKDOWN_CASES)


def _segmented(case: Case) -> bool:
    return any(
        k in {"segment", "event_type"} or k.startswith("properties.") for k, _ in case.params
    )


# What reads the hot rows through the API process's mirror of them (analytics/hot_mirror.py).
MIRRORED = [
    *FUNNEL_CASES,
    *BREAKDOWN_CASES,
    *(c for c in [*DAU_CASES, *ACTIVE_CASES, *COHORT_CASES] if _segmented(c)),
]


@pytest.mark.parametrize("way", ["", "-no-index"], ids=["indexed", "no-index"])
async def test_one_app_through_every_state(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path, way: str
) -> None:
    """One app, so one mirror of the hot rows (and one index of users over it), asked again
    after every write and compaction: each answer is the oracle's over what was sent so far."""
    s = settings.with_overrides(lake_dir=str(tmp_path / "lake"), **WAYS[way])
    lake = Lake(s.lake_dir)
    pool = await create_writer_pool(s.database_url, size=2)
    wide = EventWriter(pool, notify_channel="x", hot_days=40, today=lambda: TODAY)
    narrow = EventWriter(pool, notify_channel="x", hot_days=7, today=lambda: TODAY)
    sent: list[dict[str, Any]] = []

    async def send(writer: EventWriter, events: list[dict[str, Any]]) -> None:
        await writer.write(stage([batch(events)]))
        sent.extend(events)

    async def compact(hot_days: int, today: date) -> None:
        compactor = Compactor(s.database_url, lake, hot_days=hot_days, today=lambda: today)
        report = await compactor.run_once()
        assert report.days and not report.failed

    async def waiting(day: date) -> int:
        """Rows of ``day`` in the default partition."""
        return int(
            await db.fetchval(
                "SELECT count(*) FROM events_default "
                "WHERE occurred_at >= $1 AND occurred_at < $1 + interval '1 day'",
                datetime.combine(day, time(0), tzinfo=UTC),
            )
        )

    try:
        async with testing.ASGIConductor(create_app(s), headers={"X-API-Key": API_KEY}) as c:

            async def verify(name: str) -> None:
                # Without the index, a third of the cases (the module's time is bounded).
                cases = MIRRORED if not way else MIRRORED[::3]
                await check(Service(f"one app{way}, {name}", c), cases, Oracle(dedupe(sent)))

            for b in DATASET.initial:
                await send(wide, b)
            await verify("hot")
            await compact(7, TODAY)
            await verify("split")
            for b in DATASET.late:
                await send(narrow, b)
            assert await waiting(date(2025, 3, 5)) > 0
            await verify("split, late rows in the default partition")
            await send(wide, DATASET.more)  # partitions for 03-05 and 02-26: late rows moved
            assert await waiting(date(2025, 3, 5)) == 0
            await verify("late rows moved to new partitions")
            await compact(1, date(2025, 5, 1))
            assert await db.fetchval("SELECT count(*) FROM events") == 0
            await verify("cold")
            await send(narrow, DATASET.after)
            assert await waiting(date(2025, 3, 3)) > 0
            await verify("cold, then new hot rows and a late one")
    finally:
        await pool.close()


async def test_an_imported_and_an_ingested_copy_answer_alike(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """The same properties, once imported straight to the lake (a cold day) and once written
    by the worker's writer and compacted, are one value for segments and breakdowns."""
    s = settings.with_overrides(lake_dir=str(tmp_path / "lake"))
    props = {"device": {"os": "iOS", "v": 17}, "x": 1e16, "z": -0.0}
    event = {"occurred_at": "2025-03-05T10:00:00Z", "event_type": "purchase", "properties": props}
    ndjson = tmp_path / "in.ndjson"
    ndjson.write_bytes(
        json.dumps({**event, "event_id": str(uuid.uuid4()), "user_id": "imported"}).encode()
    )
    assert (await run_import(s, [str(ndjson)], Options(progress=False))).imported == 1
    pool = await create_writer_pool(s.database_url, size=1)
    try:
        writer = EventWriter(pool, notify_channel="x", hot_days=40, today=lambda: TODAY)
        await writer.write(
            stage([batch([{**event, "event_id": str(uuid.uuid4()), "user_id": "ingested"}])])
        )
    finally:
        await pool.close()
    await Compactor(s.database_url, Lake(s.lake_dir), hot_days=7, today=lambda: TODAY).run_once()
    answers = {}
    async with testing.ASGIConductor(create_app(s), headers={"X-API-Key": API_KEY}) as c:
        for key in props:
            query = f"from=2025-03-05&to=2025-03-05&breakdown=properties.{key}"
            series = (await c.simulate_get("/stats/dau", query_string=query)).json["series"]
            answers[key] = [(x["value"], x["dau"][0]["unique_users"]) for x in series]
    assert all(len(v) == 1 and v[0][1] == 2 for v in answers.values()), answers


# ---------------------------------------------------------------------------------------
# The oracle itself: hand-made cases with known answers, and the text of property values
# against DuckDB and PostgreSQL.


def depth(user: str, steps: list[str], window: int) -> int:
    evs = [e for e in ORACLE.events if e.user == user]
    assert evs, user
    return ORACLE.funnel_depth(evs, steps, window)


V, A, P = "view_item", "add_to_cart", "purchase"


@pytest.mark.parametrize(
    ("user", "steps", "window", "reached"),
    [
        ("f-tie-same", [V, V], 1, 2),
        ("f-tie-same", [V, V, V], 604800, 2),
        ("f-tie-diff", [V, A], 1, 2),
        ("f-tie-diff", [A, V], 1, 2),
        ("f-edge-in", [V, A], 3600, 2),
        ("f-edge-in", [V, A], 3599, 1),
        ("f-edge-out", [V, A], 3600, 1),
        ("f-edge-out", [V, A], 3601, 2),
        ("f-edge-under", [V, A], 3600, 2),
        ("f-tie-edge", [V, A], 3600, 2),
        ("f-tie-edge", [V, V, A], 3600, 3),
        ("f-tie-edge", [V, V, A], 3599, 2),
        ("f-order", [V, A], 604800, 1),
        ("f-order", [A, V], 1, 2),
        ("f-later-start", [V, A], 3600, 2),
        ("f-later-start", [V, A], 1799, 1),
        ("f-abc", [V, A, P], 3600, 3),
        ("f-abc", [V, A, P], 2399, 2),
        ("f-once", [V, V, A], 604800, 1),
        ("f-three", [V, V, V, A], 1, 4),
        ("f-three", [V, V, V, V], 604800, 3),
        ("f-aba", [V, A, V], 1, 3),
        ("f-aba", [A, V, V], 1, 3),
        ("f-aba", [V, V, A], 1, 2),
        ("f-long", TYPES[:5] * 2, 63 * 60, 10),
        ("f-long", TYPES[:5] * 2, 63 * 60 - 1, 9),
        ("f-straddle", [V, A], 1800, 2),
        ("f-late", [V, A], 1800, 2),
        ("f-late-tie", [V, V], 1, 2),
        ("f-tie-seg", [V, V], 1, 2),
    ],
)
def test_the_oracle_funnel_on_hand_made_cases(
    user: str, steps: list[str], window: int, reached: int
) -> None:
    assert depth(user, steps, window) == reached


def test_the_oracle_funnel_range_and_dedupe() -> None:
    # f-before's first step is on 02-28 (UTC): not a counting event from 03-01.
    answer = ORACLE.funnel([V, A], F, T, 604800)
    users = {e.user for e in ORACLE.events if e.user.startswith("f-")}
    assert "f-before" in users
    by_range = ORACLE.funnel([V, A], date(2025, 2, 28), T, 604800)
    assert by_range["steps"][1]["users"] == answer["steps"][1]["users"] + 1
    # Resends changed nothing: no "ghost" or "intruder" user, no country XX.
    assert not {"ghost", "intruder"} & {e.user for e in ORACLE.events}
    assert not any(e.properties.get("country") == "XX" for e in ORACLE.events)
    assert len(ORACLE.events) < len(DATASET.sent)
    # f-tie-seg's tie is of a UA and a PL event.
    tie_seg = [e for e in ORACLE.events if e.user == "f-tie-seg"]
    assert (
        ORACLE.funnel_depth([e for e in tie_seg if e.properties["country"] == "UA"], [V, V], 1) == 1
    )


def test_the_oracle_plan_ties() -> None:
    series = ORACLE.dau_breakdown(F, T, "properties.plan", 100)["series"]
    values = [s["value"] for s in series]
    assert values == [PLAN_TOP, *sorted(PLAN_TIES)] == [PLAN_TOP, "10", "9", "B", "a", "b", "é"]


def jsonb_like(value: Any) -> str:
    """A document written the way PostgreSQL prints jsonb (its key order, ", " and ": ")."""
    if isinstance(value, dict):
        ordered = jsonb_key_order(value)
        items = (f"{json.dumps(k, ensure_ascii=False)}: {jsonb_like(value[k])}" for k in ordered)
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(jsonb_like(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


PATHS = [
    ("country",),
    ("device",),
    ("device", "os"),
    ("device", "v"),
    ("price",),
    ("premium",),
    ("n",),
    ("tags",),
    ("ab-test",),
    ("ab-test", "arm_id"),
    ("ab-test", "on"),
    ("plan",),
    ("missing",),
    ("device", "os", "deeper"),
]


async def test_the_oracle_text_is_duckdbs_over_jsonb(db: asyncpg.Connection) -> None:
    """For every document of the dataset: PostgreSQL's jsonb text of it, read by DuckDB's
    json_extract_string at every path used, equals the oracle's text."""
    docs = list(
        {json.dumps(e.properties, sort_keys=True): e.properties for e in ORACLE.events}.values()
    )
    texts = await db.fetchval(
        "SELECT array_agg(d::jsonb::text ORDER BY n) "
        "FROM unnest($1::text[]) WITH ORDINALITY AS u(d, n)",
        [json.dumps(d) for d in docs],
    )
    for doc, stored in zip(docs, texts, strict=True):
        assert stored == jsonb_like(doc)  # the key order and number text the oracle assumes
    con = duckdb.connect()
    try:
        for path in PATHS:
            jpath = "$." + ".".join(f'"{p}"' for p in path)
            found = con.execute(
                "SELECT list(json_extract_string(d, $2) ORDER BY n) "
                "FROM unnest($1) WITH ORDINALITY AS u(d, n)",
                [texts, jpath],
            ).fetchone()
            assert found is not None
            for doc, stored, text in zip(docs, texts, found[0], strict=True):
                assert text == extract(doc, path), (stored, path)
    finally:
        con.close()


@pytest.mark.parametrize(
    "x",
    [
        *(17.0, 9.99, 100.0, 0.5, 0.0001, 1e-5, 1e-6, 1e-7, 1.5e-7, 1e15, 1e16, 1e20, 1e21),
        *(1.5e21, 0.30000000000000004, 123456789012345678.0, 1.7976931348623157e308, 5e-324),
        *(-2.5, 0.0, -0.0),
    ],
)
def test_duck_double_is_duckdbs(x: float) -> None:
    con = duckdb.connect()
    try:
        row = con.execute("SELECT json_extract_string(?, '$.a')", [f'{{"a": {x!r}}}']).fetchone()
    finally:
        con.close()
    assert row is not None and row[0] == duck_double(x)


# ---------------------------------------------------------------------------------------
# Bad parameters of the new endpoints, and the read scope.

R = "from=2025-03-01&to=2025-03-14"
TOO_LONG = "from=2024-03-13&to=2025-03-14"  # 367 days
ELEVEN = ",".join(["view_item"] * 11)


@pytest.mark.parametrize(
    ("path", "query", "parameter"),
    [
        ("/stats/funnel", f"{R}&steps=view_item", "steps"),
        ("/stats/funnel", f"{R}&steps={ELEVEN}", "steps"),
        ("/stats/funnel", f"{R}&" + "&".join(["steps=a"] * 11), "steps"),
        ("/stats/funnel", f"{R}", "steps"),
        ("/stats/funnel", f"{R}&steps=a,b&window=0", "window"),
        ("/stats/funnel", f"{R}&steps=a,b&window=7776001", "window"),
        ("/stats/funnel", f"{R}&steps=a,b&window=-5", "window"),
        ("/stats/funnel", f"{R}&steps=a,b&window=1.5", "window"),
        ("/stats/funnel", f"{R}&steps=a,b&window=x", "window"),
        ("/stats/funnel", "to=2025-03-14&steps=a,b", "from"),
        ("/stats/funnel", "from=2025-03-14&to=2025-03-01&steps=a,b", "from"),
        ("/stats/funnel", f"{R}&steps=a,b&segment=user_id:1", "segment"),
        ("/stats/funnel", f"{R}&steps=a,b&window=1&window=2", "window"),
        ("/stats/funnel", f"{TOO_LONG}&steps=a,b", "to"),
        ("/stats/active-users", TOO_LONG, "to"),
        ("/stats/dau", f"{TOO_LONG}&breakdown=event_type", "to"),
        ("/stats/retention/cohorts", TOO_LONG, "to"),
        ("/stats/active-users", f"{R}&window=0", "window"),
        ("/stats/active-users", f"{R}&window=91", "window"),
        ("/stats/active-users", f"{R}&window=seven", "window"),
        ("/stats/active-users", "from=2025-03-14&to=2025-03-01", "from"),
        ("/stats/active-users", f"{R}&segment=country", "segment"),
        ("/stats/dau", f"{R}&breakdown=user_id", "breakdown"),
        ("/stats/dau", f"{R}&breakdown=country", "breakdown"),
        ("/stats/dau", f"{R}&breakdown=properties.", "breakdown"),
        ("/stats/dau", f"{R}&breakdown=properties.a%3Bdrop", "breakdown"),
        ("/stats/dau", f"{R}&breakdown=event_type&limit=0", "limit"),
        ("/stats/dau", f"{R}&breakdown=event_type&limit=101", "limit"),
        ("/stats/dau", f"{R}&breakdown=event_type&limit=ten", "limit"),
        ("/stats/retention/cohorts", "from=2025-03-14&to=2025-03-01", "from"),
        ("/stats/retention/cohorts", f"{R}&granularity=month", "granularity"),
        ("/stats/retention/cohorts", f"{R}&windows=0", "windows"),
        ("/stats/retention/cohorts", "to=2025-03-14", "from"),
    ],
)
async def test_bad_parameters_are_400(
    client: testing.ASGIConductor, path: str, query: str, parameter: str
) -> None:
    result = await client.simulate_get(path, query_string=query)
    assert result.status_code == 400, result.text[:300]
    assert result.json["error"]["code"] == "invalid_parameter"
    assert result.json["error"]["parameter"] == parameter


NEW_ENDPOINTS = [
    f"/stats/funnel?{R}&steps=view_item,add_to_cart",
    f"/stats/active-users?{R}&window=7",
    f"/stats/retention/cohorts?{R}",
    f"/stats/dau?{R}&breakdown=event_type",
]


@pytest.mark.parametrize("url", NEW_ENDPOINTS)
async def test_the_new_endpoints_need_the_read_scope(settings: Settings, url: str) -> None:
    scoped = settings.with_overrides(
        api_key="", api_keys_list=("app-key:ingest", "dashboard-key:read", "ops-key:admin")
    )
    path, _, query = url.partition("?")
    async with testing.ASGIConductor(create_app(scoped)) as c:
        answers = {
            key: await c.simulate_get(path, query_string=query, headers={"X-API-Key": key})
            for key in ("app-key", "ops-key", "dashboard-key", "unknown-key")
        }
        anonymous = await c.simulate_get(path, query_string=query)
    for key in ("app-key", "ops-key"):
        assert answers[key].status_code == 403, (key, answers[key].text)
        assert answers[key].json["error"]["code"] == "insufficient_scope"
        assert answers[key].json["error"]["required_scope"] == "read"
    assert answers["dashboard-key"].status_code == 200, answers["dashboard-key"].text
    assert answers["unknown-key"].status_code == 401
    assert anonymous.status_code == 401
