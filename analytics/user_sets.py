"""Who was active, per day and per value, as roaring bitmaps of this process's user numbers.

PERF: distinct users are what product analytics counts: daily active users of a segment,
breakdowns, rolling windows, cohorts. Counting them from rows means hashing every row's
``user_id`` again on every call (about 0.3-0.8 s for a month of 10M events on two cores).
Instead each source of rows is indexed once into sets of users:

- a *source* is immutable: a lake file (one day; files are never rewritten) or a chunk of
  the hot mirror (one day's rows that arrived together, ``analytics/hot_mirror.py``);
- for a source: the set of its users, and for each *dimension* asked for so far
  (``event_type`` or a property path) the set of users per value. A property's value is
  DuckDB's ``json_extract_string`` of the path, the very test a segment applies (a lake
  file's ``p:<key>`` column holds exactly that for its frequent top-level keys); JSON null
  and missing paths are in no set;
- users are numbered in the order this process meets them (``user_id`` -> uint32), so
  sets of different sources combine: a day's users are the union of its sources' sets.

An answer is then unions, intersections and counts of a few hundred bitmaps: a millisecond
or two. Exact: a user is in the set of (day, dimension, value) exactly when they have an
event that day whose dimension has that value, which is what a single segment asks.

Bounded: a dimension with more than ``max_values`` values in one source is not indexed
there (the query falls back to SQL); past ``max_users`` users the index turns itself off
(and empties). Building runs in a worker thread, one source at a time under a lock.
"""

from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyroaring import BitMap

from analytics.funnel import encode_keys
from analytics.hot_mirror import Chunk
from analytics.params import Segment
from analytics.queries import json_path
from storage.lake import LakeUnreadable, property_column

EVENT_TYPE = "event_type"


def dimension(segment: Segment) -> str:
    """The dimension a segment tests: ``event_type`` or ``properties.<path>``."""
    return EVENT_TYPE if segment.kind == "event_type" else "properties." + ".".join(segment.path)


class NotIndexed(Exception):
    """The sets cannot answer this (too many values or users): use SQL."""


@dataclass(slots=True)
class _Sets:
    name: str  # the lake file's path, or "chunk:<id>"
    day: date
    users: BitMap
    dims: dict[str, dict[str, BitMap] | None] = field(default_factory=dict)
    columns: frozenset[str] = frozenset()
    # Per event type: (user numbers, occurred_at in epoch microseconds), for funnels.
    events: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def _bitmap(keys: np.ndarray) -> BitMap:
    return BitMap(array("I", np.ascontiguousarray(keys, dtype=np.uint32).tobytes()))


