-- kiln job queue schema (PostgreSQL).
CREATE TABLE composes (
    id          UUID PRIMARY KEY,
    channel     TEXT NOT NULL,
    request     JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX composes_channel_created ON composes (channel, created_at DESC);

CREATE TABLE jobs (
    seq          BIGSERIAL UNIQUE,
    id           UUID PRIMARY KEY,
    compose_id   UUID REFERENCES composes (id) ON DELETE CASCADE,
    job_type     TEXT NOT NULL,
    arch         TEXT NOT NULL,
    channel      TEXT NOT NULL,
    args         JSONB NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    state        TEXT NOT NULL CHECK (state IN ('waiting', 'queued', 'running', 'success', 'failed', 'canceled')),
    pending_deps INTEGER NOT NULL DEFAULT 0,
    result       JSONB,
    reason       TEXT,
    token        UUID UNIQUE,
    worker       TEXT,
    retries      INTEGER NOT NULL DEFAULT 0,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    queued_at    TIMESTAMPTZ,
    started_at   TIMESTAMPTZ,
    heartbeat_at TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ
);
CREATE INDEX jobs_ready ON jobs (priority DESC, seq) WHERE state = 'queued';
CREATE INDEX jobs_running ON jobs (heartbeat_at) WHERE state = 'running';
CREATE INDEX jobs_compose ON jobs (compose_id);
CREATE INDEX jobs_lone_finished ON jobs (finished_at) WHERE compose_id IS NULL;

CREATE TABLE job_deps (
    job_id     UUID NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    depends_on UUID NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (job_id, depends_on)
);
CREATE INDEX job_deps_depends_on ON job_deps (depends_on);

-- Every state change is announced on channel kiln_jobs: waiting dequeuers wake
-- on 'queued', and status streams follow the rest. NOTIFY is transactional, so
-- nobody hears of a change that was rolled back.
CREATE FUNCTION kiln_job_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kiln_jobs', json_build_object(
        'job', NEW.id, 'compose', NEW.compose_id, 'state', NEW.state,
        'job_type', NEW.job_type, 'arch', NEW.arch, 'channel', NEW.channel)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION kiln_job_notify();
CREATE TRIGGER jobs_notify_update AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION kiln_job_notify();
