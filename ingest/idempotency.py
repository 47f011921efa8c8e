"""``Idempotency-Key`` on ``POST /events``, remembered in Redis per API key.

- first request with a key: marked in flight (``SET NX``), processed, its answer stored for
  ``EVENTS_IDEMPOTENCY_TTL`` seconds;
- same key, same request (body, media type, encoding; not ?wait): the stored answer again,
  with ``Idempotent-Replayed: true``, nothing enqueued;
- same key, another request: 422; same key while the first is still in flight: 409.

Server errors (5xx) and refusals that a retry may get past (429) are not remembered: the
in-flight mark is removed so the client can retry with the same key. Every change is made by
a Lua script that checks the mark still belongs to this request.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from core.codes import ErrorCode, Refusal
from ingest.ratelimit import REDIS_ERRORS, RedisUnavailable

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")

# KEYS[1]; ARGV: token, record. Replace the record only if the mark is still ours.
_FINISH = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if cjson.decode(current)['token'] ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """This request owns the key: finish or abandon it."""

    redis_key: str
    token: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Replay:
    status: int
    body: bytes
    headers: dict[str, str]


def fingerprint(*parts: bytes | str | None) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else (part or b"")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


class IdempotencyStore:
    def __init__(
        self, client: aioredis.Redis, *, prefix: str, ttl: int, in_flight_seconds: int = 180
    ) -> None:
        """``in_flight_seconds`` must outlast the slowest request (see ``service/runtime.py``):
        an in-flight mark that expired early would let a concurrent retry run too."""
        self._client = client
        self._in_flight = in_flight_seconds
        self._finish = client.register_script(_FINISH)
        self._prefix = f"{prefix}:idem"
        self._ttl = ttl

    def _redis_key(self, key_id: str, key: str) -> str:
        return f"{self._prefix}:{key_id}:{hashlib.sha256(key.encode()).hexdigest()[:40]}"

    async def begin(self, key_id: str, key: str, request_fingerprint: str) -> Claim | Replay:
        """Claim ``key`` for this request, or the stored answer to replay; raises 409/422."""
        if not _KEY.match(key):
            raise Refusal(
                ErrorCode.INVALID_IDEMPOTENCY_KEY,
                "Idempotency-Key must be 1-255 visible ASCII characters",
            )
        redis_key = self._redis_key(key_id, key)
        token = secrets.token_hex(16)
        pending = orjson.dumps(
            {"state": "in_flight", "token": token, "fingerprint": request_fingerprint}
        )
        try:
            if await self._client.set(redis_key, pending, nx=True, ex=self._in_flight):
                return Claim(redis_key, token, request_fingerprint)
            raw = await self._client.get(redis_key)
        except REDIS_ERRORS as ex:
            raise RedisUnavailable(type(ex).__name__) from ex
        if raw is None:  # expired between the two calls: try once more
            return await self.begin(key_id, key, request_fingerprint)
        record: dict[str, Any] = orjson.loads(raw)
        if record["fingerprint"] != request_fingerprint:
            raise Refusal(
                ErrorCode.IDEMPOTENCY_KEY_REUSED,
                "this Idempotency-Key was used with a different request",
            )
        if record["state"] == "in_flight":
            raise Refusal(
                ErrorCode.IDEMPOTENCY_KEY_IN_FLIGHT,
                "a request with this Idempotency-Key is still being processed",
                headers={"Retry-After": "1"},
            )
        return Replay(int(record["status"]), record["body"].encode(), dict(record["headers"]))

    async def finish(self, claim: Claim, status: int, body: bytes, headers: dict[str, str]) -> None:
        """Remember the answer (or forget the key if a retry could do better)."""
        if status >= 500 or status in (409, 429):
            record = b""
        else:
            record = orjson.dumps(
                {
                    "state": "done",
                    "token": claim.token,
                    "fingerprint": claim.fingerprint,
                    "status": status,
                    "body": body.decode(),
                    "headers": headers,
                }
            )
        for attempt in range(3):
            try:
                await self._finish(keys=[claim.redis_key], args=[claim.token, record, self._ttl])
                return
            except REDIS_ERRORS:
                # A blip: try again shortly. If Redis stays away the in-flight mark expires
                # by itself (meanwhile the same key answers 409).
                await asyncio.sleep(0.1 * (attempt + 1))
