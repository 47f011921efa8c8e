"""Amplitude's HTTP V2 and Batch APIs as our events.

``POST /2/httpapi`` and ``/batch`` carry ``{"api_key", "events": [event, ...], "options"}``.
The field mapping is README's table in "Vendor SDKs" (``_record`` is its
Amplitude column).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from ingest.vendors.records import (
    MAX_MS,
    MIN_MS,
    Translated,
    event_id,
    iso_from_millis,
    merged,
    namespace,
    text_key,
)

VENDOR = "amplitude"
_NS = namespace(VENDOR)
# The fields mapped to our own; the rest of an event goes to properties.$context.
_MAPPED = frozenset(
    {
        "event_type",
        "user_id",
        "device_id",
        "time",
        "insert_id",
        "event_properties",
        "user_properties",
        "groups",
        "group_properties",
    }
)
# Our field -> Amplitude's, for the 400 answer listing events by field.
FIELDS = {
    "event_id": "insert_id",
    "occurred_at": "time",
    "user_id": "user_id",
    "event_type": "event_type",
    "properties": "event_properties",
}


def translate(doc: Any, call: str, now: datetime) -> Translated:
    events = doc.get("events") if type(doc) is dict else None
    if type(events) is not list:
        raise ValueError('the body must be {"api_key": ..., "events": [event, ...]}')
    out = Translated(records=[], api_key=text_key(doc.get("api_key")))
    received = now.isoformat()
    for e in events:
        out.records.append(_record(e, received) if type(e) is dict else e)
    _times_as_text(out.records)
    return out


def _times_as_text(records: list[Any]) -> None:
    """Integer epoch milliseconds (what the SDKs send) as ISO text, all at once.

    PERF: one NumPy conversion of the column instead of a ``datetime`` per event (2 µs each,
    the largest cost of translating an Amplitude event: bench/README.md, issue 13).
    """
    at = [
        i
        for i, r in enumerate(records)
        if type(r) is dict
        and type(r["occurred_at"]) is int
        and MIN_MS <= r["occurred_at"] <= MAX_MS
    ]
    if not at:
        return
    millis = np.fromiter((records[i]["occurred_at"] for i in at), dtype=np.int64, count=len(at))
    texts = np.datetime_as_string(millis.astype("datetime64[ms]"), unit="ms", timezone="UTC")
    for i, text in zip(at, texts.tolist(), strict=True):
        records[i]["occurred_at"] = text


def _record(e: dict[str, Any], received: str) -> dict[str, Any]:
    user, device = e.get("user_id"), e.get("device_id")
    time = e.get("time")
    context = {k: v for k, v in e.items() if k not in _MAPPED}
    if time is None:
        occurred: Any = received
    elif type(time) is int:
        occurred = time  # turned into text with the rest of the column (_times_as_text)
    else:
        occurred = iso_from_millis(time)
    return {
        "event_id": event_id(_NS, e.get("insert_id"), e),
        "occurred_at": occurred,
        "user_id": user if user not in (None, "") else device,
        "event_type": e.get("event_type"),
        "properties": merged(
            e.get("event_properties"),
            {
                "$user_properties": e.get("user_properties"),
                "$groups": e.get("groups"),
                "$group_properties": e.get("group_properties"),
                "$device_id": device if user not in (None, "") else None,
                "$context": context or None,
            },
        ),
    }
