-- Hardening: mode-scoped audit log, per-key idempotency records, keyed key checksums, failed
-- fan-outs that no longer hold back later events, retention for every growing table.

-- The audit log is mode-scoped like everything else: a test key sees only test-mode events.
-- `NULL` = a tenant-wide change (it belongs to the live account).
ALTER TABLE audit_events ADD COLUMN mode text CHECK (mode IN ('live', 'test'));
ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only;
UPDATE audit_events a SET mode = k.mode
  FROM api_keys k WHERE a.target_type = 'api_key' AND k.id = a.target_id;
ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only;

-- A fan-out that gave up (poison event, attempts used up) is marked on its event, so the
-- order's later events stop waiting for it; the dead job keeps the full story.
ALTER TABLE order_events
    ADD COLUMN fan_out_failed_at timestamptz,
    ADD COLUMN fan_out_error text;

-- Dead jobs are counted per queue and purged after their own retention.
CREATE INDEX jobs_dead ON jobs (finished_at) WHERE state = 'dead';

-- A replay whose job died (attempts used up) stops as `failed` with the reason.
ALTER TABLE webhook_replays DROP CONSTRAINT webhook_replays_state_check;
ALTER TABLE webhook_replays
    ADD CONSTRAINT webhook_replays_state_check
        CHECK (state IN ('dry_run', 'running', 'completed', 'cancelled', 'failed')),
    ADD COLUMN error text;
UPDATE jobs SET max_attempts = 25 WHERE queue = 'webhook_replays' AND max_attempts > 25;

-- An idempotency record belongs to the API key that made it: another key with the same
-- `Idempotency-Key` makes a different request (and never sees a response holding a secret
-- shown once). Records from before this change cannot say which key made them; they are
-- transient (24 h), so they are dropped.
DELETE FROM idempotency_keys;
ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_pkey,
    ADD COLUMN api_key_id uuid NOT NULL,
    ADD PRIMARY KEY (api_key_id, key);

-- Retention (shared::retention). The smallest UUIDv7 of a time: ids are UUIDv7 minted by the
-- application, so `id < uuid_v7_floor(t)` is "created before t", served by the primary key.
CREATE FUNCTION uuid_v7_floor(t timestamptz) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (lpad(to_hex(GREATEST(floor(extract(epoch FROM t) * 1000), 0)::bigint), 12, '0')
            || '70008000000000000000')::uuid
$$;

-- Closed orders are deleted with their history after the order retention.
CREATE INDEX orders_closed ON orders (updated_at)
    WHERE status IN ('completed', 'cancelled', 'rejected');
CREATE INDEX api_key_usage_hour ON api_key_usage (hour);

-- The audit log stays append-only, except for the retention purge, which sets
-- `switchyard.retention_purge` for its own transaction.
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('switchyard.retention_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only';
END
$$;

-- Delivery attempts (up to 64 KiB of response each) live in day partitions by id, dropped
-- whole when their day passes the retention. The rows from before go into one partition
-- (`…_upto_<today>`), today's into its own; the application creates the following days ahead.
-- Attempts no longer reference their delivery by foreign key: a delivery is purged by rows,
-- its attempts by partitions, and the two never wait for each other.
ALTER TABLE webhook_attempts RENAME TO webhook_attempts_unpartitioned;
ALTER INDEX webhook_attempts_pkey RENAME TO webhook_attempts_unpartitioned_pkey;
ALTER INDEX webhook_attempts_endpoint RENAME TO webhook_attempts_unpartitioned_endpoint;
ALTER INDEX webhook_attempts_delivery RENAME TO webhook_attempts_unpartitioned_delivery;
CREATE TABLE webhook_attempts (LIKE webhook_attempts_unpartitioned INCLUDING DEFAULTS)
    PARTITION BY RANGE (id);
ALTER TABLE webhook_attempts ADD PRIMARY KEY (id);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id DESC);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
DO $$
DECLARE
    today timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
BEGIN
    EXECUTE format(
        'CREATE TABLE %I PARTITION OF webhook_attempts FOR VALUES FROM (MINVALUE) TO (%L)',
        'webhook_attempts_upto_' || to_char(today AT TIME ZONE 'UTC', 'YYYYMMDD'),
        uuid_v7_floor(today));
    EXECUTE format(
        'CREATE TABLE %I PARTITION OF webhook_attempts FOR VALUES FROM (%L) TO (%L)',
        'webhook_attempts_p' || to_char(today AT TIME ZONE 'UTC', 'YYYYMMDD'),
        uuid_v7_floor(today), uuid_v7_floor(today + interval '1 day'));
END
$$;
INSERT INTO webhook_attempts SELECT * FROM webhook_attempts_unpartitioned;
DROP TABLE webhook_attempts_unpartitioned;

-- The dispatcher takes jobs outside groups oldest first per queue (`jobs_due`), and jobs in
-- groups group by group: one probe per group finds its oldest pending job (`jobs_group_due`,
-- a skip scan), so a pass never walks the backlog of a group that must wait (its cap is full,
-- its breaker open). `queue` is included so counting pending jobs per queue stays index-only.
DROP INDEX jobs_due;
CREATE INDEX jobs_due ON jobs (queue, run_at) WHERE state = 'pending' AND group_key IS NULL;
DROP INDEX jobs_group_pending;
CREATE INDEX jobs_group_due ON jobs (group_key, run_at) INCLUDE (queue)
    WHERE state = 'pending' AND group_key IS NOT NULL;

-- API key checksums are keyed with the server's pepper from now on; keys made before carry an
-- unkeyed CRC32 and stay valid (their ids are loaded once at start; no new ones can appear).
ALTER TABLE api_keys ADD COLUMN legacy_checksum boolean NOT NULL DEFAULT false;
UPDATE api_keys SET legacy_checksum = true;

-- The event type catalog is per mode like everything else: a test key neither sees nor
-- changes the live catalog. Existing entries belong to live mode and are copied to test mode.
ALTER TABLE event_types ADD COLUMN mode text NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'test'));
INSERT INTO event_types (tenant_id, mode, name, description, schema, deprecated, created_at, updated_at)
SELECT tenant_id, 'test', name, description, schema, deprecated, created_at, updated_at
  FROM event_types;
ALTER TABLE event_types DROP CONSTRAINT event_types_pkey, ADD PRIMARY KEY (tenant_id, mode, name);
