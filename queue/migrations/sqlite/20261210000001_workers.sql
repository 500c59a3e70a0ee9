-- The workers every composer of a fleet has heard from: one row a worker
-- (the name its certificate proves), its last request's time (unix
-- microseconds) and what it last asked jobs for (channels: a JSON array of
-- strings, empty for any).
CREATE TABLE workers (
    name       TEXT PRIMARY KEY,
    arch       TEXT NOT NULL DEFAULT '',
    channels   TEXT NOT NULL DEFAULT '[]',
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
CREATE INDEX workers_last_seen ON workers (last_seen);
CREATE INDEX jobs_running_worker ON jobs (worker) WHERE state = 'running';
