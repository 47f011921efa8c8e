"""Step 1: turn a queue delivery into a ``DecodedBatch``; undecodable ones are dead-lettered."""

from __future__ import annotations

import logging

from pipeline.dead_letters import DeadLetters
from pipeline.message import DecodedBatch, MessageDecodeError, decode_message
from pipeline.steps import Delivery, Message, ProcessingStep

log = logging.getLogger(__name__)


class DecodeStep:
    """Decodes the Arrow IPC body and passes it on.

    Decoding is zero-copy and cheap, so when the next step rejects a message the runner
    simply submits the same delivery again later and it is decoded again.
    """

    def __init__(self, next_step: ProcessingStep[DecodedBatch], dead_letters: DeadLetters) -> None:
        self._next = next_step
        self._dead_letters = dead_letters

    def submit(self, message: Message[Delivery]) -> None:
        try:
            decoded = decode_message(message.payload.body)
        except MessageDecodeError as ex:
            log.warning(
                "undecodable message sent to the dead-letter queue", extra={"reason": str(ex)[:200]}
            )
            self._dead_letters.send(message.committable, reason="undecodable", error=str(ex))
            return
        self._next.submit(Message(decoded, message.committable))

    def poll(self) -> None:
        self._next.poll()

    async def join(self, timeout: float | None = None) -> None:
        await self._dead_letters.join(timeout)
        await self._next.join(timeout)

    def close(self) -> None:
        self._next.close()
