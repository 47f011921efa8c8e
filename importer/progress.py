"""Progress of an import: a bar on a terminal (tqdm), a plain line every few seconds otherwise."""

from __future__ import annotations

import os
import time
from typing import IO, Any

from tqdm import tqdm

_EVERY = 5.0  # seconds between plain progress lines


class Progress:
    def __init__(self, out: IO[str], *, enabled: bool | None = None) -> None:
        """``enabled``: None for a bar on a terminal and lines otherwise, False for silence."""
        self._out = out
        self._off = enabled is False
        self._tty = out.isatty() if enabled is None else enabled
        self._bar: tqdm[Any] | None = None
        self._started = time.monotonic()
        self._last = 0.0
        self._size: int | None = None
        self._name = ""

    def start_file(self, path: str, size: int | None, position: int) -> None:
        self._name = os.path.basename(path) if path != "-" else "stdin"
        self._size = size
        if self._bar is not None:
            self._bar.close()
        if self._tty:
            self._bar = tqdm(
                total=size,
                initial=position,
                unit="B",
                unit_scale=True,
                desc=self._name,
                file=self._out,
                dynamic_ncols=True,
            )

    def advance(self, position: int | None, summary: Any) -> None:
        if self._off:
            return
        elapsed = time.monotonic() - self._started
        rate = summary.read / elapsed if elapsed else 0.0
        if self._bar is not None:
            if position is not None:
                self._bar.update(position - self._bar.n)
            self._bar.set_postfix_str(f"{summary.read:,} rows, {rate:,.0f} rows/s", refresh=True)
            return
        now = time.monotonic()
        if now - self._last < _EVERY:
            return
        self._last = now
        share = ""
        if position is not None and self._size:
            fraction = position / self._size
            eta = elapsed * (1 - fraction) / fraction if fraction else 0.0
            share = f" {fraction:.0%}, ETA {eta:.0f} s,"
        print(
            f"import {self._name}:{share} {summary.read:,} rows read, "
            f"{summary.imported:,} imported ({rate:,.0f} rows/s)",
            file=self._out,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
