-- Webhook engine, part 3: dispatch groups. A job may belong to a group (a webhook delivery's
-- group is its endpoint); the dispatcher enforces each group's concurrency cap, rate limit and
-- circuit breaker cluster-wide before anything reaches Redis (DESIGN §2, step 2).

ALTER TABLE jobs ADD COLUMN group_key uuid;
-- In-flight work per group, counted by the dispatcher on every pass.
CREATE INDEX jobs_group_inflight ON jobs (group_key)
    WHERE state IN ('queued', 'running') AND group_key IS NOT NULL;
-- Parking a group's waiting work when its breaker opens.
CREATE INDEX jobs_group_pending ON jobs (group_key)
    WHERE state = 'pending' AND group_key IS NOT NULL;

CREATE TABLE dispatch_groups (
    key              uuid PRIMARY KEY,
    -- NULL = the deployment's default cap.
    max_concurrency  integer CHECK (max_concurrency > 0),
    -- Dispatches per second; NULL = unlimited.
    rate_per_second  integer CHECK (rate_per_second > 0),
    -- GCRA: when the next dispatch is allowed (rate-limited groups).
    tat              timestamptz,
    -- Circuit breaker: `closed`, `open` (parked until paused_until) or `half_open` (one probe
    -- in flight until paused_until).
    breaker          text NOT NULL DEFAULT 'closed'
                     CHECK (breaker IN ('closed', 'open', 'half_open')),
    paused_until     timestamptz,
    -- The one job allowed through while half-open.
    probe_job        uuid,
    -- Consecutive trips without a success in between; the cool-down doubles with each.
    trips            integer NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE webhook_endpoints
    ADD COLUMN max_concurrency  integer CHECK (max_concurrency BETWEEN 1 AND 1000),
    ADD COLUMN rate_limit       integer CHECK (rate_limit BETWEEN 1 AND 100000);
CREATE INDEX dispatch_groups_paused ON dispatch_groups (paused_until) WHERE paused_until IS NOT NULL;
