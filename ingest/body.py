"""Reading a request body within limits: on the wire, and again while decompressing.

A body larger than ``max_bytes`` is refused as soon as that is known: from Content-Length
before reading anything, while reading otherwise, and while decompressing (a 1 KB gzip
bomb stops after ``max_bytes`` of output, not after gigabytes).
"""

from __future__ import annotations

import asyncio
import io
import zlib
from collections.abc import AsyncIterable

import zstandard

from core.codes import ErrorCode, Refusal

SUPPORTED_ENCODINGS = ("gzip", "zstd", "deflate", "identity")
_READ_CHUNK = 1 << 16
_MAX_GZIP_MEMBERS = 1000
_RATIO_SLACK = 1 << 20


class DecompressedTooLarge(Refusal):
    """A body that inflates beyond the limit it was inflated with (``body_too_large``)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            ErrorCode.BODY_TOO_LARGE,
            f"the decompressed body is larger than {max_bytes} bytes",
            limit=max_bytes,
        )


def _too_large(max_bytes: int, what: str) -> Exception:
    if what == "decompressed":
        return DecompressedTooLarge(max_bytes)
    return Refusal(
        ErrorCode.BODY_TOO_LARGE,
        f"the {what} body is larger than {max_bytes} bytes",
        limit=max_bytes,
    )


def decompressed_limit(size: int, max_bytes: int, max_ratio: int) -> int:
    """The most a compressed body of ``size`` bytes may inflate to."""
    if max_ratio > 0:
        return min(max_bytes, max_ratio * size + _RATIO_SLACK)
    return max_bytes


async def read_body(
    stream: AsyncIterable[bytes],
    content_length: int | None,
    max_bytes: int,
    *,
    timeout: float | None = None,
) -> bytes:
    """The raw body, refused (413) once it exceeds ``max_bytes``.

    With ``timeout``, a client that has not sent the whole body within that many seconds
    gets a 408: a slow sender cannot hold a worker's connection slot forever.
    """
    if content_length is not None and content_length > max_bytes:
        raise _too_large(max_bytes, "request")
    chunks: list[bytes] = []
    total = 0

    async def read() -> None:
        nonlocal total
        async for chunk in stream:
            total += len(chunk)
            if total > max_bytes:
                raise _too_large(max_bytes, "request")
            chunks.append(chunk)

    if timeout is None:
        await read()
    else:
        try:
            await asyncio.wait_for(read(), timeout)
        except TimeoutError:
            raise Refusal(
                ErrorCode.REQUEST_TIMEOUT,
                f"the request body was not received within {timeout:g} s",
                headers={"Connection": "close"},
            ) from None
    return b"".join(chunks)


def decode_content(
    body: bytes, content_encoding: str | None, max_bytes: int, *, max_ratio: int = 0
) -> bytes:
    """Undo ``Content-Encoding`` (possibly several, applied in order) within ``max_bytes``.

    With ``max_ratio``, the decompressed body may also be at most ``max_ratio`` times the
    compressed one (plus 1 MiB of slack for tiny bodies): a bomb stops as soon as it
    expands beyond what real event batches do.
    """
    if not content_encoding:
        return body
    max_bytes = decompressed_limit(len(body), max_bytes, max_ratio)
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, max_bytes, wbits=16 + zlib.MAX_WBITS, name="gzip")
        elif coding == "deflate":
            body = _inflate(body, max_bytes, wbits=zlib.MAX_WBITS, name="deflate")
        elif coding == "zstd":
            body = _unzstd(body, max_bytes)
        else:
            raise Refusal(
                ErrorCode.UNSUPPORTED_ENCODING,
                f"Content-Encoding {coding!r} is not supported; use gzip or zstd",
                supported=list(SUPPORTED_ENCODINGS),
            )
    return body


def _inflate(data: bytes, max_bytes: int, *, wbits: int, name: str) -> bytes:
    """Inflate gzip (possibly several members) or deflate, at most ``max_bytes`` of output.

    Input is fed in bounded chunks, so the work stays linear in the body size even for a
    body made of thousands of tiny gzip members.
    """
    view = memoryview(data)
    out = bytearray()
    members, pos = 0, 0
    inflater = zlib.decompressobj(wbits)
    fed = False  # whether the current member has begun
    pending = b""  # input not consumed yet
    try:
        while pending or pos < len(view):
            if not pending:
                pending = bytes(view[pos : pos + _READ_CHUNK])
                pos += len(pending)
            fed = True
            out += inflater.decompress(pending, max_bytes + 1 - len(out))
            pending = inflater.unconsumed_tail
            if len(out) > max_bytes:
                raise _too_large(max_bytes, "decompressed")
            if inflater.eof:
                members += 1
                pending = inflater.unused_data
                more = bool(pending) or pos < len(view)
                if more and name != "gzip":
                    raise Refusal(
                        ErrorCode.INVALID_ENCODING, f"data after the end of the {name} stream"
                    )
                if more and members >= _MAX_GZIP_MEMBERS:
                    raise Refusal(
                        ErrorCode.INVALID_ENCODING, f"more than {_MAX_GZIP_MEMBERS} gzip members"
                    )
                inflater, fed = zlib.decompressobj(wbits), False
    except zlib.error as ex:
        raise Refusal(ErrorCode.INVALID_ENCODING, f"the body is not valid {name}: {ex}") from ex
    if members == 0 or fed:
        raise Refusal(ErrorCode.INVALID_ENCODING, f"the {name} body is truncated")
    return bytes(out)


def _unzstd(data: bytes, max_bytes: int) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    out = bytearray()
    try:
        while chunk := reader.read(min(_READ_CHUNK, max_bytes + 1 - len(out))):
            out += chunk
            if len(out) > max_bytes:
                raise _too_large(max_bytes, "decompressed")
    except zstandard.ZstdError as ex:
        raise Refusal(ErrorCode.INVALID_ENCODING, f"the body is not valid zstd: {ex}") from ex
    return bytes(out)
