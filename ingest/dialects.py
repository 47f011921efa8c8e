"""How a capture route answers: our own form (``POST /events``) or a vendor's.

An SDK acts on its API's answers: which statuses it retries, which drop the batch, what it
reads from the body. A dialect renders the outcome of a request (``Accepted``, or the
``Refusal`` that stopped it) in the form its SDK expects. Everything before the answer
(limits, validation, rate limits, publishing) is the same for every dialect.

- ours: 202 / 200 ``Accepted``; errors ``{"error": {...}}``.
- Segment, RudderStack: 200 ``{"success": true, ...}``; errors ``{"code", "message",
  "error"}``. RudderStack's SDK takes only 200 as success, and drops a 4xx only when the
  body has ``code`` and ``message`` (it retries any other).
- PostHog: 200 ``{"status": 1, ...}``; errors ``{"type", "code", "detail", "error"}``. The
  SDK reads ``detail``; it retries 408, 429 and 5xx.
- Amplitude: 200 ``{"code": 200, "events_ingested", ...}``; errors ``{"code", "error",
  "events_with_invalid_fields", "events_with_missing_fields", ...}``. The SDK reads ``code``
  from every body, drops the events a 400 lists and sends the rest again, stops on a 400
  ``Invalid API key: ...`` (an unknown key) and splits a batch on a 413.

Every dialect keeps our own fields (``received``, ``accepted``, ``rejected``, ``batch_id``;
``error`` where there is room) beside the vendor's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec

from core import metrics
from core.codes import ErrorCode, Refusal
from ingest.answers import Accepted, Rejection
from ingest.vendors import amplitude

Rendered = tuple[int, bytes, dict[str, str]]
_REJECTIONS = msgspec.json.Decoder(list[Rejection])


class Dialect:
    """Our own answers (``POST /events``); vendors' dialects override ``accepted`` and
    ``refused``."""

    name: ClassVar[str] = "events"
    # Whether the key may come in the body when no header carries it (vendors' SDKs).
    key_in_body: ClassVar[bool] = False

    def accepted(self, status: int, answer: Accepted, *, body_bytes: int) -> tuple[int, bytes]:
        return status, msgspec.json.encode(answer)

    def refused(self, refusal: Refusal) -> Rendered:
        return refusal.status, msgspec.json.encode(refusal.answer()), refusal.headers


NATIVE = Dialect()


def _answer_fields(answer: Accepted) -> dict[str, Any]:
    """Our answer's fields, to sit beside a vendor's (``rejected`` is raw JSON: through the
    encoder, which writes it as it is)."""
    fields: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(answer))
    fields.pop("error", None)
    return fields


def _status(status: int) -> int:
    """A vendor's SDK needs 200 for success (202 is ours: published, not yet committed)."""
    return 200 if status in (200, 202) else status


@dataclass(frozen=True, slots=True)
class SegmentDialect(Dialect):
    name: ClassVar[str] = "segment"
    key_in_body: ClassVar[bool] = True  # writeKey, beside the Basic header

    def accepted(self, status: int, answer: Accepted, *, body_bytes: int) -> tuple[int, bytes]:
        if status == 400 and answer.error is not msgspec.UNSET:
            body = {
                "success": False,
                "code": answer.error.code.value,
                "message": answer.error.message,
                **_answer_fields(answer),
            }
            return 400, msgspec.json.encode(body)
        return _status(status), msgspec.json.encode({"success": True, **_answer_fields(answer)})

    def refused(self, refusal: Refusal) -> Rendered:
        body = {
            "success": False,
            "code": refusal.code.value,
            "message": refusal.message,
            **msgspec.to_builtins(refusal.answer()),
        }
        return refusal.status, msgspec.json.encode(body), refusal.headers


_POSTHOG_TYPES = {401: "authentication_error", 403: "authentication_error"}


