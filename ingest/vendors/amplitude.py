"""Amplitude's HTTP V2 and Batch APIs as our events.

``POST /2/httpapi`` and ``/batch`` carry ``{"api_key", "events": [event, ...], "options"}``.
The field mapping is README's table in "Vendor SDKs" (``_record`` is its
Amplitude column).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ingest.vendors.records import (
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
    return out


def _record(e: dict[str, Any], received: str) -> dict[str, Any]:
    user, device = e.get("user_id"), e.get("device_id")
    time = e.get("time")
    context = {k: v for k, v in e.items() if k not in _MAPPED}
    return {
        "event_id": event_id(_NS, e.get("insert_id"), e),
        "occurred_at": received if time is None else iso_from_millis(time),
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
