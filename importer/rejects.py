"""The reject file: every refused row with its line number and reason (CSV)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO

COLUMNS = ["file", "line", "code", "field", "message", "event_id"]


def default_path(first_input: str) -> str:
    """``<input>.rejects.csv`` beside the (first) input; ``rejects.csv`` for standard input."""
    if first_input == "-":
        return "rejects.csv"
    path = Path(first_input)
    base = path if path.is_dir() else path.with_name(path.name)
    return str(base) + ".rejects.csv"


class RejectWriter:
    """Writes refused rows; the file is created only when there is something to write."""

    def __init__(self, path: str | None, first_input: str) -> None:
        self.path = path or default_path(first_input)
        self._file: IO[str] | None = None
        self._writer: csv.DictWriter[str] | None = None
        self.count = 0

    def write(
        self, source: str, refused: list[tuple[int, str | None, str, str, str | None]]
    ) -> None:
        if not refused:
            return
        if self._file is None:
            self._file = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115
            self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS)
            self._writer.writeheader()
        writer = self._writer
        if writer is None:
            raise RuntimeError("reject file not open")
        for line, field, code, message, event_id in refused:
            writer.writerow(
                {
                    "file": source,
                    "line": line,
                    "code": code,
                    "field": field or "",
                    "message": message,
                    "event_id": event_id or "",
                }
            )
        self.count += len(refused)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
