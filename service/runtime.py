"""Per-process connections of the API, opened at ASGI start-up and closed at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import time
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from analytics.engine import Analytics
from core.config import Settings
from ingest.commits import CommitWaiter
from ingest.decoder import Decoder
from ingest.idempotency import IdempotencyStore
from ingest.ratelimit import REDIS_ERRORS, RateLimiter
from pipeline.publisher import Publisher
from pipeline.topology import Topology
from storage.db import SERVER_SETTINGS
from storage.errors import DB_ERRORS
from storage.lake import Lake

log = logging.getLogger(__name__)


# /metrics reuses the queue depths it read for this long: scrapes (several monitors, every
# API process) then cost the broker at most one pair of passive declares per process and
# period, and Prometheus, scraping every 15 s or more, never sees the difference.
QUEUE_DEPTHS_MAX_AGE = 2.0
# The longest a scrape waits for fresh depths; past it, it answers with the last ones read
# (none if the last read failed), so a broker that hangs cannot hold /metrics.
QUEUE_DEPTHS_WAIT = 1.0
# The longest one read of the depths may take before it counts as failed.
QUEUE_DEPTHS_TIMEOUT = 5.0


class Runtime:
    """Holds the publisher, a small PostgreSQL pool, Redis and the commit waiter of a process.

    Installed as Falcon middleware so that ASGI lifespan events open and close them.
    No server has to be up for the process to start: requests answer 503 until they are
    (Redis: as ``EVENTS_REDIS_FAILURE`` says).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.publisher = Publisher(
            settings.rabbitmq_url,
            Topology.from_settings(settings),
            confirm_timeout=settings.publish_timeout,
        )
        # Short timeouts: a Redis that hangs must not hold requests longer than one that is down.
        self.redis = aioredis.from_url(
            settings.redis_url,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            health_check_interval=30,
        )
        self.limiter = RateLimiter(settings, self.redis)
        self.idempotency = IdempotencyStore(
            self.redis,
            prefix=settings.queue_prefix,
            ttl=settings.idempotency_ttl,
            # The slowest request: the body, the publish confirm and a ?wait=true, plus slack.
            in_flight_seconds=int(
                settings.client_timeout + settings.publish_timeout + settings.wait_timeout_max + 60
            ),
        )
        self.decoder = Decoder(
            processes=settings.decode_processes,
            inline_bytes=settings.decode_inline_bytes,
            budget_bytes=max(settings.decode_budget_bytes, settings.max_body_bytes),
            wait_seconds=settings.decode_wait_seconds,
        )
        self._pool: asyncpg.Pool | None = None
        self._commits: CommitWaiter | None = None
        self._analytics_pool: asyncpg.Pool | None = None
        self._depths: dict[str, int] = {}
        self._depths_read_at = -math.inf  # monotonic; never yet
        self._depths_reading: asyncio.Task[None] | None = None
        self.analytics = Analytics(
            lambda: self.analytics_pool,
            # Absolute: DuckDB may reach only this directory, and compares absolute paths.
            Lake(os.path.abspath(settings.lake_dir)),
            threads=settings.query_threads,
            memory_bytes=settings.duckdb_memory_bytes,
            timeout=settings.query_timeout,
            concurrency=settings.query_concurrency,
            mirror_rows=settings.hot_mirror_rows,
            index_users=settings.user_index_users,
        )

    async def process_startup(self, scope: Any, event: Any) -> None:
        self._pool = asyncpg.create_pool(
            self.settings.database_url,
            min_size=0,
            max_size=self.settings.db_pool_size,
            # Analytics statements differ only by their dates: a generic plan made after five
            # executions can be several times slower than a plan for the actual range.
            server_settings={**SERVER_SETTINGS, "plan_cache_mode": "force_custom_plan"},
            timeout=3,
        )
        await self._pool  # with min_size=0 this connects nothing yet
        # Analytics has a pool of its own: a slow query must not hold the connections that
        # readiness and ?wait=true need.
        self._analytics_pool = asyncpg.create_pool(
            self.settings.analytics_database_url or self.settings.database_url,
            min_size=0,
            max_size=self.settings.analytics_pool_size,
            server_settings={**SERVER_SETTINGS, "plan_cache_mode": "force_custom_plan"},
            timeout=3,
        )
        await self._analytics_pool
        self._commits = CommitWaiter(
            self.settings.database_url, self.settings.commit_channel, self._pool
        )
        await self.publisher.start()
        # PERF: objects alive after start-up (modules, settings) are never garbage; moving
        # them out of the collector's generations makes every later collection cheaper.
        gc.collect()
        gc.freeze()

    async def process_shutdown(self, scope: Any, event: Any) -> None:
        if self._depths_reading is not None:
            self._depths_reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._depths_reading
        if self._commits is not None:
            await self._commits.close()
        await self.publisher.close()
        with contextlib.suppress(*REDIS_ERRORS):
            await self.redis.aclose()
        self.analytics.close()
        self.decoder.close()
        for pool in (self._pool, self._analytics_pool):
            if pool is not None:
                with contextlib.suppress(*DB_ERRORS):
                    await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the app has not started (no ASGI lifespan startup)")
        return self._pool

    @property
    def analytics_pool(self) -> asyncpg.Pool:
        if self._analytics_pool is None:
            raise RuntimeError("the app has not started (no ASGI lifespan startup)")
        return self._analytics_pool

    @property
    def commits(self) -> CommitWaiter:
        if self._commits is None:
            raise RuntimeError("the app has not started (no ASGI lifespan startup)")
        return self._commits

    async def database_ready(self) -> bool:
        if self._pool is None:
            return False
        try:
            async with self._pool.acquire(timeout=2) as conn:
                return bool(await conn.fetchval("SELECT 1", timeout=2))
        except DB_ERRORS:
            return False

    async def redis_ready(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except REDIS_ERRORS:
            return False

    async def queue_depths(self) -> dict[str, int]:
        """Messages waiting in the queue and the DLQ, read at most every
        ``QUEUE_DEPTHS_MAX_AGE`` seconds (empty when the last read failed).

        Concurrent scrapes share one read; none waits for it longer than
        ``QUEUE_DEPTHS_WAIT``.
        """
        if time.monotonic() - self._depths_read_at < QUEUE_DEPTHS_MAX_AGE:
            return self._depths
        if self._depths_reading is None or self._depths_reading.done():
            self._depths_reading = asyncio.create_task(self._read_depths())
        with contextlib.suppress(TimeoutError):
            # Shielded: a scrape that stops waiting leaves the read to finish for the next.
            await asyncio.wait_for(asyncio.shield(self._depths_reading), QUEUE_DEPTHS_WAIT)
        return self._depths

    async def _read_depths(self) -> None:
        try:
            depths = await asyncio.wait_for(self.publisher.queue_depths(), QUEUE_DEPTHS_TIMEOUT)
        except Exception as ex:  # any failure of the broker or the client: no depths to report
            log.debug("queue depths unavailable", extra={"error": type(ex).__name__})
            depths = {}
        self._depths = depths
        # A failed read is remembered as long as a good one: a broker that is down is asked
        # no more often than one that is up.
        self._depths_read_at = time.monotonic()

    async def broker_ready(self) -> bool:
        if self.publisher.ready:
            return True
        with contextlib.suppress(Exception):
            await self.publisher.start()
        return self.publisher.ready
