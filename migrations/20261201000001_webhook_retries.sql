-- Webhook engine, part 1: per-endpoint retry schedule and timeout, why an endpoint is
-- disabled, and a richer attempt log (timings, remote address, headers both ways).

ALTER TABLE webhook_endpoints
    -- Delays before attempts 2, 3, … in milliseconds; NULL = the deployment's default schedule.
    ADD COLUMN retry_schedule_ms integer[]
        CHECK (cardinality(retry_schedule_ms) <= 20 AND 0 <= ALL (retry_schedule_ms)),
    -- Total request timeout; NULL = the deployment's default (15 s).
    ADD COLUMN timeout_ms integer CHECK (timeout_ms BETWEEN 1000 AND 30000),
    -- `manual`, `gone` (the endpoint answered 410) or `failing` (auto-disabled).
    ADD COLUMN disabled_reason text,
    ADD COLUMN disabled_at timestamptz;

ALTER TABLE webhook_attempts
    ADD COLUMN remote_ip        text,
    -- Milliseconds until the response headers arrived (TTFB), NULL when none did.
    ADD COLUMN ttfb_ms          integer,
    -- Milliseconds spent opening a new connection (TCP + TLS); NULL when one was reused.
    ADD COLUMN connect_ms       integer,
    -- Header names and values as sent (secrets redacted) and as received.
    ADD COLUMN request_headers  jsonb,
    ADD COLUMN response_headers jsonb;
