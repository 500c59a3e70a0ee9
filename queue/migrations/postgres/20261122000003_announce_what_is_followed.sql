-- NOTIFY serialises the commits of notifying transactions, so every
-- announcement costs throughput under concurrency. Announce what someone
-- follows: a job becoming ready (waiting dequeuers) and any change of a
-- compose's job (status streams). Lone jobs' other changes go unannounced.
DROP TRIGGER jobs_notify_insert ON jobs;
DROP TRIGGER jobs_notify_update ON jobs;
CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs
    FOR EACH ROW WHEN (NEW.state = 'queued' OR NEW.compose_id IS NOT NULL)
    EXECUTE FUNCTION kiln_job_notify();
CREATE TRIGGER jobs_notify_update AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND (NEW.state = 'queued' OR NEW.compose_id IS NOT NULL))
    EXECUTE FUNCTION kiln_job_notify();
