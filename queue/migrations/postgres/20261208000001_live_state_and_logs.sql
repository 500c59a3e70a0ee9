-- What workers report about running jobs, shared by every composer: the
-- phase and progress of each job (one row, replaced), its log lines in
-- chunks (bounded per job: the oldest go first), and, once it ended, its
-- whole log compressed. All of it goes with its job.
CREATE TABLE job_live (
    job_id     UUID PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    compose_id UUID,
    phase      JSONB,
    progress   JSONB,
    -- Bytes of the chunks kept, lines dropped to stay bounded, next chunk.
    log_bytes  BIGINT NOT NULL DEFAULT 0,
    dropped    BIGINT NOT NULL DEFAULT 0,
    next_chunk BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE job_log_chunks (
    job_id UUID NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    chunk  BIGINT NOT NULL,
    lines  JSONB NOT NULL,
    n      BIGINT NOT NULL,
    bytes  BIGINT NOT NULL,
    PRIMARY KEY (job_id, chunk)
);

CREATE TABLE job_logs (
    job_id  UUID PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    -- zstd of the lines, each ending in a newline.
    body    BYTEA NOT NULL,
    lines   BIGINT NOT NULL,
    dropped BIGINT NOT NULL
);
