"""The DuckDB SQL of each endpoint, over the lake files plus the hot facts.

Every statement reads two relations and treats them alike:

- the lake: ``read_parquet([files], hive_partitioning)`` whose ``date`` column comes from
  the ``date=YYYY-MM-DD`` directories (so a date filter skips whole files);
- the hot facts registered by ``analytics/engine.py``: ``hot_users`` / ``hot_counts``
  (exact), or ``hot_events`` filtered here with the same predicate as the lake.

Parameters are bound by name (``$first``, ``$seg0`` ...); file paths come from our own
manifest and are quoted; property names reach SQL only as bound JSON paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from analytics.params import (
    ActiveUsersParams,
    Breakdown,
    CohortsParams,
    DateRange,
    FunnelParams,
    Segment,
)
from analytics.sources import Sources

_EMPTY_LAKE = (
    "(SELECT CAST(NULL AS DATE) AS date, CAST(NULL AS TIMESTAMPTZ) AS occurred_at, "
    "CAST(NULL AS VARCHAR) AS user_id, CAST(NULL AS VARCHAR) AS event_type, "
    "CAST(NULL AS VARCHAR) AS properties WHERE false)"
)


def lake_relation(files: Sequence[str]) -> str:
    if not files:
        return _EMPTY_LAKE
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return f"read_parquet([{listed}], hive_partitioning = true, hive_types = {{'date': DATE}})"


def json_path(path: Sequence[str]) -> str:
    """A DuckDB JSON path for validated property names: ``$."a"."b"``."""
    return "$." + ".".join(f'"{name}"' for name in path)


@dataclass(slots=True)
class Statement:
    sql: str
    params: dict[str, Any] = field(default_factory=dict)
    files: tuple[str, ...] = ()  # the lake files it reads: where to look when it fails


def segment_filter(segments: Sequence[Segment], params: dict[str, Any]) -> str:
    """`` AND ...`` for each segment (the exact test, for lake and hot rows alike)."""
    clauses = []
    for i, s in enumerate(segments):
        params[f"seg{i}"] = s.value
        if s.kind == "event_type":
            clauses.append(f"event_type = $seg{i}")
        else:
            params[f"seg{i}_path"] = json_path(s.path)
            clauses.append(f"json_extract_string(properties, $seg{i}_path) = $seg{i}")
    return "".join(f" AND {c}" for c in clauses)


def _hot_table(sources: Sources) -> str:
    """The registered hot rows to filter: the mirror's or PostgreSQL's (``hot_rows``), or
    the superset PostgreSQL selected for the segments (``hot_events``)."""
    return "hot_rows" if sources.hot_rows is not None else "hot_events"


def _hot_pairs(sources: Sources, where: str) -> str:
    if sources.hot_users is not None:
        return "SELECT day, user_id FROM hot_users"
    return f"SELECT DISTINCT day, user_id FROM {_hot_table(sources)} WHERE true{where}"


def _hot_counts(sources: Sources, where: str) -> str:
    if sources.hot_counts is not None:
        return "SELECT event_type, events FROM hot_counts"
    return (
        f"SELECT event_type, count(*) AS events FROM {_hot_table(sources)} "
        f"WHERE true{where} GROUP BY 1"
    )


def daily_active_users(days: DateRange, segments: Sequence[Segment], sources: Sources) -> Statement:
    params: dict[str, Any] = {"first": days.first, "last": days.last}
    where = segment_filter(segments, params)
    sql = f"""
WITH pairs AS (
    SELECT date AS day, user_id FROM {lake_relation(sources.files)}
    WHERE date BETWEEN $first AND $last{where}
    UNION
    SELECT day, user_id FROM ({_hot_pairs(sources, where)}) AS hot
    WHERE day BETWEEN $first AND $last
), days AS (
    SELECT CAST(unnest(generate_series($first, $last, INTERVAL 1 DAY)) AS DATE) AS day
)
SELECT days.day, count(pairs.user_id) AS unique_users
FROM days LEFT JOIN pairs USING (day)
GROUP BY days.day ORDER BY days.day
"""
    return Statement(sql, params, sources.files)


def top_events(
    days: DateRange, limit: int, segments: Sequence[Segment], sources: Sources
) -> Statement:
    params: dict[str, Any] = {"first": days.first, "last": days.last, "limit": limit}
    where = segment_filter(segments, params)
    sql = f"""
WITH counted AS (
    SELECT event_type, count(*) AS events FROM {lake_relation(sources.files)}
    WHERE date BETWEEN $first AND $last{where} GROUP BY event_type
    UNION ALL
    SELECT event_type, events FROM ({_hot_counts(sources, where)}) AS hot
)
SELECT event_type, CAST(sum(events) AS BIGINT) AS count
FROM counted GROUP BY event_type
ORDER BY count DESC, event_type ASC
LIMIT $limit
"""
    return Statement(sql, params, sources.files)


def exact_daily_users(files: Sequence[str]) -> Statement:
    """Distinct users per day over the given lake files plus the registered ``hot_pairs``."""
    sql = f"""
