"""Step 1: turn a queue delivery into a ``DecodedBatch``; undecodable ones are dead-lettered."""

from __future__ import annotations

import logging
from collections.abc import Callable

from pipeline.dead_letters import DeadLetters
from pipeline.message import DecodedBatch, decode_message
from pipeline.steps import Delivery, Message, ProcessingStep, describe, is_message_fault

log = logging.getLogger(__name__)


class DecodeStep:
    """Decodes the Arrow IPC body and passes it on.

    Decoding is zero-copy and cheap, so when the next step rejects a message the runner
    simply submits the same delivery again later and it is decoded again.

    Whatever decoding one body raises (``MessageDecodeError`` for what ``decode_message``
    checks, anything else for what it did not foresee) is that message's fault: it goes to
    the dead-letter queue and the worker goes on. Letting it escape would crash the worker,
    and every restart would walk the messages it held towards the delivery limit.
    """

    def __init__(
        self,
        next_step: ProcessingStep[DecodedBatch],
        dead_letters: DeadLetters,
        *,
        decode: Callable[[bytes], DecodedBatch] = decode_message,
    ) -> None:
        self._next = next_step
        self._dead_letters = dead_letters
        self._decode = decode

    def submit(self, message: Message[Delivery]) -> None:
        try:
            decoded = self._decode(message.payload.body)
        except BaseException as ex:
            if not is_message_fault(ex):
                raise
            error = describe(ex)
            log.warning(
                "undecodable message sent to the dead-letter queue",
                extra={"batch_id": message.payload.message_id, "error": error[:200]},
            )
            self._dead_letters.send(message.committable, reason="undecodable", error=error)
            return
        self._next.submit(Message(decoded, message.committable))

    def poll(self) -> None:
        self._next.poll()

    async def join(self, timeout: float | None = None) -> None:
        await self._dead_letters.join(timeout)
        await self._next.join(timeout)

    def close(self) -> None:
        self._next.close()
