"""The answers of ``POST /events``, as typed models: the code builds them, the OpenAPI
document's component schemas are derived from them (``service/openapi.py``).
"""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from core.codes import ErrorDetail

Count = Annotated[int, msgspec.Meta(ge=0)]


class Rejection(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Why one event of a request was refused (its first failing field)."""

    index: Annotated[int, msgspec.Meta(ge=0, description="The event's position, from 0.")]
    event_id: Annotated[
        str | None, msgspec.Meta(description="The event's id as sent, when it had one.")
    ]
    field: Annotated[
        str | None, msgspec.Meta(description="The field at fault (null: the event as a whole).")
    ]
    code: Annotated[str, msgspec.Meta(description="Why: `invalid_uuid`, `too_early`, ...")]
    message: str
    line: (
        Annotated[int, msgspec.Meta(ge=1, description="NDJSON: the line the event was on.")] | None
    ) = None


class Accepted(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What became of a batch: received, accepted, and each refusal; with ``?wait=true``
    whether it was committed, and what the commit made of it."""

    batch_id: Annotated[
        uuid.UUID | None,
        msgspec.Meta(description="UUIDv7 of the accepted batch (null when nothing was accepted)."),
    ]
    received: Count
    accepted: Count
    rejected: list[Rejection]
    committed: Annotated[
        bool | msgspec.UnsetType,
        msgspec.Meta(description="With `?wait=true`: whether the batch was committed in time."),
    ] = msgspec.UNSET
    inserted: Count | msgspec.UnsetType = msgspec.UNSET
    duplicates: Count | msgspec.UnsetType = msgspec.UNSET
    error: Annotated[
        ErrorDetail | msgspec.UnsetType,
        msgspec.Meta(description="When no event was valid (a 400): `no_valid_events`."),
    ] = msgspec.UNSET
