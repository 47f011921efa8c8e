"""What every vendor mapping shares: deterministic event ids, times, properties.

A vendor's message id becomes our ``event_id``: a UUID as it is, any other id a UUIDv5 of
the vendor and that id, so an SDK's retry of a message is deduplicated like a retry of ours.
A message without an id gets a UUIDv5 of its canonical JSON: the same message sent twice is
one event (an SDK that retries the same bytes is deduplicated too).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

# \Z, not $ (which matches before a trailing newline too: "<uuid>\n" is not a UUID).
_UUID = re.compile(
    r"\A[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\Z"
)
# The namespace of our vendor ids: UUIDv5(NAMESPACE_URL, "urn:events:vendor").
VENDOR_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:events:vendor")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Epoch milliseconds a datetime can hold (years 1..9999).
MIN_MS, MAX_MS = -62_135_596_800_000, 253_402_300_799_999


def namespace(vendor: str) -> uuid.UUID:
    """The UUIDv5 namespace of one vendor's ids."""
    return uuid.uuid5(VENDOR_NAMESPACE, vendor)


@dataclass(slots=True)
class Translated:
    """A body as our event records (one per vendor message, in order), the API key it
    carried (PostHog and Amplitude send it in the body), and refusals found while mapping
    (index -> (code, message), in ``validate_records``' vocabulary)."""

    records: list[Any]
    api_key: str | None = None
    refused: dict[int, tuple[str, str]] = field(default_factory=dict)


def event_id(ns: uuid.UUID, raw: Any, message: dict[str, Any]) -> Any:
    """Our event id for a vendor message id ``raw`` (see the module's docstring); a value
    that is neither text nor an integer is passed on for validation to refuse."""
    if raw is None or raw == "":
        try:
            canonical = orjson.dumps(message, option=orjson.OPT_SORT_KEYS)
        except (orjson.JSONEncodeError, TypeError):
            canonical = repr(sorted(message.items(), key=lambda kv: str(kv[0]))).encode()
        return str(uuid.uuid5(ns, "content:" + canonical.decode()))
    if type(raw) is str:
        return raw if _UUID.match(raw) else str(uuid.uuid5(ns, raw))
    if type(raw) is int:
        return str(uuid.uuid5(ns, str(raw)))
    return raw


def iso_from_millis(ms: Any) -> Any:
    """Epoch milliseconds as an ISO-8601 UTC text; anything else is passed on (validation
    refuses it as ``invalid_type``)."""
    if type(ms) is int or type(ms) is float:
        if not MIN_MS <= ms <= MAX_MS:  # NaN or beyond a datetime (NaN compares False)
            return ms
        return (_EPOCH + timedelta(microseconds=round(ms * 1000))).isoformat()
    return ms


def merged(properties: Any, extra: dict[str, Any]) -> Any:
    """The vendor's properties with ``extra`` (``$``-keys: what the vendor keeps beside
    them) added where present; properties that are not an object are passed on for
    validation to refuse."""
    kept = {k: v for k, v in extra.items() if v is not None and v != {}}
    if properties is None:
        return kept
    if type(properties) is not dict:
        return properties
    if not kept:
        return properties
    return {**properties, **kept}


def text_key(value: Any) -> str | None:
    """A key sent in the body: text that is not blank, else None."""
    return value.strip() or None if type(value) is str else None
