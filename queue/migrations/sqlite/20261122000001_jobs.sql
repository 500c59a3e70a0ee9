-- kiln job queue schema (SQLite). Times are microseconds since the Unix epoch.
CREATE TABLE composes (
    id          TEXT PRIMARY KEY,
    channel     TEXT NOT NULL,
    request     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX composes_channel_created ON composes (channel, created_at DESC);

CREATE TABLE jobs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    compose_id   TEXT REFERENCES composes (id) ON DELETE CASCADE,
    job_type     TEXT NOT NULL,
    arch         TEXT NOT NULL,
    channel      TEXT NOT NULL,
    args         TEXT NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    state        TEXT NOT NULL CHECK (state IN ('waiting', 'queued', 'running', 'success', 'failed', 'canceled')),
    pending_deps INTEGER NOT NULL DEFAULT 0,
    result       TEXT,
    reason       TEXT,
    token        TEXT UNIQUE,
    worker       TEXT,
    retries      INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    queued_at    INTEGER,
    started_at   INTEGER,
    heartbeat_at INTEGER,
    finished_at  INTEGER
);
CREATE INDEX jobs_ready ON jobs (priority DESC, seq) WHERE state = 'queued';
CREATE INDEX jobs_running ON jobs (heartbeat_at) WHERE state = 'running';
CREATE INDEX jobs_compose ON jobs (compose_id);

CREATE TABLE job_deps (
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    depends_on TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (job_id, depends_on)
);
CREATE INDEX job_deps_depends_on ON job_deps (depends_on);