SELECT day, count(DISTINCT user_id) AS users FROM (
    SELECT date AS day, user_id FROM {lake_relation(files)}
    UNION ALL
    SELECT day, user_id FROM hot_pairs
) GROUP BY day
"""
    return Statement(sql, files=tuple(files))


def counts_per_type(files: Sequence[str]) -> Statement:
    """Events per type in lake files whose footers carry no statistics."""
    return Statement(
        f"SELECT event_type, count(*) FROM {lake_relation(files)} GROUP BY event_type",
        files=tuple(files),
    )


def _rows(sources: Sources, columns: str, where: str) -> str:
    """Counting events of days ``$first`` .. ``$last``, from the lake and ``hot_rows`` alike;
    ``columns`` may name ``day``, ``t`` (epoch microseconds), ``user_id``, ``event_type`` and
    ``properties``."""
    lake = (
        "SELECT date AS day, epoch_us(occurred_at) AS t, user_id, event_type, properties "
        f"FROM {lake_relation(sources.files)} WHERE date BETWEEN $first AND $last{where}"
    )
    hot = (
        "SELECT day, epoch_us(occurred_at) AS t, user_id, event_type, properties "
        f"FROM hot_rows WHERE day BETWEEN $first AND $last{where}"
    )
    return f"SELECT {columns} FROM ({lake}) UNION ALL SELECT {columns} FROM ({hot})"


def funnel(p: FunnelParams, sources: Sources) -> Statement:
    """Users reaching each step, for users with no two step events at the same moment
    (level >= 0 rows: ``(level, users)``), and every step event of the others (level -1
    rows: ``user_id, t, event_type``), which ``analytics/funnel.py`` walks exactly.

    Without equal moments, the earliest next event after the one before is the best
    choice (it leaves the most of the window), and "distinct events" is "strictly later":
    so each step is an ASOF join (the first event of the next type strictly after), from
    every event of the first type, within ``window`` of it.
    """
    params: dict[str, Any] = {
        "first": p.days.first,
        "last": p.days.last,
        "types": list(dict.fromkeys(p.steps)),
        "window": p.window_seconds * 1_000_000,
    }
    where = segment_filter(p.segments, params) + " AND list_contains($types, event_type)"
    chain = []
    for i, step in enumerate(p.steps):
        params[f"step{i}"] = step
        if i == 0:
            chain.append(
                "s0 AS (SELECT user_id, t AS t0, t AS tn FROM clean WHERE event_type = $step0)"
            )
        else:
            chain.append(
                f"s{i} AS (SELECT s.user_id, s.t0, n.t AS tn FROM s{i - 1} AS s "
                f"ASOF JOIN (SELECT user_id, t FROM clean WHERE event_type = $step{i}) AS n "
                f"ON s.user_id = n.user_id AND s.tn < n.t WHERE n.t - s.t0 <= $window)"
            )
    counts = " UNION ALL ".join(
        f"SELECT {i} AS level, count(DISTINCT user_id) AS users, NULL AS user_id, "
        f"NULL AS t, NULL AS event_type FROM s{i}"
        for i in range(len(p.steps))
    )
    sql = f"""
WITH ev AS MATERIALIZED (
    {_rows(sources, "user_id, t, event_type", where)}
), ties AS (
    SELECT DISTINCT user_id FROM ev GROUP BY user_id, t HAVING count(*) > 1
), clean AS MATERIALIZED (
    SELECT * FROM ev ANTI JOIN ties USING (user_id)
), {", ".join(chain)}
{counts}
UNION ALL
SELECT -1, NULL, user_id, t, event_type FROM ev SEMI JOIN ties USING (user_id)
"""
    return Statement(sql, params, sources.files)


def _pairs(sources: Sources, where: str) -> str:
    """Distinct ``(day, user_id)`` of counting events of ``$first`` .. ``$last``."""
    return f"""
    SELECT date AS day, user_id FROM {lake_relation(sources.files)}
    WHERE date BETWEEN $first AND $last{where}
    UNION
    SELECT day, user_id FROM ({_hot_pairs(sources, where)}) AS hot
    WHERE day BETWEEN $first AND $last"""


def active_users(p: ActiveUsersParams, sources: Sources) -> Statement:
    """Each user's active days become disjoint spans of the days they make them count on
    (``[day, day + n - 1]``, cut where the span of the day before ends); the users of day
    d are the spans covering d: a running sum of +1 where a span starts, -1 after it ends.
    """
    params: dict[str, Any] = {
        "first": p.lookback_first,
        "last": p.days.last,
        "from": p.days.first,
        "n": p.window,
    }
    where = segment_filter(p.segments, params)
    sql = f"""
