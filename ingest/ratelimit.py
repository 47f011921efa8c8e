"""Rate limits per API key: token buckets in Redis, shared by every API process and host.

One Lua script takes tokens atomically, with Redis's own clock (so hosts with skewed clocks
agree). A request costs its number of events in the events bucket (``EVENTS_RATE_LIMIT``
per second, ``EVENTS_RATE_BURST`` deep) and one token in the requests bucket
(``RATE_LIMIT`` per minute), when those are set. The API takes them in two steps: one event
and the request token before the body is read (so a refused request costs the key too), the
other events once they are counted. A request larger than the events bucket could never
pass: it is a 413, not a 429 forever.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import redis.asyncio as aioredis
import redis.exceptions

from core.config import Settings

# KEYS: one or two buckets; ARGV: rate, burst, cost for each. Both are refilled, and the
# costs are taken from all of them or from none (a request refused by one bucket costs
# nothing in the other). Returns {refused bucket (0: none), tokens left in each, wait s}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = #KEYS
local tokens, refused, wait = {}, 0, 0
for i = 1, n do
  local rate = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local have = tonumber(state[1])
  local ts = tonumber(state[2])
  if have == nil then have = burst; ts = now end
  have = math.min(burst, have + math.max(0, now - ts) * rate)
  tokens[i] = have
  if have < cost and refused == 0 then
    refused = i
    wait = (cost - have) / rate
  end
end
local out = {refused}
for i = 1, n do
  local rate = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  if refused == 0 then tokens[i] = tokens[i] - tonumber(ARGV[3 * i]) end
  redis.call('HSET', KEYS[i], 'tokens', tostring(tokens[i]), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(burst / rate * 1000) + 60000)
  out[i + 1] = tostring(tokens[i])
end
out[n + 2] = tostring(wait)
return out
"""

# KEYS: buckets; ARGV: burst, cost for each. Give back what a request took (capped at the
# burst) when it was not accepted after all (the broker refused it).
_REFUND = """
for i = 1, #KEYS do
  local burst = tonumber(ARGV[2 * i - 1])
  local have = tonumber(redis.call('HGET', KEYS[i], 'tokens'))
  if have ~= nil then
    have = math.min(burst, have + tonumber(ARGV[2 * i]))
    redis.call('HSET', KEYS[i], 'tokens', tostring(have))
  end
end
return 1
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


@dataclass(frozen=True, slots=True)
class Charge:
    """What a request took, to give back if it is not accepted after all."""

    keys: tuple[str, ...]
    args: tuple[float, ...]  # burst, cost for each key


class RateLimiter:
    """Token buckets per key id; ``None`` from ``check`` when no limit applies."""

    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        self._client = client
        self._take = client.register_script(_TAKE)
        self._refund = client.register_script(_REFUND)
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

    async def take(
        self, key_id: str, *, events: int, requests: int, of: int | None = None
    ) -> tuple[Decision, Charge] | None:
        """Take ``events`` event tokens and ``requests`` request tokens for ``key_id``, all or
        none; ``of`` is the request's whole number of events (413 beyond the burst).

        None when no bucket applies to what is asked. The decision's headers describe the
        events bucket (the requests bucket when only that one applies, or when it refused).
        """
        bucket = self.bucket_for(key_id)
        if bucket is not None and of is not None and of > bucket.burst:
            return Decision(False, bucket.burst, bucket.burst, 0, 0, too_large=True), Charge((), ())
        buckets: list[tuple[str, Bucket, int]] = []
        if bucket is not None and events > 0:
            buckets.append((f"{self._prefix}:events:{key_id}", bucket, events))
        if self._requests is not None and requests > 0:
            buckets.append((f"{self._prefix}:requests:{key_id}", self._requests, requests))
        if not buckets:
            return None
        keys = [k for k, _, _ in buckets]
        args = [v for _, b, cost in buckets for v in (b.rate, b.burst, cost)]
        try:
            result = await self._take(keys=keys, args=args)
        except REDIS_ERRORS as ex:
            raise RedisUnavailable(type(ex).__name__) from ex
        refused = int(result[0])
        wait = float(result[-1])
        shown = refused - 1 if refused else 0
        _, shown_bucket, _ = buckets[shown]
        tokens = float(result[1 + shown])
        decision = Decision(
            allowed=refused == 0,
            limit=shown_bucket.burst,
            remaining=max(0, int(tokens)),
            reset=math.ceil((shown_bucket.burst - tokens) / shown_bucket.rate),
            retry_after=max(1, math.ceil(wait)),
        )
        charge = Charge(tuple(keys), tuple(v for _, b, cost in buckets for v in (b.burst, cost)))
        return decision, charge

    async def refund(self, charge: Charge) -> None:
        """Give back what ``check`` took (best effort: Redis may be gone)."""
        if not charge.keys:
            return
        with contextlib.suppress(*REDIS_ERRORS):
            await self._refund(keys=list(charge.keys), args=list(charge.args))


def _bucket(rate: float, burst: int) -> Bucket | None:
    if rate <= 0:
        return None
    return Bucket(rate, burst or max(1, math.ceil(rate * 10)))
