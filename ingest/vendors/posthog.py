"""PostHog's capture API as our events.

``POST /batch/`` carries ``{"api_key", "batch": [event, ...]}``; ``/capture/``, ``/e/`` and
``/i/v0/e/`` carry one event (with ``api_key`` beside its fields), a ``{"batch": [...]}``, or
an array of events. The key is the body's ``api_key`` or ``token``, else the first event's
``api_key`` or ``properties.token`` (which is not stored). The field mapping is README's
table in "Vendor SDKs" (``_record`` is its PostHog column).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ingest.vendors.records import Translated, event_id, merged, namespace, text_key

VENDOR = "posthog"
_NS = namespace(VENDOR)


def translate(doc: Any, call: str, now: datetime) -> Translated:
    """A decoded body (any of the shapes in the module's docstring) as our records."""
    key = None
    if type(doc) is dict and type(doc.get("batch")) is list:
        events: list[Any] = doc["batch"]
    elif type(doc) is dict:
        events = [doc]
    elif type(doc) is list:
        events = doc
    else:
        raise ValueError('the body must be an event, an array of events or {"batch": [...]}')
    if type(doc) is dict:
        key = text_key(doc.get("api_key")) or text_key(doc.get("token"))
    if key is None and events and type(events[0]) is dict:
        first = events[0]
        props = first.get("properties")
        key = text_key(first.get("api_key")) or (
            text_key(props.get("token")) if type(props) is dict else None
        )
    out = Translated(records=[], api_key=key)
    for e in events:
        out.records.append(_record(e, now) if type(e) is dict else e)
    return out


def _record(e: dict[str, Any], now: datetime) -> dict[str, Any]:
    props = e.get("properties")
    if type(props) is dict and "token" in props:
        # posthog-js sends the project key in every event's properties: a key is never stored.
        props = {k: v for k, v in props.items() if k != "token"}
    user = e.get("distinct_id")
    if user in (None, "") and type(props) is dict:
        user = props.get("distinct_id")
    timestamp = e.get("timestamp")
    if timestamp in (None, ""):
        offset = e.get("offset")
        if (type(offset) is int or type(offset) is float) and 0 <= offset < 86_400_000 * 365:
            timestamp = (now - timedelta(milliseconds=offset)).isoformat()
        else:
            timestamp = now.isoformat()
    return {
        "event_id": event_id(_NS, e.get("uuid"), e),
        "occurred_at": timestamp,
        "user_id": user,
        "event_type": e.get("event"),
        "properties": merged(props, {"$set": e.get("$set"), "$set_once": e.get("$set_once")}),
    }
