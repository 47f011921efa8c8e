"""``POST /events``: read, decode, validate, rate-limit, publish; answer once the broker has it.

The order is chosen so that no work is spent before it is due: the body size is checked
before reading (Content-Length) and while reading and inflating; the key pays one token
before its body is read (so refused requests cost it too) and room in the decode budget is
taken (``ingest/decoder.py``); an ``Idempotency-Key`` replay is answered before decoding;
the rest of the rate limit is charged once the number of events is known, before anything
is published.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol, TypeVar, cast

import falcon
import falcon.asgi
import msgspec

from core import metrics
from core.codes import ErrorCode, ErrorDetail, Refusal
from core.config import Settings
from core.ids import uuid7
from ingest.answers import Accepted, Rejection
from ingest.body import read_body
from ingest.commits import CommitWaiter
from ingest.decode_job import DecodedRequest, DecodeRequest
from ingest.decoder import Decoder
from ingest.dialects import DIALECTS, NATIVE, Dialect
from ingest.idempotency import Claim, IdempotencyStore, Replay, fingerprint
from ingest.media import SOURCES, media_type
from ingest.ratelimit import Charge, Decision, RateLimiter, RedisUnavailable
from ingest.validate import Limits
from pipeline.message import BatchMeta, amqp_headers
from pipeline.publisher import BrokerUnavailable, Publisher, QueueFull

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
T = TypeVar("T")


class IngestRuntime(Protocol):
    """What ``POST /events`` needs of its process (``service/runtime.py`` provides it)."""

    @property
    def publisher(self) -> Publisher: ...

    @property
    def limiter(self) -> RateLimiter: ...

    @property
    def idempotency(self) -> IdempotencyStore: ...

    @property
    def decoder(self) -> Decoder: ...

    @property
    def commits(self) -> CommitWaiter: ...


class KeyBook(Protocol):
    """What a route that finds its key itself needs of the keys (``service/auth.py``)."""

    def from_headers(self, req: falcon.asgi.Request) -> tuple[str, frozenset[str]] | None:
        """The id and scopes of the key in the headers; None when no header has one (a
        ``Refusal`` for an unknown one)."""
        ...

    def scopes(self, key_id: str) -> frozenset[str]: ...

    @property
    def key_ids(self) -> Mapping[bytes, str] | None:
        """Key digest -> key id, for a body's own key (None: no keys, anyone may send)."""
        ...


_MISSING_KEY = (
    "missing or invalid API key: send it as the SDK's write key / api_key, X-API-Key: <key> "
    "or Authorization: Bearer <key>"
)


