-- The table contract. Read docs/architecture.md ("Table contract") before changing it.

-- Every event_id ever stored, for all time. This ledger, not the partitioned table, is what
-- makes event_id unique: a partitioned table's unique keys must include the partition key
-- (occurred_at), which would let a resend with another occurred_at in twice, and the ledger
-- outlives the partitions that a compactor later moves to the Parquet lake.
CREATE TABLE event_ids (
    event_id uuid PRIMARY KEY
);

CREATE TABLE events (
    event_id    uuid        NOT NULL,
    occurred_at timestamptz NOT NULL,
    user_id     text        NOT NULL,
    event_type  text        NOT NULL,
    properties  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    received_at timestamptz NOT NULL,
    batch_id    uuid        NOT NULL
) PARTITION BY RANGE (occurred_at);

-- Rows whose day has no partition yet land here rather than fail; creating that day's
-- partition later moves them (events_ensure_partitions).
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- Access paths of the analytics queries into raw hot rows, one set per daily partition,
-- built once its UTC day is over (storage/partitions.py), not declared here:
--   event_type segments                                  -> (event_type, occurred_at)
--   property segments (properties @> '{"country": "UA"}') -> GIN jsonb_path_ops
-- Maintaining them row by row costs the write path about a third; building them in one pass
-- is far cheaper, and only today's partition (about a seventh of the hot rows) is then read
-- without them. Unsegmented daily users, retention and counts per type read the rollups of
-- migration 0002 (daily_users, daily_event_counts) instead of raw rows.

-- One row per accepted request (= queue message), written in the transaction that stores
-- its events: what `?wait=true` waits for, and an audit of who sent what.
CREATE TABLE ingest_batches (
    batch_id     uuid        PRIMARY KEY,
    key_id       text        NOT NULL,
    received_at  timestamptz NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    events       integer     NOT NULL,
    inserted     integer     NOT NULL,
    duplicates   integer     NOT NULL
);

-- Create the daily partitions (UTC days) that are missing among `days`. Serialised by a
-- lock on the default partition; rows that already sit in the default partition for a new
-- day are moved into it in the same transaction. Returns how many partitions it created.
-- lock_timeout: attaching waits for queries reading the default partition; rather than stall
-- ingestion behind a long analytics query, give up (SQLSTATE 55P03) and let the writer retry.
CREATE FUNCTION events_ensure_partitions(days date[]) RETURNS integer
LANGUAGE plpgsql
SET timezone = 'UTC'
SET lock_timeout = '10s'
AS $$
DECLARE
    d       date;
    part    text;
    lo      timestamptz;
    hi      timestamptz;
    created integer := 0;
    locked  boolean := false;
BEGIN
    FOREACH d IN ARRAY days LOOP
        part := 'events_p' || to_char(d, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(quote_ident(part)) IS NOT NULL;
        IF NOT locked THEN
            -- Self-conflicting but compatible with INSERT/SELECT: one creator at a time.
            -- Taking a relation lock also refreshes the catalog view for the re-check below.
            LOCK TABLE events_default IN SHARE UPDATE EXCLUSIVE MODE;
            locked := true;
            CONTINUE WHEN to_regclass(quote_ident(part)) IS NOT NULL;
        END IF;
        lo := d::timestamp AT TIME ZONE 'UTC';
        hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
        EXECUTE format('CREATE TABLE %I (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       part);
        EXECUTE format(
            'WITH moved AS (DELETE FROM events_default WHERE occurred_at >= $1 AND occurred_at < $2 '
            'RETURNING *) INSERT INTO %I SELECT * FROM moved', part)
            USING lo, hi;
        EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       part, lo, hi);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;
