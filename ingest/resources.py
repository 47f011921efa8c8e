"""The routes: ``POST /events``, ``GET /healthz``, ``GET /readyz``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import falcon
import falcon.asgi

from core.config import Settings
from core.ids import uuid7
from ingest.body import decode_content, read_body
from ingest.errors import bad_request, unavailable
from ingest.media import SOURCES, decode_batch, media_type
from ingest.runtime import Runtime
from ingest.validate import Limits
from pipeline.message import BatchMeta, amqp_headers, encode_message
from pipeline.publisher import BrokerUnavailable

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class EventsResource:
    """``POST /events``: validate a batch, publish it, answer once the broker has it."""

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

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        s = self._settings
        wait, timeout = self._wait_params(req)
        media = media_type(req.content_type)
        raw = await read_body(req.stream, req.content_length, s.max_body_bytes)
        body = decode_content(raw, req.get_header("Content-Encoding"), s.max_body_bytes)
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
            resp.status = falcon.HTTP_400
            resp.media = answer
            return

        meta = BatchMeta(
            batch_id=uuid7(), received_at=now, key_id=req.context.key_id, source=SOURCES[media]
        )
        answer["batch_id"] = str(meta.batch_id)
        payload = encode_message(batch.table, meta)
        commits = self._runtime.commits
        if wait:
            await commits.expect(meta.batch_id)
        try:
            await self._runtime.publisher.publish(
                payload,
                message_id=str(meta.batch_id),
                timestamp=now,
                headers=amqp_headers(meta, batch.accepted),
            )
        except BrokerUnavailable as ex:
            commits.forget(meta.batch_id)
            raise unavailable(
                "broker_unavailable",
                f"the queue is unavailable, nothing was accepted; retry ({ex})",
                retry_after=2,
            ) from ex
        resp.status = falcon.HTTP_202
        if wait:
            committed = await commits.wait(meta.batch_id, timeout)
            if committed is None:
                answer["committed"] = False
            else:
                answer.update(
                    committed=True, inserted=committed.inserted, duplicates=committed.duplicates
                )
                resp.status = falcon.HTTP_200
        resp.media = answer


class HealthResource:
    """``GET /healthz``: the process is alive (no dependencies checked)."""

    auth_required = False

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"status": "ok"}


class ReadyResource:
    """``GET /readyz``: PostgreSQL and RabbitMQ are reachable (503 otherwise)."""

    auth_required = False

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        checks = {
            "postgres": "ok" if await self._runtime.database_ready() else "unreachable",
            "rabbitmq": "ok" if await self._runtime.broker_ready() else "unreachable",
        }
        ready = all(v == "ok" for v in checks.values())
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        if not ready:
            resp.set_header("Retry-After", "5")
        resp.media = {"status": "ready" if ready else "unavailable", "checks": checks}
