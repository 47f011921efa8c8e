"""The properties text ``import_events`` writes to the lake is PostgreSQL's ``jsonb`` text.

Analytics compares property values as text (DuckDB's ``json_extract_string``), and every
other lake file is written by the compactor from ``properties::text``. So a cold day's
imported row must carry exactly the text PostgreSQL prints for the same input, or one value
splits in two in segments and breakdowns. The expected text is asked of PostgreSQL itself
(``$1::jsonb::text``), never written down here: the test checks the importer against the
database, not against our idea of it.
"""

from __future__ import annotations

import csv
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pyarrow.parquet as pq
import pytest

from core.config import Settings
from importer.run import Options, run_import

# Sent as they are: the CSV path keeps a valid text as the client wrote it (it only parses it
# to check it), so each of these reaches the store unchanged.
TEXTS = {
    "key order": '{"b": 1, "a": 2, "c": {"z": 0, "y": 1}}',
    "key length first": '{"aa": 1, "b": 2, "ab": {"ba": 0, "c": 1}}',
    "duplicate keys": '{"a": 1, "b": 0, "a": 2}',
    "exponent": '{"x": 1e16, "y": 1E+2, "z": 2.5e-3}',
    "negative zero": '{"x": -0.0, "y": -0}',
    "scale": '{"price": 1.50, "qty": 10.000}',
    "beyond 64 bits": '{"n": 123456789012345678901234567890}',
    "escaped e-acute": '{"s": "caf\\u00e9"}',
    "raw e-acute": '{"s": "café"}',
    "escaped astral": '{"s": "\\ud83d\\ude00", "t": "\\u2028"}',
    "escapes kept": '{"q": "say \\"hi\\"\\n", "slash": "\\/", "tab": "\\t"}',
    "whitespace": '{ "a" :\t[ 1 ,2 ] ,\n "b" : { } }',
    "nested": '{"o": {"z": [1, {"b": true, "a": null}, [], "x"], "a": {"k": -0.0}}, "e": {}}',
    "empty": "{}",
}


@pytest.fixture
def lake_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.with_overrides(lake_dir=str(tmp_path / "lake"))


def write_csv(path: Path, rows: list[tuple[uuid.UUID, datetime, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        out.writerow(["event_id", "occurred_at", "user_id", "event_type", "properties_json"])
        for event_id, at, text in rows:
            out.writerow([str(event_id), at.isoformat(), "u1", "purchase", text])


def lake_texts(settings: Settings) -> dict[uuid.UUID, str]:
    """Each lake row's properties exactly as stored in its Parquet file (pyarrow, raw)."""
    found: dict[uuid.UUID, str] = {}
    for path in Path(settings.lake_dir).rglob("*.parquet"):
        table = pq.read_table(path, columns=["event_id", "properties"])
        ids = table.column("event_id").combine_chunks().storage.to_pylist()
        texts = table.column("properties").combine_chunks().storage.to_pylist()
        found.update({uuid.UUID(bytes=i): t for i, t in zip(ids, texts, strict=True)})
    return found


def tagged(text: str, i: int) -> str:
    """``text`` (an object) with a first key ``"i": i``, the rest as written."""
    inner = text.strip()[1:-1].strip()
    return f'{{"i": {i}' + (f", {inner}" if inner else "") + "}"


async def jsonb_text(db: asyncpg.Connection, text: str) -> str:
    value: str = await db.fetchval("SELECT $1::jsonb::text", text)
    return value


async def test_the_lake_holds_postgresql_jsonb_text(
    lake_settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    day = datetime(2025, 3, 5, 10, tzinfo=UTC)  # long before the hot window: the lake
    ids = {name: uuid.uuid4() for name in TEXTS}
    path = tmp_path / "in.csv"
    write_csv(path, [(ids[name], day, text) for name, text in TEXTS.items()])
    summary = await run_import(lake_settings, [str(path)], Options(progress=False))
    assert (summary.imported, summary.rejected) == (len(TEXTS), 0)
    assert await db.fetchval("SELECT count(*) FROM events") == 0
    stored = lake_texts(lake_settings)
    for name, text in TEXTS.items():
        assert stored[ids[name]] == await jsonb_text(db, text), name
    # The two spellings of é are one text, as they are one value.
    assert stored[ids["escaped e-acute"]] == stored[ids["raw e-acute"]]


async def test_each_row_keeps_its_own_text_across_chunks_duplicates_and_hot_rows(
    lake_settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Alignment: cold rows interleaved with hot ones, several chunks, and a second import
    whose already-stored ids make the speculative lake files be written again."""
    now = datetime.now(UTC).replace(microsecond=0)
    texts = list(TEXTS.values())
    rows = [
        # every fourth row is hot; each text is made unique by its "i"
        (
            uuid.uuid4(),
            now - timedelta(days=(i % 4) * 20, hours=1),
            tagged(texts[i % len(texts)], i),
        )
        for i in range(600)
    ]
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    write_csv(first, rows[::3])
    write_csv(second, rows)
    small = Options(progress=False, chunk_rows=150)
    assert (await run_import(lake_settings, [str(first)], small)).imported == 200
    again = await run_import(lake_settings, [str(second)], small)
    assert (again.imported, again.duplicates) == (400, 200)

    stored = lake_texts(lake_settings)
    hot = {
        r["event_id"]: r["p"]
        for r in await db.fetch("SELECT event_id, properties::text p FROM events")
    }
    assert len(stored) == 450 and len(hot) == 150
    for event_id, _, text in rows:
        assert (stored.get(event_id) or hot[event_id]) == await jsonb_text(db, text), text