class UserSets:
    def __init__(
        self,
        duck: Callable[[], duckdb.DuckDBPyConnection],
        *,
        max_users: int = 5_000_000,
        max_values: int = 10_000,
        max_files: int = 8192,
    ) -> None:
        self._duck = duck
        self._max_users = max_users
        self._max_values = max_values
        self._max_files = max_files
        self._keys: dict[str, int] = {}
        self._files: OrderedDict[str, _Sets] = OrderedDict()
        self._chunks: dict[int, _Sets] = {}
        self._lock = threading.Lock()
        self._off = max_users <= 0
        # Funnel keys of one event type over a set of sources, sorted (see ``funnel_keys``).
        self._funnel_keys: OrderedDict[tuple[str, int, int, tuple[str, ...]], np.ndarray] = (
            OrderedDict()
        )

    # --- building -----------------------------------------------------------------------

    def _numbers(self, user_ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
        if isinstance(user_ids, pa.ChunkedArray):
            user_ids = user_ids.combine_chunks()
        encoded = user_ids.dictionary_encode()
        keys = self._keys
        distinct = encoded.dictionary.to_pylist()
        numbers = np.fromiter(
            (keys.setdefault(u, len(keys)) for u in distinct), dtype=np.uint32, count=len(distinct)
        )
        if len(keys) > self._max_users:
            self._turn_off()
            raise NotIndexed(f"more than {self._max_users} users")
        indices = encoded.indices.to_numpy(zero_copy_only=False)
        return numbers[indices] if len(numbers) else np.zeros(0, np.uint32)

    def _values(self, sets: _Sets, numbers: np.ndarray, dim: str, values: pa.Array) -> None:
        encoded = values.dictionary_encode()
        if len(encoded.dictionary) > self._max_values:
            sets.dims[dim] = None
            return
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        valid = (
            ~np.asarray(encoded.indices.is_null().to_numpy(zero_copy_only=False))
            if encoded.indices.null_count
            else None
        )
        if valid is not None:
            codes, numbers = codes[valid], numbers[valid]
        codes = codes.astype(np.int64)
        order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes, minlength=len(encoded.dictionary))
        bounds = np.concatenate(([0], np.cumsum(counts)))
        ordered = numbers[order]
        names = encoded.dictionary.to_pylist()
        sets.dims[dim] = {
            str(names[i]): _bitmap(ordered[bounds[i] : bounds[i + 1]])
            for i in range(len(names))
            if counts[i]
        }

    def _dimension(
        self, sets: _Sets, numbers: np.ndarray | None, dim: str, table: pa.Table
    ) -> None:
        if dim == EVENT_TYPE:
            values = table.column(EVENT_TYPE).combine_chunks()
        else:
            path = tuple(dim.split(".")[1:])
            column = property_column(path[0])
            if len(path) == 1 and column in sets.columns and column in table.column_names:
                values = table.column(column).combine_chunks()
            else:
                values = self._extract(table.column("properties"), path)
        if numbers is None:
            numbers = self._numbers(table.column("user_id"))
        self._values(sets, numbers, dim, values)

    def _extract(self, properties: pa.ChunkedArray, path: tuple[str, ...]) -> pa.Array:
        cursor = self._duck().cursor()
        try:
            props = pa.table({"properties": properties.cast(pa.string())})
            cursor.register("props", props)
            result = cursor.sql(
                "SELECT json_extract_string(properties, $path) AS v FROM props",
                params={"path": json_path(path)},
            ).to_arrow_table()
        finally:
            cursor.close()
        return result.column("v").combine_chunks()

    def _file(self, path: str, day: date, dims: Iterable[str], types: Sequence[str]) -> _Sets:
        sets = self._files.get(path)
        wanted = [d for d in dims if sets is None or d not in sets.dims]
        kinds = [k for k in types if sets is None or k not in sets.events]
        if sets is not None and not wanted and not kinds:
            self._files.move_to_end(path)
            return sets
        try:
            schema = pq.read_schema(path)
            names = set(schema.names)
            columns = ["user_id"]
            for d in wanted:
                if d == EVENT_TYPE:
                    columns.append(EVENT_TYPE)
                else:
                    key = d.split(".")[1:]
                    column = property_column(key[0])
                    columns.append(column if len(key) == 1 and column in names else "properties")
            if kinds:
                columns += [EVENT_TYPE, "occurred_at"]
            table = pq.read_table(path, columns=list(dict.fromkeys(columns)))
        except FileNotFoundError:
            raise LakeUnreadable(path, "missing") from None
        except (OSError, pa.ArrowException) as ex:
            raise LakeUnreadable(path, f"cannot be read ({ex})") from ex
        numbers = self._numbers(table.column("user_id"))
        if sets is None:
            sets = _Sets(path, day, _bitmap(numbers), columns=frozenset(names))
            self._files[path] = sets
            while len(self._files) > self._max_files:
                self._files.popitem(last=False)
        for d in wanted:
            self._dimension(sets, numbers, d, table)
        if kinds:
            self._events(sets, table, kinds, numbers)
        return sets

    def _events(
        self, sets: _Sets, table: pa.Table, types: Sequence[str], numbers: np.ndarray | None
    ) -> None:
        """Each wanted type's (user numbers, times) of a source, kept for later funnels."""
        if numbers is None:
            numbers = self._numbers(table.column("user_id"))
        kinds = table.column(EVENT_TYPE).combine_chunks()
        times = table.column("occurred_at").combine_chunks().cast(pa.int64()).to_numpy()
        for kind in types:
            mask = pc.equal(kinds, pa.scalar(kind)).to_numpy(zero_copy_only=False)
            sets.events[kind] = (numbers[mask], times[mask])

    def _chunk(self, chunk: Chunk, dims: Iterable[str], types: Sequence[str]) -> _Sets:
        sets = self._chunks.get(chunk.id)
        numbers = None
        if sets is None:
            numbers = self._numbers(chunk.table.column("user_id"))
            sets = _Sets(f"chunk:{chunk.id}", chunk.day, _bitmap(numbers))
            self._chunks[chunk.id] = sets
        for d in dims:
            if d not in sets.dims:
                self._dimension(sets, numbers, d, chunk.table)
        kinds = [k for k in types if k not in sets.events]
        if kinds:
            self._events(sets, chunk.table, kinds, numbers)
        return sets

    def funnel_keys(
        self, sources: Sequence[_Sets], kind: str, origin: int, t_bits: int
    ) -> np.ndarray:
        """Sorted uint64 keys ``user number << t_bits | (occurred_at - origin)`` of the events
        of type ``kind`` in ``sources`` (``analytics/funnel.py``).

        PERF: the sources are immutable and the encoding depends only on the range, so the
        sorted keys of the same sources are kept (the last 16 sets); when a source is new
        (a chunk the mirror just fetched), they are made again from every source's arrays.
        Raises ``NotIndexed`` when user numbers and times do not fit 63 bits together.
        """
        if len(self._keys).bit_length() + t_bits > 63:
            raise NotIndexed("funnel keys would not fit 63 bits")
        names = tuple(sorted(s.name for s in sources))
        cache_key = (kind, origin, t_bits, names)
        with self._lock:
            found = self._funnel_keys.get(cache_key)
            if found is not None:
                self._funnel_keys.move_to_end(cache_key)
                return found
        keys = encode_keys([s.events[kind] for s in sources if kind in s.events], origin, t_bits)
        with self._lock:
            self._funnel_keys[cache_key] = keys
            while len(self._funnel_keys) > 16:
                self._funnel_keys.popitem(last=False)
        return keys

    @property
    def off(self) -> bool:
        return self._off

    def _turn_off(self) -> None:
        self._off = True
        self._keys.clear()
        self._files.clear()
        self._chunks.clear()

    # --- answering ------------------------------------------------------------------------

    def sources(
        self,
        files: Mapping[date, Sequence[str]],
        chunks: Sequence[Chunk],
        dims: Sequence[str],
        *,
        live: Iterable[Chunk] = (),
        types: Sequence[str] = (),
    ) -> dict[date, list[_Sets]]:
        """The indexed sources of every day, built where missing (call in a thread);
        ``live``: every chunk the mirror still holds (the others' sets are let go)."""
        with self._lock:
            if self._off:
                raise NotIndexed("the user index is off")
            by_day: dict[date, list[_Sets]] = {}
            for day, paths in files.items():
                by_day.setdefault(day, []).extend(self._file(p, day, dims, types) for p in paths)
            for chunk in chunks:
                by_day.setdefault(chunk.day, []).append(self._chunk(chunk, dims, types))
            keep = {c.id for c in chunks} | {c.id for c in live}
            for gone in [k for k in self._chunks if k not in keep]:
                del self._chunks[gone]
            return by_day


