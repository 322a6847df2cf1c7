-- Dead jobs grouped by error fingerprint (the dashboard, `GET /admin/v1/jobs/dead-groups`)
-- read an index instead of running a regular expression over every dead job: a job's
-- fingerprint is written once, when it dies, by a trigger whose WHEN clause keeps every other
-- update of the ledger free of it. The same index lets the queue gauges count dead jobs per
-- queue without reading the table.
CREATE FUNCTION job_error_fingerprint(error text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT regexp_replace(left(COALESCE(error, ''), 300), '[0-9a-f]{8}-[0-9a-f-]{27}|[0-9]+', '#', 'g')
$$;

ALTER TABLE jobs ADD COLUMN error_fingerprint text;

CREATE FUNCTION jobs_fingerprint_dead() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.error_fingerprint := job_error_fingerprint(NEW.last_error);
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_fingerprint_dead BEFORE UPDATE ON jobs
    FOR EACH ROW WHEN (NEW.state = 'dead' AND OLD.state IS DISTINCT FROM 'dead')
    EXECUTE FUNCTION jobs_fingerprint_dead();

UPDATE jobs SET error_fingerprint = job_error_fingerprint(last_error) WHERE state = 'dead';

CREATE INDEX jobs_dead_groups ON jobs (queue, error_fingerprint, finished_at) WHERE state = 'dead';
