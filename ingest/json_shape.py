"""How many events and JSON values a JSON or NDJSON body holds, counted before decoding it.

Decoding builds a Python object for every JSON value: a 32 MiB body of ``{},{},...`` is
eleven million dicts (over a gigabyte) before anything could count them. So the count comes
first, from the bytes:

- ``events``: elements of the top-level array (or members of the array inside the
  top-level object, for ``{"events": [...]}``), or non-blank NDJSON lines;
- ``values``: ``{``, ``[`` and ``,`` outside strings, one per object, array and separated
  value: an upper bound on the containers and values decoding will build, so it bounds the
  memory of decoding.

PERF: most bodies are settled by ``bytes.count`` alone (a few GB/s), because the same
characters counted *anywhere*, inside strings too, are an upper bound of both figures. Only
a body whose upper bound exceeds a limit is scanned exactly: NumPy over the structural
characters (quotes, backslashes, brackets, commas), a few MiB at a time, with the string
state (inside a string, escaped by a backslash run) carried from one block to the next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_BLOCK = 256 << 10  # bytes scanned at once (the scanner's own memory is a few MiB)

_QUOTE, _BACKSLASH, _NEWLINE, _COMMA = ord('"'), ord("\\"), ord("\n"), ord(",")

# A line from its first non-blank character (blank lines, as bytes.strip() sees them, are
# skipped). PERF: it starts with a single character class, so a long blank run costs O(n).
_NON_BLANK_LINE = re.compile(rb"\S[^\n]*")


@dataclass(frozen=True, slots=True)
class Shape:
    """What a body holds. Figures within the limits they were checked against are upper
    bounds (exact when ``exact``); a figure beyond its limit may stop short of the total."""

    events: int
    values: int
    exact: bool


def upper_bound(body: bytes) -> Shape:
    """Both figures bounded from above by counting characters anywhere (strings included)."""
    commas = body.count(b",")
    return Shape(
        events=commas + 1,
        values=commas + body.count(b"{") + body.count(b"["),
        exact=False,
    )


def json_shape(body: bytes, *, max_events: int, max_values: int) -> Shape:
    """The shape of a JSON body, scanned exactly only when the upper bound exceeds a limit."""
    bound = upper_bound(body)
    if bound.events <= max_events and bound.values <= max_values:
        return bound
    return scan_json(body, max_events=max_events, max_values=max_values)


def scan_json(body: bytes, *, max_events: int = -1, max_values: int = -1) -> Shape:
    """Exact counts for a JSON body (for malformed JSON, whatever the characters say).

    ``events`` is the number of separators of the events container plus one: exact for any
    container holding at least one element (an empty one counts as one). With limits (-1:
    none) the scan stops once a figure exceeds its limit.
    """
    stripped = body.lstrip()
    # Elements of a top-level array are separated by commas at depth 1; the events of
    # {"events": [...]} by commas at depth 2 (other members' commas at that depth count too:
    # still a bound, and exact for the usual body).
    depth = 2 if stripped[:1] == b"{" else 1
    scanner = _Scanner(lines=False, events_depth=depth)
    for offset in range(0, len(body), _BLOCK):
        scanner.feed(body, offset, min(len(body), offset + _BLOCK))
        if 0 <= max_events < scanner.commas_at_depth + 1 or 0 <= max_values < scanner.values:
            break  # enough to refuse it
    return Shape(events=scanner.commas_at_depth + 1, values=scanner.values, exact=True)


def ndjson_lines(body: bytes, *, max_events: int) -> list[tuple[int, bytes]] | None:
    """The non-blank lines of an NDJSON body with their line numbers (1-based), or None
    as soon as there are more than ``max_events`` of them.

    PERF: with at most ``max_events`` newlines a plain split is exact; otherwise the lines
    are found one by one and the search stops at the first line too many, so a body of
    millions of lines costs no more than ``max_events`` of them.
    """
    if body.count(b"\n") < max_events:
        return [(n, line) for n, line in enumerate(body.split(b"\n"), 1) if line.strip()]
    found: list[tuple[int, bytes]] = []
    line_no, pos = 1, 0
    for match in _NON_BLANK_LINE.finditer(body):
        if len(found) == max_events:
            return None
        line_no += body.count(b"\n", pos, match.start())
        pos = match.start()
        found.append((line_no, match.group()))
    return found


def ndjson_values(body: bytes, *, max_values: int) -> int:
    """JSON values in an NDJSON body: an upper bound, exact when the cheap bound exceeds
    ``max_values``, and short of the total once beyond it (-1: scan it all).

    A newline always ends a JSON text in NDJSON, so the string state restarts at each line:
    one malformed line cannot hide the values of the lines after it.
    """
    bound = upper_bound(body).values
    if bound <= max_values:
        return bound
    scanner = _Scanner(lines=True, events_depth=1)
    for offset in range(0, len(body), _BLOCK):
        scanner.feed(body, offset, min(len(body), offset + _BLOCK))
        if 0 <= max_values < scanner.values:
            break
    return scanner.values


class _Scanner:
    """The exact count, one block at a time, carrying the string state between blocks."""

    def __init__(self, *, lines: bool, events_depth: int) -> None:
        self.lines = lines
        self.events_depth = events_depth
        self.values = 0
        self.commas_at_depth = 0
        self._in_string = 0  # 1 when the previous block ended inside a string
        self._depth = 0
        self._run_start: int | None = None  # start of a backslash run going on, relative
        # to the current block (negative)
        self._escape_next = False  # the previous block ended with an escaping backslash

    def feed(self, body: bytes, start: int, end: int) -> None:
        # PERF: bytes.translate maps every byte through a table at memory speed; NumPy's
        # fancy indexing by a uint8 array would first widen every index to 64 bits.
        mask = np.frombuffer(body[start:end].translate(_STRUCTURAL_TABLE), dtype=np.bool_)
        local = np.flatnonzero(mask)
        if len(local) == 0:
            self._run_start, self._escape_next = None, False
            return
        block = np.frombuffer(body, dtype=np.uint8, count=end - start, offset=start)
        chars = block[local]
        escaped = self._escapes(chars, local, end - start)
        quote = chars == _QUOTE
        if escaped is not None:
            quote &= ~escaped
        toggles = np.cumsum(quote, dtype=np.int32)
        if self.lines:
            # Each line starts outside any string: count toggles since the last newline.
            newline = chars == _NEWLINE
            at_newline = np.maximum.accumulate(np.where(newline, toggles, 0))
            carried = np.where(np.cumsum(newline, dtype=np.int32) > 0, 0, self._in_string)
            inside = ((toggles - at_newline + carried) & 1).astype(bool) & ~newline
        else:
            inside = ((toggles + self._in_string) & 1).astype(bool)
        # ``inside`` is the state after each character: an opening quote is inside, a
        # closing one is not; brackets and commas count only outside strings.
        outside = ~inside & ~quote
        if escaped is not None:
            outside &= ~escaped  # what a backslash escapes is never structure
        opens = ((chars == _OPEN_BRACE) | (chars == _OPEN_BRACKET)) & outside
        commas = (chars == _COMMA) & outside
        self.values += int(np.count_nonzero(opens)) + int(np.count_nonzero(commas))
        if not self.lines:
            closes = ((chars == _CLOSE_BRACE) | (chars == _CLOSE_BRACKET)) & outside
            delta = opens.view(np.int8) - closes.view(np.int8)
            depth_after = np.cumsum(delta, dtype=np.int64) + self._depth
            at_depth = (depth_after - delta) == self.events_depth
            self.commas_at_depth += int(np.count_nonzero(commas & at_depth))
            self._depth = int(depth_after[-1])
        self._in_string = int(inside[-1])

    def _escapes(self, chars: np.ndarray, local: np.ndarray, size: int) -> np.ndarray | None:
        """Which structural characters a backslash escapes (None: none), and the carried
        state for the next block. A run of backslashes escapes the character right after
        it when the run is odd. PERF: works on the backslashes only, which are few."""
        slashes = np.flatnonzero(chars == _BACKSLASH)
        carried = self._run_start is not None and local[0] == 0  # a run goes on from the last block
        if len(slashes) == 0:
            escaped_first = carried and self._escape_next
            self._run_start, self._escape_next = None, False
            if not escaped_first:
                return None
            escaped = np.zeros(len(chars), dtype=bool)
            escaped[0] = True
            return escaped
        at = local[slashes]  # positions in the block
        continues = np.empty(len(at), dtype=bool)
        continues[0] = carried and slashes[0] == 0
        continues[1:] = np.diff(at) == 1
        begun_at = np.maximum.accumulate(np.where(continues, -(1 << 62), at))
        if continues[0] and self._run_start is not None:
            # The leading run began in an earlier block, at a negative position here.
            begun_at = np.where(begun_at == -(1 << 62), self._run_start, begun_at)
        escaping = (at - begun_at) % 2 == 0
        escaped = np.zeros(len(chars), dtype=bool)
        following = slashes[escaping] + 1  # the structural character after each
        following = following[following < len(chars)]
        following = following[local[following] == local[following - 1] + 1]
        escaped[following] = True
        if carried and self._escape_next:
            escaped[0] = True
        if slashes[-1] == len(chars) - 1 and at[-1] == size - 1:
            # The block ends inside a backslash run: the next block goes on with it, its
            # start written relative to that block.
            self._run_start = int(begun_at[-1]) - size
            self._escape_next = bool(escaping[-1])
        else:
            self._run_start, self._escape_next = None, False
        return escaped


_STRUCTURAL_TABLE = bytes(1 if c in b'"\\{}[],\n' else 0 for c in range(256))
_OPEN_BRACE, _CLOSE_BRACE = ord("{"), ord("}")
_OPEN_BRACKET, _CLOSE_BRACKET = ord("["), ord("]")