class CaptureResource:
    """One capture route: read, decode, validate, rate-limit, publish, answer.

    ``POST /events`` (``EventsResource``) answers in our form; a vendor's route
    (``ingest/vendors/routes.py``) decodes that vendor's JSON and answers in its dialect.
    """

    required_scope = "ingest"
    cors = True  # browsers may send from any origin (service/cors.py)
    dialect: Dialect = NATIVE
    route: str | None = None  # a vendor's ``vendor:call`` (None: ours, by media type)

    def __init__(
        self,
        settings: Settings,
        runtime: IngestRuntime,
        clock: Callable[[], datetime],
        keys: KeyBook | None = None,
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._clock = clock
        self._limits = Limits.from_settings(settings)
        self._keys = keys

    def _wait_params(self, req: falcon.asgi.Request) -> tuple[bool, float]:
        raw_wait = (req.get_param("wait") or "").strip().lower()
        if raw_wait not in _TRUE | _FALSE:
            raise Refusal(ErrorCode.INVALID_PARAMETER, "wait must be true or false")
        timeout = self._settings.wait_timeout
        raw_timeout = req.get_param("timeout")
        if raw_timeout is not None:
            try:
                timeout = float(raw_timeout)
            except ValueError:
                raise Refusal(
                    ErrorCode.INVALID_PARAMETER, "timeout must be a number of seconds"
                ) from None
            if not timeout >= 0:
                raise Refusal(ErrorCode.INVALID_PARAMETER, "timeout must not be negative")
        return raw_wait in _TRUE, min(timeout, self._settings.wait_timeout_max)

    def media(self, req: falcon.asgi.Request) -> str:
        """The body's media type (a 415 for one this route does not read)."""
        return media_type(req.content_type)

    def content_encoding(self, req: falcon.asgi.Request, raw: bytes) -> str | None:
        """How the body (read: ``raw``) is compressed."""
        return req.get_header("Content-Encoding")

    async def _redis(self, call: Awaitable[T]) -> T | None:
        """Run a Redis-backed check; when Redis is down apply EVENTS_REDIS_FAILURE."""
        try:
            return await call
        except RedisUnavailable as ex:
            metrics.REDIS_ERRORS.inc()
            if self._settings.redis_failure == "closed":
                raise  # answered 503 redis_unavailable (service/errors.py)
            log.warning(
                "Redis unreachable: serving without rate limits and idempotency",
                extra={"error": str(ex)},
            )
            return None

    def _scoped(self, key_id: str, scopes: frozenset[str]) -> str:
        if self.required_scope not in scopes:
            raise Refusal(
                ErrorCode.INSUFFICIENT_SCOPE,
                f"this API key may not do this: it needs the {self.required_scope!r} scope "
                f"(it has: {', '.join(sorted(scopes)) or 'none'})",
                required_scope=self.required_scope,
            )
        return key_id

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        s = self._settings
        dialect = req.context.dialect = self.dialect
        wait, timeout = self._wait_params(req)
        media = self.media(req)
        if req.content_length is not None and req.content_length > s.max_body_bytes:
            raise Refusal(
                ErrorCode.BODY_TOO_LARGE,
                f"the request body is larger than {s.max_body_bytes} bytes",
                limit=s.max_body_bytes,
            )
        key_id: str | None = req.context.get("key_id")
        if key_id is None and self._keys is not None:
            identified = self._keys.from_headers(req)
            if identified is not None:
                key_id = self._scoped(*identified)
                req.context.key_id = key_id
        # Every request costs its key a token before anything is read, refused or not: a
        # client whose requests are all refused still runs out of them. (A key sent in the
        # body is known, and charged, once the body is read: ``ingest/vendors/decode.py``.)
        admitted = await self._admit(key_id) if key_id is not None else None
        claim: Claim | Replay | None = None
        raw = b""
        try:
            async with self._runtime.decoder.reserve(
                req.content_length or s.max_body_bytes
            ) as reservation:
                raw = await read_body(
                    req.stream, req.content_length, s.max_body_bytes, timeout=s.client_timeout
                )
                reservation.shrink_to(len(raw))
                encoding = self.content_encoding(req, raw)
                idempotency_key = req.get_header("Idempotency-Key")
                request = fingerprint(self.route or media, encoding, raw)
                if idempotency_key is not None and key_id is not None:
                    claim = await self._claim(key_id, idempotency_key, request)
                    if isinstance(claim, Replay):
                        return _replay(resp, claim)
                now = self._clock()
                meta = BatchMeta(
                    batch_id=uuid7(),
                    received_at=now,
                    key_id=key_id or "",
                    source=self.dialect.name if self.route else SOURCES[media],
                )
                batch = await self._decode(
                    media, encoding, raw, now=now, meta=meta, key_in_body=key_id is None
                )
                if batch.vendor is not None and batch.vendor != dialect.name:
                    # One path, two vendors (``/batch``: PostHog's and Amplitude's): the body
                    # said which.
                    dialect = req.context.dialect = DIALECTS[batch.vendor]
                    meta = replace(meta, source=dialect.name)
                if admitted is None:  # the key came in the body
                    key_id = self._body_key(batch)
                    req.context.key_id = key_id
                    meta = replace(meta, key_id=key_id)
                    admitted = await self._admit(key_id)
                    if idempotency_key is not None:
                        claim = await self._claim(key_id, idempotency_key, request)
                        if isinstance(claim, Replay):
                            return _replay(resp, claim)
                status, answer, headers, batch_id = await self._accept(
                    req, batch, meta, wait=wait, admitted=admitted
                )
            # The body is published (or refused): wait for the commit without holding any
            # of the decode budget.
            if batch_id is not None and wait:
                status = await self._await_commit(batch_id, answer, timeout)
        except Refusal as ex:
            if isinstance(claim, Claim):
                status, data, headers = dialect.refused(ex)
                await self._runtime.idempotency.finish(claim, status, data, {})
            raise
        except BaseException:
            if isinstance(claim, Claim):
                await self._runtime.idempotency.finish(claim, 500, b"", {})
            raise
        status, data = dialect.accepted(status, answer, body_bytes=len(raw))
        if isinstance(claim, Claim):
            await self._runtime.idempotency.finish(claim, status, data, {})
        resp.status = status
        resp.content_type = falcon.MEDIA_JSON
        resp.data = data
        resp.set_headers(headers)

    async def _claim(
        self, key_id: str, idempotency_key: str, request: str
    ) -> Claim | Replay | None:
        """The claim of an ``Idempotency-Key``, the first answer to replay, or None (Redis is
        down and EVENTS_REDIS_FAILURE=open)."""
        return await self._redis(self._runtime.idempotency.begin(key_id, idempotency_key, request))

    def _body_key(self, batch: DecodedRequest) -> str:
        """The id of the key the body carried (401 for none or an unknown one, 403 for one
        without the route's scope)."""
        if batch.unknown_key or batch.key_id is None or self._keys is None:
            raise Refusal(
                ErrorCode.UNAUTHORIZED,
                _MISSING_KEY,
                headers={"WWW-Authenticate": 'Bearer realm="events"'},
            )
        return self._scoped(batch.key_id, self._keys.scopes(batch.key_id))

    async def _decode(
        self,
        media: str,
        encoding: str | None,
        raw: bytes,
        *,
        now: datetime,
        meta: BatchMeta,
        key_in_body: bool,
    ) -> DecodedRequest:
        s = self._settings
        return await self._runtime.decoder.decode(
            DecodeRequest(
                media=media,
                raw=raw,
                content_encoding=encoding,
                limits=self._limits,
                now=now,
                meta=meta,
                max_events=s.max_events_per_request,
                max_values=s.max_json_values,
                max_bytes=s.max_body_bytes,
                max_ratio=s.max_compression_ratio,
                vendor=self.route,
                key_ids=self._keys.key_ids if key_in_body and self._keys is not None else None,
            )
        )

    async def _accept(
        self,
        req: falcon.asgi.Request,
        batch: DecodedRequest,
        meta: BatchMeta,
        *,
        wait: bool,
        admitted: Admission,
    ) -> tuple[int, Accepted, dict[str, str], uuid.UUID | None]:
        """Charge and publish decoded events: (status, answer, headers, batch id if
        published)."""
        now = meta.received_at
        req.context.events = batch.received
        metrics.observe_batch(meta.source, batch.received, batch.refusals)
        answer = Accepted(
            batch_id=None,
            received=batch.received,
            accepted=batch.accepted,
            # Refusals arrive as the JSON of ``list[Rejection]`` (``ingest/decode_job.py``).
            rejected=cast(list[Rejection], msgspec.Raw(batch.rejected_json)),
        )
        if batch.payload is None:
            answer.error = ErrorDetail(
                ErrorCode.NO_VALID_EVENTS, "none of the events is valid; see rejected"
            )
            return 400, answer, admitted.headers, None
        headers, charge = await self._charge(meta.key_id, batch.received, admitted)
        answer.batch_id = meta.batch_id
        commits = self._runtime.commits
        try:
            if wait:
                await commits.expect(meta.batch_id)
            await self._publish(batch.payload, batch.accepted, meta, now)
        except BaseException:
            # Not accepted after all (broker down, queue full, ...): the retry must not
            # pay twice.
            for taken in (admitted.charge, charge):
                if taken is not None:
                    await self._runtime.limiter.refund(taken)
            raise
        metrics.EVENTS_ACCEPTED.inc(batch.accepted)
        return 202, answer, headers, meta.batch_id

    async def _await_commit(self, batch_id: uuid.UUID, answer: Accepted, timeout: float) -> int:
        committed = await self._runtime.commits.wait(batch_id, timeout)
        if committed is None:
            answer.committed = False
            return 202
        answer.committed = True
        answer.inserted = committed.inserted
        answer.duplicates = committed.duplicates
        return 200

    def _refusal(self, decision: Decision, events: int) -> Refusal:
        if decision.too_large:
            metrics.RATE_LIMITED.labels(reason="too_large").inc()
            return Refusal(
                ErrorCode.RATE_LIMIT_EXCEEDS_BURST,
                f"{events} events in one request; this key's rate limit "
                f"allows at most {decision.limit} at once",
                limit=decision.limit,
            )
        metrics.RATE_LIMITED.labels(reason="rate").inc()
        return Refusal(
            ErrorCode.RATE_LIMITED,
            f"rate limit reached; retry in {decision.retry_after} s",
            headers=decision.headers(),
            retry_after=decision.retry_after,
        )

    async def _admit(self, key_id: str) -> Admission:
        """One request token and one event token, before the body is read."""
        limiter = self._runtime.limiter
        if not limiter.enabled:
            return Admission(active=False)
        outcome = await self._redis(limiter.take(key_id, events=1, requests=1))
        if outcome is None:  # Redis is down and EVENTS_REDIS_FAILURE=open
            return Admission(active=False)
        decision, charge = outcome
        if not decision.allowed:
            raise self._refusal(decision, 1)
        return Admission(active=True, headers=decision.headers(), charge=charge)

    async def _charge(
        self, key_id: str, events: int, admitted: Admission
    ) -> tuple[dict[str, str], Charge | None]:
        """Take the rest of the request's events from the key's events bucket: the headers
        to send, and what was taken (to give back if the batch is not accepted after all)."""
        if not admitted.active:
            return admitted.headers, None
        limiter = self._runtime.limiter
        outcome = await self._redis(limiter.take(key_id, events=events - 1, requests=0, of=events))
        if outcome is None:
            return admitted.headers, None
        decision, charge = outcome
        if not decision.allowed:
            raise self._refusal(decision, events)
        return decision.headers(), charge

    async def _publish(self, payload: bytes, accepted: int, meta: BatchMeta, now: datetime) -> None:
        started = time.perf_counter()
        try:
            await self._runtime.publisher.publish(
                payload,
                message_id=str(meta.batch_id),
                timestamp=now,
                headers=amqp_headers(meta, accepted),
            )
        except QueueFull:
            # Answered 503 queue_full, and 503 broker_unavailable below (service/errors.py).
            self._runtime.commits.forget(meta.batch_id)
            metrics.PUBLISH_REFUSED.labels(reason="queue_full").inc()
            raise
        except BrokerUnavailable:
            self._runtime.commits.forget(meta.batch_id)
            metrics.PUBLISH_REFUSED.labels(reason="broker_unavailable").inc()
            raise
        finally:
            metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)


def _replay(resp: falcon.asgi.Response, replay: Replay) -> None:
    metrics.IDEMPOTENT_REPLAYS.inc()
    resp.status = replay.status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = replay.body
    resp.set_headers({**replay.headers, "Idempotent-Replayed": "true"})


class EventsResource(CaptureResource):
    """``POST /events``: our JSON, NDJSON or Arrow bodies, the key in a header."""


@dataclass(frozen=True, slots=True)
class Admission:
    """What taking the request's first token gave: whether limits apply, the headers to
    send, and what to give back if the broker refuses the batch."""

    active: bool
    headers: dict[str, str] = field(default_factory=dict)
    charge: Charge | None = None
