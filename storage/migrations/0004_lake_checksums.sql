-- The SHA-256 of every lake file (hex), recorded with its size (`bytes`) by whoever publishes
-- it (the compactor, the importer), so `events lake verify` can tell the published file from
-- one that was changed or replaced since. Files recorded before this migration have NULL:
-- their published bytes are unknown, and a checksum taken now would vouch for whatever is on
-- disk today, so verify checks only their size and counts them as "size only".
ALTER TABLE lake_files ADD COLUMN sha256 text CHECK (sha256 ~ '^[0-9a-f]{64}$');
