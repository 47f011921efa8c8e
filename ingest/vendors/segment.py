"""Segment's HTTP Tracking API (RudderStack's SDKs speak it too) as our events.

``POST /v1/batch`` carries ``{"batch": [message, ...]}``; ``/v1/track``, ``/v1/identify``,
``/v1/page``, ``/v1/screen``, ``/v1/group`` and ``/v1/alias`` carry one message of that call.
The field mapping is README's table in "Vendor SDKs" (``_record`` is its
Segment column).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ingest.vendors.records import Translated, event_id, merged, namespace, text_key

VENDOR = "segment"
CALLS = ("track", "identify", "page", "screen", "group", "alias")
EVENT_TYPES = {
    "identify": "$identify",
    "page": "$pageview",
    "screen": "$screen",
    "group": "$group",
    "alias": "$alias",
}
_NS = namespace(VENDOR)


def translate(doc: Any, call: str, now: datetime) -> Translated:
    """A decoded body of route ``call`` (``batch`` or one of ``CALLS``) as our records."""
    if call == "batch":
        messages = doc.get("batch") if type(doc) is dict else None
        if type(messages) is not list:
            raise ValueError('the body must be {"batch": [message, ...]}')
    else:
        messages = [doc]
    received = now.isoformat()
    out = Translated(
        records=[], api_key=text_key(doc.get("writeKey")) if type(doc) is dict else None
    )
    for i, message in enumerate(messages):
        if type(message) is not dict:
            out.records.append(message)  # refused by validation: not_an_object
            continue
        kind = message.get("type", call if call != "batch" else None)
        if kind not in CALLS:
            out.records.append({})
            out.refused[i] = ("invalid_type", f"type must be one of {', '.join(CALLS)}")
            continue
        out.records.append(_record(message, kind, received))
    return out


def _record(m: dict[str, Any], kind: str, received: str) -> dict[str, Any]:
    user, anonymous = m.get("userId"), m.get("anonymousId")
    extra: dict[str, Any] = {
        "$context": m.get("context"),
        "$anonymous_id": anonymous if user not in (None, "") else None,
    }
    if kind in ("identify", "group"):
        extra["$traits"] = m.get("traits")
    if kind in ("page", "screen"):
        extra["$name"] = m.get("name")
        extra["$category"] = m.get("category")
    if kind == "group":
        extra["$group_id"] = m.get("groupId")
    if kind == "alias":
        extra["$previous_id"] = m.get("previousId")
    timestamp = m.get("timestamp")
    if timestamp in (None, ""):
        timestamp = m.get("originalTimestamp")
    if timestamp in (None, ""):
        timestamp = received
    return {
        "event_id": event_id(_NS, m.get("messageId"), m),
        "occurred_at": timestamp,
        "user_id": user if user not in (None, "") else anonymous,
        "event_type": m.get("event") if kind == "track" else EVENT_TYPES[kind],
        "properties": merged(m.get("properties"), extra),
    }
