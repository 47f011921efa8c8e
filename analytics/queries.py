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
from typing import Any

from analytics.params import DateRange, RetentionParams, Segment
from analytics.sources import Sources

_EMPTY_LAKE = (
    "(SELECT CAST(NULL AS DATE) AS date, CAST(NULL AS VARCHAR) AS user_id, "
    "CAST(NULL AS VARCHAR) AS event_type, CAST(NULL AS VARCHAR) AS properties WHERE false)"
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


def _hot_pairs(sources: Sources, where: str) -> str:
    if sources.hot_users is not None:
        return "SELECT day, user_id FROM hot_users"
    return f"SELECT DISTINCT day, user_id FROM hot_events WHERE true{where}"


def _hot_counts(sources: Sources, where: str) -> str:
    if sources.hot_counts is not None:
        return "SELECT event_type, events FROM hot_counts"
    return f"SELECT event_type, count(*) AS events FROM hot_events WHERE true{where} GROUP BY 1"


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


def retention(p: RetentionParams, sources: Sources) -> Statement:
    """Cohort: users whose first (segment-matching) event ever falls in window 0.
    Window k: cohort users with such an event in [start + k*g, start + (k+1)*g)."""
    params: dict[str, Any] = {
        "start": p.start,
        "first_end": p.window_start(1),
        "end": p.end,
        "g": p.window_days,
        "windows": p.windows,
    }
    where = segment_filter(p.segments, params)
    lake = lake_relation(sources.files)
    hot = _hot_pairs(sources, where)
    sql = f"""
WITH firsts AS (
    SELECT user_id, min(day) AS first_day FROM (
        SELECT user_id, min(date) AS day FROM {lake} WHERE date < $first_end{where}
        GROUP BY user_id
        UNION ALL
        SELECT user_id, min(day) AS day FROM ({hot}) AS hot WHERE day < $first_end
        GROUP BY user_id
    ) GROUP BY user_id
), cohort AS (
    SELECT user_id FROM firsts WHERE first_day >= $start
), activity AS (
    SELECT date AS day, user_id FROM {lake} WHERE date >= $start AND date < $end{where}
    UNION
    SELECT day, user_id FROM ({hot}) AS hot WHERE day >= $start AND day < $end
), active AS (
    SELECT DISTINCT user_id, CAST((day - $start) // $g AS BIGINT) AS w
    FROM activity SEMI JOIN cohort USING (user_id)
), windows AS (
    SELECT unnest(range(0, $windows)) AS w
)
SELECT windows.w, (SELECT count(*) FROM cohort) AS cohort_size, count(active.user_id) AS active
FROM windows LEFT JOIN active USING (w)
GROUP BY windows.w ORDER BY windows.w
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
