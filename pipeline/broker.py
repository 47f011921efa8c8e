"""Connections to RabbitMQ that fail over between the nodes of a cluster.

``RABBITMQ_URL`` may list several AMQP URLs, comma-separated (one per node). A connection
goes to the first that answers; when it is lost, aio-pika's robust reconnection tries them
in turn, starting from the one it had (a killed node refuses at once), and restores channels
and consumers on whichever answers. Every connection of the service comes from here: the
API's publisher, the workers (consumer and dead-letter publisher), the DLQ commands and the
importer's queue sink.
"""

from __future__ import annotations

import logging
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aio_pika.robust_connection import RobustConnection
from yarl import URL

from core.redact import redact_url

log = logging.getLogger(__name__)


def broker_urls(setting: str) -> list[str]:
    """The URLs of a ``RABBITMQ_URL`` setting, in order."""
    urls = [u.strip() for u in setting.split(",") if u.strip()]
    if not urls:
        raise ValueError("RABBITMQ_URL holds no URL")
    return urls


class FailoverConnection(RobustConnection):
    """A robust connection over several URLs: each (re)connection tries them in turn, from
    the last one that answered (a killed node refuses at once, and the next is tried)."""

    def __init__(self, urls: list[str], **kwargs: Any) -> None:
        super().__init__(URL(urls[0]), **kwargs)
        self._urls = [URL(u) for u in urls]
        self._index = 0

    # aio-pika's reconnection loop calls the name-mangled ``__connect_transport`` for every
    # attempt; this override runs it once per URL. (Checked by
    # tests/pipeline/test_broker_failover.py, which fails if a release renames it.)
    async def _RobustConnection__connect_transport(self) -> None:
        last: BaseException | None = None
        for _ in range(len(self._urls)):
            self.url = self._urls[self._index]
            try:
                await super()._RobustConnection__connect_transport()  # type: ignore[misc]
            except CONNECTION_EXCEPTIONS as ex:
                last = ex
                log.warning(
                    "RabbitMQ node unreachable; trying the next",
                    extra={"url": redact_url(str(self.url)), "error": type(ex).__name__},
                )
                self._index = (self._index + 1) % len(self._urls)
                continue
            if len(self._urls) > 1:
                log.info("connected to RabbitMQ", extra={"url": redact_url(str(self.url))})
            return
        assert last is not None  # noqa: S101 - the loop ran at least once
        raise last


async def connect_robust(
    setting: str, *, timeout: float, reconnect_interval: float = 1
) -> AbstractRobustConnection:
    """A robust connection to the first node of ``setting`` that answers."""
    urls = broker_urls(setting)
    if len(urls) == 1:
        return await aio_pika.connect_robust(
            urls[0], timeout=timeout, reconnect_interval=reconnect_interval
        )
    connection = FailoverConnection(urls, reconnect_interval=reconnect_interval)
    await connection.connect(timeout=timeout)
    return connection


async def connect(setting: str, *, timeout: float) -> AbstractConnection:
    """A plain connection (no reconnection) to the first node that answers."""
    last: BaseException | None = None
    for url in broker_urls(setting):
        try:
            return await aio_pika.connect(url, timeout=timeout)
        except CONNECTION_EXCEPTIONS as ex:
            last = ex
    assert last is not None  # noqa: S101
    raise last