@dataclass(frozen=True, slots=True)
class PostHogDialect(Dialect):
    name: ClassVar[str] = "posthog"
    key_in_body: ClassVar[bool] = True

    def accepted(self, status: int, answer: Accepted, *, body_bytes: int) -> tuple[int, bytes]:
        if status == 400 and answer.error is not msgspec.UNSET:
            body = {
                "type": "validation_error",
                "code": answer.error.code.value,
                "detail": answer.error.message,
                "attr": None,
                **_answer_fields(answer),
            }
            return 400, msgspec.json.encode(body)
        return _status(status), msgspec.json.encode({"status": 1, **_answer_fields(answer)})

    def refused(self, refusal: Refusal) -> Rendered:
        kind = _POSTHOG_TYPES.get(
            refusal.status, "server_error" if refusal.status >= 500 else "validation_error"
        )
        body = {
            "type": kind,
            "code": refusal.code.value,
            "detail": refusal.message,
            "attr": None,
            **msgspec.to_builtins(refusal.answer()),
        }
        return refusal.status, msgspec.json.encode(body), refusal.headers


# Codes that are about the key: Amplitude answers them 400 "Invalid API key: ...", on which
# its SDK stops (a 401 would be retried as a bad request, event by event).
_KEY_CODES = (ErrorCode.UNAUTHORIZED, ErrorCode.INSUFFICIENT_SCOPE)


@dataclass(frozen=True, slots=True)
class AmplitudeDialect(Dialect):
    name: ClassVar[str] = "amplitude"
    key_in_body: ClassVar[bool] = True

    def accepted(self, status: int, answer: Accepted, *, body_bytes: int) -> tuple[int, bytes]:
        rejected = _REJECTIONS.decode(msgspec.json.encode(answer.rejected))  # raw JSON
        if status in (200, 202) and not rejected:
            body: dict[str, Any] = {
                "code": 200,
                "events_ingested": answer.accepted,
                "payload_size_bytes": body_bytes,
                "server_upload_time": int(time.time() * 1000),
                **_answer_fields(answer),
            }
            return 200, msgspec.json.encode(body)
        # Some events refused: Amplitude's 400 lists them by field; its SDK drops those and
        # sends the rest again (stored already: their event ids make the resend a no-op).
        missing: dict[str, list[int]] = {}
        invalid: dict[str, list[int]] = {}
        for r in rejected:
            field = amplitude.FIELDS.get(r.field or "", r.field or "event")
            (missing if r.code == "required" else invalid).setdefault(field, []).append(r.index)
        body = {
            "code": 400,
            "error": (
                answer.error.message
                if answer.error is not msgspec.UNSET
                else f"{len(rejected)} of {answer.received} events are invalid; "
                f"{answer.accepted} were accepted"
            ),
            "events_with_missing_fields": missing,
            "events_with_invalid_fields": invalid,
            **_answer_fields(answer),
        }
        return 400, msgspec.json.encode(body)

    def refused(self, refusal: Refusal) -> Rendered:
        status = refusal.status
        message = refusal.message
        if refusal.code in _KEY_CODES:
            status, message = 400, f"Invalid API key: {refusal.message}"
        body = {
            "code": status,
            "error": message,
            "error_code": refusal.code.value,
            **msgspec.to_builtins(refusal.answer().error),
        }
        body["code"], body["error"] = status, message  # Amplitude's fields win
        return status, msgspec.json.encode(body), refusal.headers


SEGMENT = SegmentDialect()
POSTHOG = PostHogDialect()
AMPLITUDE = AmplitudeDialect()
DIALECTS: dict[str, Dialect] = {d.name: d for d in (NATIVE, SEGMENT, POSTHOG, AMPLITUDE)}
# The vendors are body formats of `events_received_total{source}` too: a series from the start.
metrics.touch(metrics.EVENTS_RECEIVED, [d.name for d in (SEGMENT, POSTHOG, AMPLITUDE)])