def day_users(
    by_day: Mapping[date, Sequence[_Sets]], segment: Segment | None
) -> dict[date, BitMap]:
    """Per day, the users with an event matching ``segment`` (any event without one)."""
    out: dict[date, BitMap] = {}
    dim = dimension(segment) if segment is not None else None
    for day, sources in by_day.items():
        parts = []
        for s in sources:
            if dim is None:
                parts.append(s.users)
                continue
            values = s.dims.get(dim)
            if values is None:
                raise NotIndexed(f"{dim} has too many values on {day}")
            found = values.get(segment.value) if segment is not None else None
            if found is not None:
                parts.append(found)
        out[day] = BitMap.union(*parts) if parts else BitMap()
    return out


def day_values(by_day: Mapping[date, Sequence[_Sets]], dim: str) -> dict[date, dict[str, BitMap]]:
    """Per day and value of ``dim``, the users with an event of that value."""
    out: dict[date, dict[str, BitMap]] = {}
    for day, sources in by_day.items():
        merged: dict[str, list[BitMap]] = {}
        for s in sources:
            values = s.dims.get(dim)
            if values is None:
                raise NotIndexed(f"{dim} has too many values on {day}")
            for value, users in values.items():
                merged.setdefault(value, []).append(users)
        out[day] = {v: BitMap.union(*parts) for v, parts in merged.items()}
    return out


def _union(sets: Iterable[BitMap]) -> BitMap:
    parts = list(sets)
    return BitMap.union(*parts) if parts else BitMap()


def _days(first: date, last: date) -> list[date]:
    return [date.fromordinal(o) for o in range(first.toordinal(), last.toordinal() + 1)]


def count_days(users: Mapping[date, BitMap], first: date, last: date) -> dict[date, int]:
    return {d: len(users[d]) if d in users else 0 for d in _days(first, last)}


def rolling(users: Mapping[date, BitMap], first: date, last: date, window: int) -> dict[date, int]:
    """For each day d, the users of days [d - window + 1, d]."""
    out = {}
    for d in _days(first, last):
        span = _days(date.fromordinal(d.toordinal() - window + 1), d)
        out[d] = len(_union(users[x] for x in span if x in users))
    return out


def retention(
    users: Mapping[date, BitMap], starts: Sequence[date], g: int, windows: int
) -> list[tuple[int, list[int]]]:
    """Per cohort start: (cohort size, active users per window). The cohort: users whose
    first day in ``users`` falls in [start, start + g)."""
    ordered = sorted(users)
    out = []
    before = BitMap()
    i = 0
    for start in starts:
        while i < len(ordered) and ordered[i] < start:
            before |= users[ordered[i]]
            i += 1
        first_window = _union(
            users[d]
            for d in _days(start, date.fromordinal(start.toordinal() + g - 1))
            if d in users
        )
        cohort = first_window - before
        active = []
        for k in range(windows):
            lo = date.fromordinal(start.toordinal() + k * g)
            hi = date.fromordinal(lo.toordinal() + g - 1)
            active.append(len(cohort & _union(users[d] for d in _days(lo, hi) if d in users)))
        out.append((len(cohort), active))
    return out


def top_values(
    values: Mapping[date, Mapping[str, BitMap]], first: date, last: date, limit: int
) -> list[tuple[str, dict[date, int]]]:
    """The ``limit`` values with the most distinct users over the days (ties by value),
    each with its users per day."""
    per_value: dict[str, list[BitMap]] = {}
    for by_value in values.values():
        for v, users in by_value.items():
            per_value.setdefault(v, []).append(users)
    totals = sorted(((-len(_union(s)), v) for v, s in per_value.items()))
    top = [v for _, v in totals[:limit]]
    return [
        (
            v,
            {
                d: len(values[d][v]) if d in values and v in values[d] else 0
                for d in _days(first, last)
            },
        )
        for v in top
    ]
