-- What workers report about running jobs (see the PostgreSQL migration of
-- the same name): phase and progress, bounded log chunks, sealed logs.
CREATE TABLE job_live (
    job_id     TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    compose_id TEXT,
    phase      TEXT,
    progress   TEXT,
    log_bytes  INTEGER NOT NULL DEFAULT 0,
    dropped    INTEGER NOT NULL DEFAULT 0,
    next_chunk INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);

CREATE TABLE job_log_chunks (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    chunk  INTEGER NOT NULL,
    lines  TEXT NOT NULL,
    n      INTEGER NOT NULL,
    bytes  INTEGER NOT NULL,
    PRIMARY KEY (job_id, chunk)
);

CREATE TABLE job_logs (
    job_id  TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    body    BLOB NOT NULL,
    lines   INTEGER NOT NULL,
    dropped INTEGER NOT NULL
);
