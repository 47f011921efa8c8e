-- The read side: rollups of the hot data, and the manifest of the Parquet lake.

-- Users active per UTC day, maintained in the transaction that stores their events. Daily
-- unique users and retention over hot days read this (about one row per active user and
-- day) instead of scanning events.
CREATE TABLE daily_users (
    day     date NOT NULL,
    user_id text NOT NULL,
    PRIMARY KEY (day, user_id)
);

-- How many rows each micro-batch added to daily_users, per day: summed when read, this is
-- the number of active users of a hot day without counting daily_users itself.
CREATE TABLE daily_user_counts (
    day   date   NOT NULL,
    users bigint NOT NULL
);
CREATE INDEX daily_user_counts_day_idx ON daily_user_counts (day);

-- Event counts per UTC day and type: one row per (micro-batch, day, type), summed when read.
-- Insert-only, so concurrent writers never wait on each other's counter rows.
CREATE TABLE daily_event_counts (
    day        date   NOT NULL,
    event_type text   NOT NULL,
    events     bigint NOT NULL
);
CREATE INDEX daily_event_counts_day_idx ON daily_event_counts (day);

-- Every Parquet file of the lake, recorded in the transaction that drops the hot rows it
-- holds: readers take the file list and the hot rows from one snapshot, so an event is
-- counted once whether it is hot, cold, or being moved. A file on disk that is not listed
-- here is the leftover of an interrupted compaction and is deleted by the next run.
CREATE TABLE lake_files (
    path       text        PRIMARY KEY,  -- relative to EVENTS_LAKE_DIR
    day        date        NOT NULL,
    rows       bigint      NOT NULL,
    bytes      bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lake_files_day_idx ON lake_files (day);

-- Rollups for the rows already stored before this migration.
INSERT INTO daily_users (day, user_id)
SELECT DISTINCT (occurred_at AT TIME ZONE 'UTC')::date, user_id FROM events;
INSERT INTO daily_user_counts (day, users)
SELECT day, count(*) FROM daily_users GROUP BY day;
INSERT INTO daily_event_counts (day, event_type, events)
SELECT (occurred_at AT TIME ZONE 'UTC')::date, event_type, count(*) FROM events GROUP BY 1, 2;
