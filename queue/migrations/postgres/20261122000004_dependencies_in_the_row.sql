-- A job's dependencies never change after it is created: keep them in its
-- row, so reading a job (every dequeue and finish returns one) needs no
-- subquery. job_deps stays for the other direction (a job's dependants).
ALTER TABLE jobs ADD COLUMN deps UUID[] NOT NULL DEFAULT '{}';
UPDATE jobs j SET deps = ARRAY(SELECT d.depends_on FROM job_deps d WHERE d.job_id = j.id ORDER BY d.depends_on)
    WHERE EXISTS (SELECT 1 FROM job_deps d WHERE d.job_id = j.id);
