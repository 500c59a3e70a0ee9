-- The request id of the API call that created a job (the composer's
-- X-Request-Id), so its logs can be followed from the request to the
-- worker and the executor. None for jobs made otherwise.
ALTER TABLE jobs ADD COLUMN request_id TEXT;
