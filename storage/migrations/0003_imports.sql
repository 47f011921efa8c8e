-- Bulk imports (import_events): every committed chunk, written in the transaction that
-- stores its events, so an interrupted import can resume after its last committed chunk.
CREATE TABLE import_chunks (
    source      text        NOT NULL,  -- fingerprint of the input (size + content hashes)
    chunk       integer     NOT NULL,
    resume_at   bigint      NOT NULL,  -- byte offset (CSV, NDJSON) or batch number (Parquet) after it
    records     bigint      NOT NULL,  -- records read, refused ones included
    next_line   bigint      NOT NULL,  -- line number of the first record after the chunk
    imported    bigint      NOT NULL,
    duplicates  bigint      NOT NULL,
    rejected    bigint      NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, chunk)
);
