"""Rate limits per API key: token buckets in Redis, shared by every API process and host.

One Lua script takes tokens atomically, with Redis's own clock (so hosts with skewed clocks
agree). A request costs its number of events in the events bucket (``EVENTS_RATE_LIMIT``
per second, ``EVENTS_RATE_BURST`` deep) and one token in the requests bucket
(``RATE_LIMIT`` per minute), when those are set. A request larger than the events bucket
could never pass: it is a 413, not a 429 forever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio as aioredis
import redis.exceptions

from core.config import Settings

# KEYS[1] bucket; ARGV: rate (tokens/s), burst, cost. Returns {allowed, tokens left, wait s}.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 60000)
return {allowed, tostring(tokens), tostring(wait)}
"""

REDIS_ERRORS = (redis.exceptions.RedisError, OSError, TimeoutError)


class RedisUnavailable(Exception):
    """Redis did not answer; the caller applies EVENTS_REDIS_FAILURE."""


@dataclass(frozen=True, slots=True)
class Bucket:
    rate: float  # tokens per second
    burst: int


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one request, and what its RateLimit-* headers say."""

    allowed: bool
    limit: int  # bucket size (events)
    remaining: int
    reset: int  # seconds until the bucket is full again
    retry_after: int  # seconds until this request would pass (when refused)
    too_large: bool = False

    def headers(self) -> dict[str, str]:
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }
        if not self.allowed and not self.too_large:
            out["Retry-After"] = str(self.retry_after)
        return out


class RateLimiter:
    """Token buckets per key id; ``None`` from ``check`` when no limit applies."""

    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        self._client = client
        self._take = client.register_script(_TAKE)
        self._prefix = f"{settings.queue_prefix}:rl"
        self._default = _bucket(settings.rate_limit, settings.rate_burst)
        self._overrides = {k: _bucket(r, b) for k, (r, b) in settings.rate_limit_overrides.items()}
        rpm = settings.rate_limit_rpm
        self._requests = Bucket(rpm / 60.0, rpm) if rpm else None

    def bucket_for(self, key_id: str) -> Bucket | None:
        return self._overrides.get(key_id, self._default)

    @property
    def enabled(self) -> bool:
        return (
            self._default is not None
            or self._requests is not None
            or any(b is not None for b in self._overrides.values())
        )

    async def check(self, key_id: str, events: int) -> Decision | None:
        """Take ``events`` tokens (and one request token) for ``key_id``."""
        bucket = self.bucket_for(key_id)
        decision = None
        if bucket is not None:
            if events > bucket.burst:
                return Decision(False, bucket.burst, bucket.burst, 0, 0, too_large=True)
            decision = await self._apply(f"{self._prefix}:events:{key_id}", bucket, events)
        if self._requests is not None and (decision is None or decision.allowed):
            per_request = await self._apply(f"{self._prefix}:requests:{key_id}", self._requests, 1)
            if decision is None or not per_request.allowed:
                decision = per_request
        return decision

    async def _apply(self, key: str, bucket: Bucket, cost: int) -> Decision:
        try:
            allowed, left, wait = await self._take(
                keys=[key], args=[bucket.rate, bucket.burst, cost]
            )
        except REDIS_ERRORS as ex:
            raise RedisUnavailable(type(ex).__name__) from ex
        tokens = float(left)
        return Decision(
            allowed=bool(int(allowed)),
            limit=bucket.burst,
            remaining=max(0, int(tokens)),
            reset=math.ceil((bucket.burst - tokens) / bucket.rate),
            retry_after=max(1, math.ceil(float(wait))),
        )


def _bucket(rate: float, burst: int) -> Bucket | None:
    if rate <= 0:
        return None
    return Bucket(rate, burst or max(1, math.ceil(rate * 10)))
