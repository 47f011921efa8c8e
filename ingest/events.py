"""``POST /events``: read, decode, validate, rate-limit, publish; answer once the broker has it.

The order is chosen so that no work is spent before it is due: the body size is checked
before reading (Content-Length) and while reading and inflating; an ``Idempotency-Key``
replay is answered before decoding; the rate limit is charged once the number of events is
known, before anything is published.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import falcon
import falcon.asgi
import orjson

from core import metrics
from core.config import Settings
from core.ids import uuid7
from ingest.body import decode_content, read_body
from ingest.errors import ApiError, bad_request, too_large, unavailable
from ingest.idempotency import Replay, fingerprint
from ingest.media import SOURCES, decode_batch, media_type
from ingest.ratelimit import Charge, RedisUnavailable
from ingest.runtime import Runtime
from ingest.validate import Limits, ValidatedBatch
from pipeline.message import BatchMeta, amqp_headers, encode_message
from pipeline.publisher import BrokerUnavailable, QueueFull

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
T = TypeVar("T")


class EventsResource:
    def __init__(self, settings: Settings, runtime: Runtime, clock: Callable[[], datetime]) -> None:
        self._settings = settings
        self._runtime = runtime
        self._clock = clock
        self._limits = Limits.from_settings(settings)

    def _wait_params(self, req: falcon.asgi.Request) -> tuple[bool, float]:
        raw_wait = (req.get_param("wait") or "").strip().lower()
        if raw_wait not in _TRUE | _FALSE:
            raise bad_request("invalid_parameter", "wait must be true or false")
        timeout = self._settings.wait_timeout
        raw_timeout = req.get_param("timeout")
        if raw_timeout is not None:
            try:
                timeout = float(raw_timeout)
            except ValueError:
                raise bad_request(
                    "invalid_parameter", "timeout must be a number of seconds"
                ) from None
            if not timeout >= 0:
                raise bad_request("invalid_parameter", "timeout must not be negative")
        return raw_wait in _TRUE, min(timeout, self._settings.wait_timeout_max)

    async def _redis(self, call: Awaitable[T]) -> T | None:
        """Run a Redis-backed check; when Redis is down apply EVENTS_REDIS_FAILURE."""
        try:
            return await call
        except RedisUnavailable as ex:
            metrics.REDIS_ERRORS.inc()
            if self._settings.redis_failure == "closed":
                raise unavailable(
                    "redis_unavailable",
                    "rate limits and idempotency cannot be checked (Redis is unreachable)",
                    retry_after=2,
                ) from ex
            log.warning(
                "Redis unreachable: serving without rate limits and idempotency",
                extra={"error": str(ex)},
            )
            return None

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        s = self._settings
        wait, timeout = self._wait_params(req)
        media = media_type(req.content_type)
        raw = await read_body(
            req.stream, req.content_length, s.max_body_bytes, timeout=s.client_timeout
        )
        key_id: str = req.context.key_id
        claim = None
        idempotency_key = req.get_header("Idempotency-Key")
        if idempotency_key is not None:
            request = fingerprint(media, req.get_header("Content-Encoding"), raw)
            outcome = await self._redis(
                self._runtime.idempotency.begin(key_id, idempotency_key, request)
            )
            if isinstance(outcome, Replay):
                metrics.IDEMPOTENT_REPLAYS.inc()
                resp.status = outcome.status
                resp.content_type = falcon.MEDIA_JSON
                resp.data = outcome.body
                resp.set_headers({**outcome.headers, "Idempotent-Replayed": "true"})
                return
            claim = outcome
        try:
            status, answer, headers = await self._accept(
                req, media, raw, wait=wait, timeout=timeout, key_id=key_id
            )
        except ApiError as ex:
            if claim is not None:
                await self._runtime.idempotency.finish(
                    claim, ex.status, orjson.dumps(ex.body()), {}
                )
            raise
        except BaseException:
            if claim is not None:
                await self._runtime.idempotency.finish(claim, 500, b"", {})
            raise
        data = orjson.dumps(answer)
        if claim is not None:
            await self._runtime.idempotency.finish(claim, status, data, {})
        resp.status = status
        resp.content_type = falcon.MEDIA_JSON
        resp.data = data
        resp.set_headers(headers)

    async def _accept(
        self,
        req: falcon.asgi.Request,
        media: str,
        raw: bytes,
        *,
        wait: bool,
        timeout: float,
        key_id: str,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        s = self._settings
        body = decode_content(
            raw,
            req.get_header("Content-Encoding"),
            s.max_body_bytes,
            max_ratio=s.max_compression_ratio,
        )
        now = self._clock()
        batch = decode_batch(
            media,
            body,
            limits=self._limits,
            now=now,
            max_events=s.max_events_per_request,
            max_bytes=s.max_body_bytes,
        )
        req.context.events = batch.received
        metrics.observe_batch(SOURCES[media], batch)
        answer: dict[str, Any] = {
            "batch_id": None,
            "received": batch.received,
            "accepted": batch.accepted,
            "rejected": [r.as_dict() for r in batch.rejected],
        }
        if batch.accepted == 0:
            answer["error"] = {
                "code": "no_valid_events",
                "message": "none of the events is valid; see rejected",
            }
            return 400, answer, {}
        headers, charge = await self._charge(key_id, batch)
        meta = BatchMeta(batch_id=uuid7(), received_at=now, key_id=key_id, source=SOURCES[media])
        answer["batch_id"] = str(meta.batch_id)
        commits = self._runtime.commits
        try:
            if wait:
                await commits.expect(meta.batch_id)
            await self._publish(batch, meta, now)
        except BaseException:
            # Not accepted after all (broker down, queue full, ...): the retry must not
            # pay twice.
            if charge is not None:
                await self._runtime.limiter.refund(charge)
            raise
        metrics.EVENTS_ACCEPTED.inc(batch.accepted)
        if not wait:
            return 202, answer, headers
        committed = await commits.wait(meta.batch_id, timeout)
        if committed is None:
            answer["committed"] = False
            return 202, answer, headers
        answer.update(committed=True, inserted=committed.inserted, duplicates=committed.duplicates)
        return 200, answer, headers

    async def _charge(
        self, key_id: str, batch: ValidatedBatch
    ) -> tuple[dict[str, str], Charge | None]:
        """Take the request's events from the key's rate-limit buckets: the headers to send,
        and what was taken (to give back if the batch is not accepted after all)."""
        limiter = self._runtime.limiter
        if not limiter.enabled:
            return {}, None
        outcome = await self._redis(limiter.check(key_id, batch.received))
        if outcome is None:
            return {}, None
        decision, charge = outcome
        if decision.too_large:
            metrics.RATE_LIMITED.labels(reason="too_large").inc()
            raise too_large(
                "rate_limit_exceeds_burst",
                f"{batch.received} events in one request; this key's rate limit "
                f"allows at most {decision.limit} at once",
                limit=decision.limit,
            )
        if not decision.allowed:
            metrics.RATE_LIMITED.labels(reason="rate").inc()
            raise ApiError(
                429,
                "rate_limited",
                f"rate limit reached; retry in {decision.retry_after} s",
                headers=decision.headers(),
                retry_after=decision.retry_after,
            )
        return decision.headers(), charge

    async def _publish(self, batch: ValidatedBatch, meta: BatchMeta, now: datetime) -> None:
        payload = encode_message(batch.table, meta)
        started = time.perf_counter()
        try:
            await self._runtime.publisher.publish(
                payload,
                message_id=str(meta.batch_id),
                timestamp=now,
                headers=amqp_headers(meta, batch.accepted),
            )
        except QueueFull as ex:
            self._runtime.commits.forget(meta.batch_id)
            metrics.PUBLISH_REFUSED.labels(reason="queue_full").inc()
            raise unavailable(
                "queue_full", "the queue is full; nothing was accepted, retry later", retry_after=5
            ) from ex
        except BrokerUnavailable as ex:
            self._runtime.commits.forget(meta.batch_id)
            metrics.PUBLISH_REFUSED.labels(reason="broker_unavailable").inc()
            raise unavailable(
                "broker_unavailable",
                f"the queue is unavailable, nothing was accepted; retry ({ex})",
                retry_after=2,
            ) from ex
        finally:
            metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
