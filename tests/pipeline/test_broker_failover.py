"""Failover between RabbitMQ nodes (``pipeline/broker.py``), against the real broker: two
TCP proxies in front of it stand for two nodes, and closing one (listener and connections)
is a node killed. A connection goes to the first node that answers, and a lost one comes back
through the other with its consumers restored."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aio_pika
import pytest

from pipeline import broker
from pipeline.publisher import Publisher
from pipeline.topology import Topology
from tests.conftest import make_settings
from tests.services import free_port

RABBIT = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
_TARGET = urlsplit(RABBIT)


class Node:
    """A TCP proxy to the broker: one 'node' of the test's cluster."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(_TARGET.hostname, _TARGET.port or 5672)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def kill(self) -> None:
        """Stop listening and drop every connection at once, like a node killed -9."""
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.transport.abort()
        await self._server.wait_closed()


@pytest.fixture
async def nodes() -> list[Node]:
    two = [Node(), Node()]
    for n in two:
        await n.start()
    yield two
    for n in two:
        with contextlib.suppress(Exception):
            await n.kill()


async def test_the_first_node_that_answers_is_used() -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    connection = await broker.connect_robust(f"{dead}, {RABBIT}", timeout=5)
    try:
        assert connection.url.port == (_TARGET.port or 5672)
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        assert queue.name
    finally:
        await connection.close()
    plain = await broker.connect(f"{dead},{RABBIT}", timeout=5)
    await plain.close()
    with pytest.raises(aio_pika.exceptions.AMQPConnectionError):
        await broker.connect(dead, timeout=5)


async def test_a_lost_node_fails_over_and_the_consumer_is_restored(nodes: list[Node]) -> None:
    a, b = nodes
    name = f"failover_{uuid.uuid4().hex[:8]}"
    got: asyncio.Queue[bytes] = asyncio.Queue()
    connection = await broker.connect_robust(f"{a.url},{b.url}", timeout=5, reconnect_interval=0.2)
    direct = await aio_pika.connect(RABBIT)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await got.put(message.body)
            await message.ack()

        await queue.consume(on_message)
        sender = await direct.channel()
        await sender.default_exchange.publish(aio_pika.Message(b"before"), routing_key=name)
        assert await asyncio.wait_for(got.get(), 10) == b"before"
        assert connection.url.port == a.port

        await a.kill()
        # Back through the other node, consumer and all, with no call of ours.
        for _ in range(100):
            if connection.url.port == b.port and connection.connected.is_set():
                break
            await asyncio.sleep(0.1)
        assert connection.url.port == b.port
        await sender.default_exchange.publish(aio_pika.Message(b"after"), routing_key=name)
        # "before" may come again first: its ack may have been lost with the node (at least
        # once, as the worker's ledger expects).
        seen = [await asyncio.wait_for(got.get(), 15)]
        while seen[-1] != b"after":
            seen.append(await asyncio.wait_for(got.get(), 15))
        assert set(seen) <= {b"before", b"after"}
    finally:
        cleanup = await direct.channel()
        await cleanup.queue_delete(name)
        await direct.close()
        await connection.close()


async def test_the_publisher_confirms_through_the_remaining_node(nodes: list[Node]) -> None:
    a, b = nodes
    settings = make_settings(rabbitmq_url=f"{a.url},{b.url}")
    topology = Topology.from_settings(settings)
    publisher = Publisher(settings.rabbitmq_url, topology, confirm_timeout=5)
    await publisher.start()
    direct = await aio_pika.connect(RABBIT)
    try:
        now = datetime.now(UTC)
        await publisher.publish(b"one", message_id="1", timestamp=now, headers={})
        await a.kill()
        # Refused (BrokerUnavailable, answered 503) while the connection is restored, then
        # confirmed through the other node.
        for _ in range(100):
            try:
                await publisher.publish(b"two", message_id="2", timestamp=now, headers={})
                break
            except Exception:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("never published through the other node")
        channel = await direct.channel()
        queue = await channel.declare_queue(topology.queue, passive=True)
        bodies = []
        while (message := await queue.get(fail=False)) is not None:
            bodies.append(message.body)
            await message.ack()
        assert bodies == [b"one", b"two"]
    finally:
        await publisher.close()
        cleanup = await direct.channel()
        for q in (topology.queue, topology.dead_letter_queue):
            await cleanup.queue_delete(q)
        await direct.close()
