"""The service as real processes (``events serve`` / ``events worker``) and a client load.

Used by the fault tests: they kill, stop and restart parts while ``Load`` keeps sending
batches like a well-behaved client (retrying a batch until it gets a 2xx) and records
exactly which events were accepted.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson

from core.config import Settings
from tests.conftest import API_KEY, new_event

EVENTS = [sys.executable, "-m", "service.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "RABBITMQ_URL": settings.rabbitmq_url,
        "REDIS_URL": settings.redis_url,
        "API_KEY": API_KEY,
        "EVENTS_QUEUE_PREFIX": settings.queue_prefix,
        "EVENTS_LOG_FORMAT": "json",
        "EVENTS_BATCH_MAX_AGE_MS": "50",
        **extra,
    }


class Process:
    """One child process with its log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stderr=out, stdout=out)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; the exit code (SIGKILL after ``timeout``)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def start_api(settings: Settings, log: Path, port: int, *, workers: int = 2, **env: str) -> Process:
    argv = [*EVENTS, "serve", "--no-migrate", "--bind", f"127.0.0.1:{port}"]
    return Process([*argv, "--workers", str(workers)], service_env(settings, **env), log)


def start_worker(settings: Settings, log: Path, **env: str) -> Process:
    argv = [*EVENTS, "worker", "--no-migrate", "--processes", "1"]
    return Process(argv, service_env(settings, **env), log)


async def wait_ready(base: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=2) as http:
        while asyncio.get_running_loop().time() < deadline:
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{base} not ready after {timeout} s")


class Load:
    """Senders that post batches until stopped, each retried until it is accepted.

    Every ``resend_every``-th batch repeats an accepted one (same event_ids), as a client
    does that never saw the answer: those events must still be stored once.
    """

    def __init__(
        self,
        base: str,
        *,
        batch_size: int = 200,
        senders: int = 2,
        resend_every: int = 5,
        seed: int = 7,
    ) -> None:
        self.base = base
        self.batch_size = batch_size
        self.senders = senders
        self.resend_every = resend_every
        self.rng = random.Random(seed)
        self.sent_ids: set[str] = set()
        self.accepted_ids: set[str] = set()
        self.accepted_batches: list[list[dict[str, Any]]] = []
        self.statuses: Counter[int | str] = Counter()
        self.refusals: Counter[str] = Counter()  # error.code of each 503 / 429
        self.retry_after_seen: set[str] = set()
        self.accepted_events = 0  # with repeats
        self.accepted_at: list[float] = []  # monotonic time of each 202
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._sender(i)) for i in range(self.senders)]

    def longest_gap(self) -> float:
        """The longest time without a 202, in seconds."""
        times = sorted(self.accepted_at)
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    async def stop(self, timeout: float = 90) -> None:
        """Stop making new batches; the ones in progress are sent until accepted."""
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), timeout)

    def _next_batch(self, n: int) -> list[dict[str, Any]]:
        if self.accepted_batches and n % self.resend_every == self.resend_every - 1:
            return self.rng.choice(self.accepted_batches)
        return [
            new_event(user_id=f"u{self.rng.randrange(1000)}", event_id=str(uuid.uuid4()))
            for _ in range(self.batch_size)
        ]

    async def _sender(self, index: int) -> None:
        headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=self.base, timeout=30, headers=headers) as http:
            n = 0
            while not self._stop.is_set():
                batch = self._next_batch(n)
                n += 1
                self.sent_ids.update(e["event_id"] for e in batch)
                await self._send_until_accepted(http, orjson.dumps(batch), batch)

    async def _send_until_accepted(
        self, http: httpx.AsyncClient, body: bytes, batch: list[dict[str, Any]]
    ) -> None:
        while True:
            try:
                answer = await http.post("/events", content=body)
            except httpx.TransportError as ex:
                self.statuses[type(ex).__name__] += 1
                await asyncio.sleep(0.1)
                continue
            self.statuses[answer.status_code] += 1
            if answer.status_code == 202:
                assert answer.json()["accepted"] == len(batch)
                self.accepted_ids.update(e["event_id"] for e in batch)
                self.accepted_batches.append(batch)
                self.accepted_events += len(batch)
                self.accepted_at.append(time.monotonic())
                return
            assert answer.status_code in (503, 429), answer.text
            self.refusals[answer.json()["error"]["code"]] += 1
            self.retry_after_seen.add(answer.headers.get("retry-after", ""))
            await asyncio.sleep(0.1)
