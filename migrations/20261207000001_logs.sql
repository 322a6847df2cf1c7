-- Partner API request logs (`GET /v1/logs/requests`): one row per authenticated `/v1`
-- request, written in batches off the request path (never the body, the query string or a
-- credential). The id is the request's own (`Request-Id: req_<id>`, a UUIDv7, so it carries
-- the time); day partitions by id, created a week ahead and dropped whole after
-- `SWITCHYARD_REQUEST_LOG_RETENTION` (shared/src/retention/partitions.rs).
CREATE TABLE request_logs (
    id               uuid NOT NULL,
    tenant_id        uuid NOT NULL,
    mode             text NOT NULL CHECK (mode IN ('live', 'test')),
    api_key_id       uuid NOT NULL,
    method           text NOT NULL,
    path             text NOT NULL,
    -- The OpenAPI operation id (`createOrder`), `other` when no operation matched.
    operation        text NOT NULL,
    status           smallint NOT NULL,
    duration_ms      real NOT NULL,
    client_ip        text,
    idempotency_key  text,
    -- The problem document's `code` of an error response.
    problem_code     text
) PARTITION BY RANGE (id);
CREATE INDEX request_logs_list ON request_logs (tenant_id, mode, id);
CREATE INDEX request_logs_key ON request_logs (api_key_id, id);
CREATE INDEX request_logs_errors ON request_logs (tenant_id, mode, id) WHERE status >= 400;

-- The error log (`GET /v1/logs/errors`) reads each kind of failure newest first, by the time it
-- failed. Partial: only failures are indexed. (Indexing `updated_at` makes a delivery's retry
-- update non-HOT; retries are the slow path, and its success path was never HOT.)
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (tenant_id, updated_at, id)
    WHERE status = 'failed';
CREATE INDEX inbound_events_failed
    ON inbound_events (tenant_id, mode, (COALESCE(processed_at, received_at)), id)
    WHERE status IN ('failed', 'rejected');
CREATE INDEX sync_runs_failed ON sync_runs (tenant_id, mode, finished_at, id)
    WHERE status IN ('failed', 'partial');

-- When a UUIDv7 was made (its first 48 bits: Unix milliseconds); the inverse of uuid_v7_floor.
CREATE FUNCTION uuid_v7_time(u uuid) RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_timestamp(('x' || lpad(left(replace(u::text, '-', ''), 12), 16, '0'))::bit(64)::bigint
                        / 1000.0)
$$;
