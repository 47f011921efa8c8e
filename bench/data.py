"""Generated events for every benchmark: one generator, seeded, column-wise (NumPy).

``events`` draws ``n`` events over the ``days`` days that end at ``end``: uniformly in time
(the load, write and import benchmarks), or with users signing up over the range and
traffic growing as they accumulate (``signups``, the analytics benchmark, where retention
needs cohorts). Six event types, eight countries, random ids; ``properties`` names the keys
each event's properties hold (``country``, ``price``, ``session_id``, ``item_id``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.message import EVENT_SCHEMA

EVENT_TYPES = np.array(["app_open", "view_item", "add_to_cart", "purchase", "login", "logout"])
COUNTRIES = np.array(["UA", "PL", "DE", "SE", "NL", "RO", "KZ", "US"])


def events(
    n: int,
    *,
    users: int,
    days: int,
    end: datetime,
    seed: int,
    signups: bool = False,
    properties: tuple[str, ...] = ("country", "price"),
) -> pa.Table:
    """``n`` events (the message contract's columns) in ``[end - days, end)``."""
    rng = np.random.default_rng(seed)
    span_us = days * 86_400_000_000
    if signups:
        # Each user signs up at a uniformly random moment and is then as active as every
        # other signed-up user: an event's moment has a density proportional to the users
        # signed up by then, its user is uniform among them.
        signup_us = np.sort(rng.integers(0, span_us, users))
        offset = np.maximum((np.sqrt(rng.random(n)) * span_us).astype(np.int64), signup_us[0])
        signed_up = np.searchsorted(signup_us, offset, side="right")
        user = (rng.random(n) * signed_up).astype(np.int64) + 1
    else:
        offset = rng.integers(0, span_us, n)
        user = rng.integers(1, users + 1, n)
    start = np.datetime64(end.replace(tzinfo=None) - timedelta(days=days), "us")
    values = {
        "country": COUNTRIES[rng.integers(0, len(COUNTRIES), n)],
        "price": np.round(rng.uniform(1, 500, n), 2),
        "session_id": np.char.mod("%08x", rng.integers(0, 1 << 32, n)),
        "item_id": np.char.add("SKU", rng.integers(0, 10_000, n).astype(str)),
    }
    frame = pl.DataFrame(
        {
            "occurred_at": start + offset.astype("timedelta64[us]"),
            "user_id": user,
            "event_type": EVENT_TYPES[rng.integers(0, len(EVENT_TYPES), n)],
            **{name: values[name] for name in properties},
        }
    )
    # {"country":"UA","price":9.99}: strings quoted, numbers not.
    parts: list[str | pl.Expr] = []
    for i, name in enumerate(properties):
        quote = '"' if name != "price" else ""
        parts.append(f'{"{" if i == 0 else ","}"{name}":{quote}')
        parts.append(pl.col(name).cast(pl.String))
        parts.append(quote)
    parts.append("}")
    frame = frame.select(
        pl.col("occurred_at").dt.replace_time_zone("UTC"),
        pl.col("user_id").cast(pl.String),
        "event_type",
        pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in parts]).alias("properties"),
    )
    ids = np.frombuffer(rng.bytes(16 * n), dtype="S16")
    return pa.table(
        {
            "event_id": pa.array(ids, pa.binary(16)),
            "occurred_at": frame["occurred_at"].to_arrow(),
            "user_id": frame["user_id"].to_arrow().cast(pa.string()),
            "event_type": frame["event_type"].to_arrow().cast(pa.string()),
            "properties": frame["properties"].to_arrow().cast(pa.string()),
        }
    ).cast(EVENT_SCHEMA)