WITH pairs AS ({_pairs(sources, where)}
), ordered AS (
    SELECT day, lag(day) OVER (PARTITION BY user_id ORDER BY day) AS prev FROM pairs
), spans AS (
    SELECT CASE WHEN prev IS NULL THEN day ELSE greatest(day, prev + $n) END AS lo,
           day + ($n - 1) AS hi
    FROM ordered
), deltas AS (
    SELECT d, sum(x) AS x FROM (
        SELECT lo AS d, 1 AS x FROM spans WHERE lo <= hi
        UNION ALL
        SELECT hi + 1 AS d, -1 AS x FROM spans WHERE lo <= hi
    ) GROUP BY d
), days AS (
    SELECT CAST(unnest(generate_series($first, $last, INTERVAL 1 DAY)) AS DATE) AS day
), running AS (
    SELECT days.day, sum(coalesce(deltas.x, 0)) OVER (ORDER BY days.day) AS users
    FROM days LEFT JOIN deltas ON deltas.d = days.day
)
SELECT day, CAST(users AS BIGINT) FROM running WHERE day >= $from ORDER BY day
"""
    return Statement(sql, params, sources.files)


def cohorts(p: CohortsParams, sources: Sources) -> Statement:
    """Retention for every cohort start at once (one start is ``/stats/retention``).
    Cohort: users whose first counting event ever falls in a start's window 0 (the index of
    that start); window k: cohort users with such an event in [start + k*g, start + (k+1)*g).
    Rows ``(cohort, window, active)`` for windows with anyone active, plus
    ``(cohort, -1, size)``.
    """
    starts = p.starts
    g = 7 if p.granularity == "week" else 1
    params: dict[str, Any] = {
        "from": p.days.first,
        "cohorts_end": starts[-1] + timedelta(days=g),
        "end": p.end,
        "g": g,
        "windows": p.windows,
    }
    where = segment_filter(p.segments, params)
    lake = lake_relation(sources.files)
    hot = _hot_pairs(sources, where)
    sql = f"""
WITH firsts AS (
    SELECT user_id, min(day) AS first_day FROM (
        SELECT user_id, min(date) AS day FROM {lake} WHERE date < $cohorts_end{where}
        GROUP BY user_id
        UNION ALL
        SELECT user_id, min(day) AS day FROM ({hot}) AS hot WHERE day < $cohorts_end
        GROUP BY user_id
    ) GROUP BY user_id
), cohort AS (
    SELECT user_id, CAST((first_day - $from) // $g AS INTEGER) AS c
    FROM firsts WHERE first_day >= $from
), activity AS (
    SELECT date AS day, user_id FROM {lake} WHERE date >= $from AND date < $end{where}
    UNION
    SELECT day, user_id FROM ({hot}) AS hot WHERE day >= $from AND day < $end
), active AS (
    SELECT DISTINCT c, user_id, CAST((day - ($from + c * $g)) // $g AS INTEGER) AS w
    FROM activity JOIN cohort USING (user_id)
    WHERE day >= $from + c * $g
)
SELECT c, -1 AS w, count(*) AS n FROM cohort GROUP BY c
UNION ALL
SELECT c, w, count(*) AS n FROM active WHERE w < $windows GROUP BY c, w
"""
    return Statement(sql, params, sources.files)


def dau_breakdown(
    days: DateRange, b: Breakdown, segments: Sequence[Segment], sources: Sources
) -> Statement:
    """Rows ``(rank, value, day, users)``: the ``limit`` values with the most distinct users
    over the range (rank 0 first), and their distinct users per day with any."""
    params: dict[str, Any] = {"first": days.first, "last": days.last, "limit": b.limit}
    where = segment_filter(segments, params)
    if b.kind == "event_type":
        value = "event_type"
    else:
        params["breakdown_path"] = json_path(b.path)
        value = "json_extract_string(properties, $breakdown_path)"
    sql = f"""
WITH pairs AS (
    SELECT DISTINCT value, day, user_id FROM (
        {_rows(sources, f"{value} AS value, day, user_id", where)}
    ) WHERE value IS NOT NULL
), top AS (
    SELECT value, row_number() OVER (ORDER BY count(DISTINCT user_id) DESC, value ASC) - 1 AS rank
    FROM pairs GROUP BY value ORDER BY rank LIMIT $limit
)
SELECT top.rank, top.value, pairs.day, count(*) AS users
FROM pairs JOIN top USING (value) GROUP BY top.rank, top.value, pairs.day
UNION ALL
SELECT rank, value, NULL, 0 FROM top
"""
    return Statement(sql, params, sources.files)
