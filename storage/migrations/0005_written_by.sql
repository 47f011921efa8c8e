-- Which transaction wrote each hot row (its 64-bit id, pg_current_xact_id()), so a reader that
-- keeps hot rows column-wise in memory (analytics/hot_mirror.py) can fetch just the rows a
-- newer snapshot sees and its older one did not: written_by >= the old snapshot's xmin and not
-- visible in it. Rows stored before this migration have NULL: visible to every snapshot since.
-- A column default is evaluated by COPY for every row; pg_current_xact_id() is stable, so
-- COPY keeps inserting in batches. Rows moved between partitions keep their value.
ALTER TABLE events ADD COLUMN written_by bigint;
ALTER TABLE events ALTER COLUMN written_by SET DEFAULT (pg_current_xact_id()::text::bigint);
-- Hot rows are appended in commit order, so block ranges hold narrow ranges of written_by and
-- a BRIN index finds the newest rows for the cost of a few index pages; maintaining it costs
-- the write path next to nothing (new pages stay unsummarized until VACUUM summarizes them,
-- and unsummarized ranges are always read).
CREATE INDEX events_written_by_brin ON events USING brin (written_by) WITH (autosummarize = on);
