"""One request body from the wire to the queue message: inflate, decode, validate, encode.

A pure function of its arguments, so it runs the same on the event loop (small bodies) and
in a decoding process (``ingest/decoder.py``): everything it needs travels in
``DecodeRequest`` and everything it produces in ``DecodedRequest`` (both pickle small: the
body in, the message out).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

import msgspec

from ingest.body import decode_content
from ingest.media import decode_batch
from ingest.validate import Limits
from ingest.vendors.decode import decode_vendor
from pipeline.message import BatchMeta, encode_message


@dataclass(frozen=True, slots=True)
class DecodeRequest:
    """A body as read from the wire and the limits that apply to it."""

    media: str
    raw: bytes
    content_encoding: str | None
    limits: Limits
    now: datetime
    meta: BatchMeta  # of the message, should the batch be accepted
    max_events: int
    max_values: int
    max_bytes: int
    max_ratio: int
    # A vendor's route (``segment:batch``, ``posthog:capture``, ...): the body is that
    # vendor's JSON (``ingest/vendors/``); None: ``media``.
    vendor: str | None = None
    # For a body that carries its own key: key digest -> key id (``ingest/vendors/decode.py``).
    key_ids: Mapping[bytes, str] | None = None


@dataclass(frozen=True, slots=True)
class DecodedRequest:
    """What became of the events: counts, the refusals (as the JSON array of the answer's
    ``rejected``, and counted by code), and the queue message (None when no event was
    accepted).

    PERF: refusals travel as JSON text: 50,000 refusal objects pickled, unpickled and
    encoded on the event loop stalled it for a quarter of a second.
    """

    received: int
    accepted: int
    rejected_json: bytes = b"[]"
    refusals: dict[str, int] = field(default_factory=dict)
    payload: bytes | None = None
    # With ``key_ids``: the id of the key the body carried, or ``unknown_key`` (nothing
    # decoded).
    key_id: str | None = None
    unknown_key: bool = False
    vendor: str | None = None  # whose body it was (``/batch`` is PostHog's and Amplitude's)


def decode_request(request: DecodeRequest, *, inflate_limit: int | None = None) -> DecodedRequest:
    """Inflate, decode and validate ``request``'s body, and encode the accepted events.

    ``inflate_limit`` caps the decompressed size below the body limit (the caller decodes
    small bodies in-line and hands larger ones on): beyond it ``DecompressedTooLarge`` is
    raised.
    """
    body = decode_content(
        request.raw,
        request.content_encoding,
        request.max_bytes if inflate_limit is None else min(inflate_limit, request.max_bytes),
        max_ratio=request.max_ratio,
    )
    meta, key_id, vendor = request.meta, None, None
    if request.vendor is not None:
        found = decode_vendor(
            request.vendor,
            body,
            limits=request.limits,
            now=request.now,
            max_events=request.max_events,
            max_values=request.max_values,
            key_ids=request.key_ids,
        )
        vendor = found.vendor
        if found.batch is None:
            return DecodedRequest(received=0, accepted=0, unknown_key=True, vendor=vendor)
        batch, key_id = found.batch, found.key_id
        meta = replace(meta, key_id=key_id or meta.key_id, source=vendor)
    else:
        batch = decode_batch(
            request.media,
            body,
            limits=request.limits,
            now=request.now,
            max_events=request.max_events,
            max_values=request.max_values,
            max_bytes=request.max_bytes,
        )
    payload = encode_message(batch.table, meta) if batch.accepted else None
    return DecodedRequest(
        received=batch.received,
        accepted=batch.accepted,
        rejected_json=msgspec.json.encode(batch.rejected),
        refusals=dict(Counter(r.code for r in batch.rejected)),
        payload=payload,
        key_id=key_id,
        vendor=vendor,
    )
