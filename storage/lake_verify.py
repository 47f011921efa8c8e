"""``events lake verify``: is every published lake file still the file that was published?

It compares the lake directory with ``lake_files`` and reports, one per file:

- ``missing``: recorded, but not on disk;
- ``changed``: on disk, but its size or SHA-256 differs from the recorded one;
- ``unreadable``: on disk, but it cannot be opened or read (permissions, I/O error);
- ``unrecorded``: a ``.parquet`` file under ``<lake>/events`` that ``lake_files`` does not
  list. Writers put a file on disk before they record it, so a compaction or an import in
  progress shows its new files here until it commits (a ``.tmp-*`` name while writing, then
  the final name); so does the leftover of an interrupted one, until the next writer of that
  day removes it. Running again tells the two apart.

Files recorded before migration 0004 have no checksum: their published bytes are unknown, so
only their size is checked and they are counted as "size only", never as a problem.

The directory is listed before ``lake_files`` is read: a file published in between is then
found in ``lake_files``, not reported as unrecorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.db import connect
from storage.lake import Lake, file_sha256


@dataclass(frozen=True, slots=True)
class Recorded:
    """One row of ``lake_files``: path relative to the lake root, size, SHA-256 (or None)."""

    path: str
    bytes: int
    sha256: str | None


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # missing | changed | unreadable | unrecorded
    path: str  # absolute
    detail: str = ""


@dataclass(slots=True)
class Report:
    root: str
    recorded: int = 0
    intact: int = 0
    size_only: list[str] = field(default_factory=list)  # intact, but no checksum to compare
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def count(self, kind: str) -> int:
        return sum(1 for p in self.problems if p.kind == kind)

    def as_dict(self) -> dict[str, Any]:
        return {
            "lake": self.root,
            "ok": self.ok,
            "recorded": self.recorded,
            "intact": self.intact,
            "size_only": self.size_only,
            "problems": [
                {"kind": p.kind, "path": p.path, "detail": p.detail} for p in self.problems
            ],
        }

    def summary(self) -> str:
        text = (
            f"lake {self.root}: {self.recorded} recorded file(s), {self.intact} intact"
            f" ({len(self.size_only)} of them size only: recorded without a checksum), "
            f"{self.count('missing')} missing, {self.count('changed')} changed, "
            f"{self.count('unreadable')} unreadable; {self.count('unrecorded')} unrecorded file(s)"
        )
        if self.count("unrecorded"):
            text += (
                "\nan unrecorded file may belong to a compaction or import still running "
                "(it records its files when it commits): run again to tell it from a leftover"
            )
        return text


def parquet_files(lake: Lake) -> list[Path]:
    """Every ``.parquet`` file under ``<lake>/events``, temporary ones included."""
    events = lake.root / "events"
    return sorted(p for p in events.rglob("*.parquet") if p.is_file()) if events.is_dir() else []


async def recorded_files(database_url: str) -> list[Recorded]:
    conn = await connect(database_url)
    try:
        rows = await conn.fetch("SELECT path, bytes, sha256 FROM lake_files ORDER BY path")
    finally:
        await conn.close()
    return [Recorded(r["path"], r["bytes"], r["sha256"]) for r in rows]


def check(lake: Lake, recorded: Sequence[Recorded], on_disk: Sequence[Path]) -> Report:
    """Compare the listed files (``on_disk``, taken first) with the recorded ones."""
    report = Report(str(lake.root), recorded=len(recorded))
    for r in recorded:
        path = lake.absolute(r.path)
        try:
            size = path.stat().st_size
            if size != r.bytes:
                report.problems.append(
                    Problem("changed", str(path), f"{size} bytes, {r.bytes} recorded")
                )
                continue
            if r.sha256 is None:
                report.size_only.append(str(path))
            elif file_sha256(path) != r.sha256:
                report.problems.append(
                    Problem("changed", str(path), "SHA-256 differs from the recorded one")
                )
                continue
        except FileNotFoundError:
            report.problems.append(Problem("missing", str(path)))
            continue
        except OSError as ex:
            report.problems.append(Problem("unreadable", str(path), ex.strerror or str(ex)))
            continue
        report.intact += 1
    listed = {r.path for r in recorded}
    for path in on_disk:
        # Still there? The next writer of its day may have removed a leftover meanwhile.
        if lake.relative(path) not in listed and path.exists():
            report.problems.append(Problem("unrecorded", str(path)))
    return report


async def verify_lake(database_url: str, lake: Lake) -> Report:
    on_disk = parquet_files(lake)  # before reading lake_files: see the module's docstring
    recorded = await recorded_files(database_url)
    return await asyncio.to_thread(check, lake, recorded, on_disk)  # hashes every file
