"""A vendor's body -> validated events, and the key it carries, within the body limits.

The key of a PostHog or Amplitude request is in its body, so such a body is read before the
key is known. What an unauthenticated body can cost is bounded: the body limits apply as
for any body (size on the wire and inflated, events and JSON values counted from the bytes
before anything is built), and a key at the top of the body is looked up first, by a pass
that builds nothing but that key (msgspec skips every other field): a body with an unknown
key is refused before any event is decoded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from core.codes import ErrorCode, Refusal
from ingest.media import check_count, load_json
from ingest.validate import Limits, ValidatedBatch, validate_records
from ingest.vendors import amplitude, posthog, segment
from ingest.vendors.records import Translated, text_key

AUTO = "auto"  # a path two vendors share: the body says whose it is
Translator = Callable[[Any, str, datetime], Translated]
TRANSLATORS: dict[str, Translator] = {
    segment.VENDOR: segment.translate,
    posthog.VENDOR: posthog.translate,
    amplitude.VENDOR: amplitude.translate,
}


def key_digest(key: str) -> bytes:
    """What a key is looked up by outside the API process (never the key itself)."""
    return hashlib.sha256(key.encode()).digest()


class _TopKeys(msgspec.Struct):
    """The keys a body may carry at its top; every other field is skipped unbuilt."""

    api_key: Any = None
    token: Any = None
    writeKey: Any = None  # Segment's name
    events: msgspec.Raw = msgspec.Raw(b"")  # Amplitude's events (not decoded here)


_TOP_KEYS = msgspec.json.Decoder(_TopKeys)


def top_level(body: bytes) -> _TopKeys | None:
    """The top of a JSON object body (None: not one, or one too deeply nested to skip:
    the full decode refuses it)."""
    try:
        return _TOP_KEYS.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


def _key(top: _TopKeys | None) -> str | None:
    if top is None:
        return None
    return text_key(top.api_key) or text_key(top.token) or text_key(top.writeKey)


@dataclass(frozen=True, slots=True)
class VendorBatch:
    """Whose body it was, the validated events, and the key id of the body's key (None: no
    known key in the body, or keys were not asked for)."""

    vendor: str
    batch: ValidatedBatch | None
    key_id: str | None


def decode_vendor(
    route: str,
    body: bytes,
    *,
    limits: Limits,
    now: datetime,
    max_events: int,
    max_values: int,
    key_ids: Mapping[bytes, str] | None,
) -> VendorBatch:
    """Decode a (decompressed) body of ``route`` (``vendor:call``; ``auto:batch`` is
    Amplitude's when the body has ``events`` at its top, else PostHog's).

    With ``key_ids`` (key digest -> key id) the body's own key is looked up, and a body
    without a known key is not decoded any further (``batch`` None)."""
    vendor, _, call = route.partition(":")
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    key_id = None
    top = top_level(body) if key_ids is not None or vendor == AUTO else None
    if vendor == AUTO:
        amplitudes = top is not None and bytes(top.events).startswith(b"[")
        vendor = amplitude.VENDOR if amplitudes else posthog.VENDOR
    if key_ids is not None and (found := _key(top)) is not None:
        key_id = key_ids.get(key_digest(found))
        if key_id is None:
            return VendorBatch(vendor, None, None)
    doc = load_json(body, max_events=max_events, max_values=max_values)
    try:
        translated = TRANSLATORS[vendor](doc, call, now)
    except ValueError as ex:
        raise Refusal(ErrorCode.INVALID_BODY, str(ex)) from ex
    if key_ids is not None and key_id is None:
        key = translated.api_key
        key_id = key_ids.get(key_digest(key)) if key is not None else None
        if key_id is None:
            return VendorBatch(vendor, None, None)
    check_count(len(translated.records), max_events)
    batch = validate_records(translated.records, limits, now, pre_refused=translated.refused)
    return VendorBatch(vendor, batch, key_id)
