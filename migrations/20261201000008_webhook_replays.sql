-- Webhook engine, part 8: bulk replays. A replay re-sends (or sends for the first time) the
-- messages of a time range to one endpoint, filtered by event type and by the status of their
-- earlier delivery, in batches at its own rate, as a background job with progress.

CREATE TABLE webhook_replays (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    mode             text NOT NULL,
    endpoint_id      uuid NOT NULL,
    since            timestamptz NOT NULL,
    until            timestamptz NOT NULL,
    event_types      text[] NOT NULL,
    -- Earlier delivery statuses to replay (`failed`, `cancelled`, `succeeded`).
    statuses         text[] NOT NULL,
    -- Also send messages the endpoint never had a delivery of (a newly added endpoint).
    include_missing  boolean NOT NULL,
    rate_per_second  integer NOT NULL CHECK (rate_per_second BETWEEN 1 AND 1000),
    state            text NOT NULL CHECK (state IN ('dry_run', 'running', 'completed', 'cancelled')),
    -- Messages matching the time range and types when the replay was created.
    total            bigint NOT NULL,
    processed        bigint NOT NULL DEFAULT 0,
    scheduled        bigint NOT NULL DEFAULT 0,
    -- Last message id looked at (messages are walked in id order).
    cursor           uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX webhook_replays_tenant ON webhook_replays (tenant_id, id);
