"""What a vendor's body costs the API, next to ours: the same events as one of our JSON
batches and as each vendor's SDK sends them, decoded and validated as the API does
(``ingest/decode_job.py``: inflate, count, decode, translate, validate, encode the queue
message), in-process, best of N.

    python -m bench.vendors [--events 500] [--repeat 30]

Prints µs per event for each body and its ratio to ours. The network, the broker and the
rate limits are the same for every route and left out.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ingest.decode_job import DecodeRequest, decode_request
from ingest.media import JSON
from ingest.validate import Limits
from pipeline.message import BatchMeta

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _events(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": str(uuid.uuid4()),
            "at": NOW - timedelta(seconds=n - i),
            "user": f"user-{i % 97}",
            "type": ("view_item", "add_to_cart", "purchase")[i % 3],
            "props": {"country": "UA", "price": i % 50, "sku": f"sku-{i % 13}"},
        }
        for i in range(n)
    ]


def bodies(n: int) -> dict[str, tuple[str | None, bytes]]:
    """Route (None: ours) and body of the same events in each form."""
    evs = _events(n)
    context = {"library": {"name": "analytics-python", "version": "2.4.0"}}
    return {
        "events (ours)": (
            None,
            orjson.dumps(
                [
                    {
                        "event_id": e["id"],
                        "occurred_at": e["at"].isoformat(),
                        "user_id": e["user"],
                        "event_type": e["type"],
                        "properties": e["props"],
                    }
                    for e in evs
                ]
            ),
        ),
        "segment": (
            "segment:batch",
            orjson.dumps(
                {
                    "batch": [
                        {
                            "type": "track",
                            "messageId": e["id"],
                            "timestamp": e["at"].isoformat(),
                            "userId": e["user"],
                            "event": e["type"],
                            "properties": e["props"],
                            "context": context,
                        }
                        for e in evs
                    ]
                }
            ),
        ),
        "posthog": (
            "posthog:batch",
            orjson.dumps(
                {
                    "api_key": "k",
                    "batch": [
                        {
                            "uuid": e["id"],
                            "timestamp": e["at"].isoformat(),
                            "distinct_id": e["user"],
                            "event": e["type"],
                            "properties": {**e["props"], "$lib": "posthog-python"},
                        }
                        for e in evs
                    ],
                }
            ),
        ),
        "amplitude": (
            "amplitude:batch",
            orjson.dumps(
                {
                    "api_key": "k",
                    "events": [
                        {
                            "insert_id": e["id"],
                            "time": int(e["at"].timestamp() * 1000),
                            "user_id": e["user"],
                            "event_type": e["type"],
                            "event_properties": e["props"],
                            "library": "amplitude-python/1.3.0",
                        }
                        for e in evs
                    ],
                }
            ),
        ),
    }


def measure(n: int, repeat: int, *, compressed: bool = False) -> dict[str, Any]:
    rows = {}
    meta = BatchMeta(batch_id=uuid.uuid4(), received_at=NOW, key_id="key_x", source="json")
    for name, (route, body) in bodies(n).items():
        raw = gzip.compress(body) if compressed else body
        request = DecodeRequest(
            media=JSON,
            raw=raw,
            content_encoding="gzip" if compressed else None,
            limits=Limits(),
            now=NOW,
            meta=meta,
            max_events=50_000,
            max_values=1_000_000,
            max_bytes=32 << 20,
            max_ratio=200,
            vendor=route,
        )
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            out = decode_request(request)
            best = min(best, time.perf_counter() - started)
        if out.accepted != n:
            raise RuntimeError(f"{name}: {out.rejected_json[:300]!r}")
        rows[name] = {"body_bytes": len(raw), "us_per_event": round(best / n * 1e6, 2)}
    ours = rows["events (ours)"]["us_per_event"]
    for r in rows.values():
        r["ratio_to_ours"] = round(r["us_per_event"] / ours, 2)
    return {
        "events": n,
        "repeat": repeat,
        "gzip": compressed,
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "rows": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.vendors", description=__doc__)
    p.add_argument("--events", type=int, default=500)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--gzip", action="store_true")
    args = p.parse_args()
    print(json.dumps(measure(args.events, args.repeat, compressed=args.gzip), indent=1))


if __name__ == "__main__":
    main()
