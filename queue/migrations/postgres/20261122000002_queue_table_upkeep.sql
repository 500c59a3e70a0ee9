-- A queue table takes several updates per job, and none of them can be HOT
-- (the state is in index predicates), so dead index entries pile up at the
-- head of the ready index and dequeue slows down until autovacuum runs.
-- Vacuum this table early and without throttling, and keep only the indexes
-- that reads use.
ALTER TABLE jobs DROP CONSTRAINT jobs_seq_key;
DROP INDEX jobs_lone_finished;
ALTER TABLE jobs SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.05
);
ALTER TABLE job_deps SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0);
