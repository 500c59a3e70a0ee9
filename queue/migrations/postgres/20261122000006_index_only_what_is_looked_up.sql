-- Every state change of a job writes a new row version with an entry in
-- every index (the state is in index predicates, so no update is HOT). A
-- token exists only while a job is leased, and lone jobs have no compose:
-- index only the rows that have one, and a job's three writes (enqueue,
-- dequeue, finish) make six index entries instead of eleven.
ALTER TABLE jobs DROP CONSTRAINT jobs_token_key;
CREATE UNIQUE INDEX jobs_token ON jobs (token) WHERE token IS NOT NULL;
DROP INDEX jobs_compose;
CREATE INDEX jobs_compose ON jobs (compose_id) WHERE compose_id IS NOT NULL;
