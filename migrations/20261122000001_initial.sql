-- Switchyard initial schema: tenants, API keys, the job ledger, orders, outbound webhooks.
-- Ids are UUIDv7 minted by the application, so primary keys sort by creation time and
-- cursor pagination is an index seek on the primary key.
--
-- Foreign keys: a foreign key check takes FOR KEY SHARE on the parent row. On high-volume
-- tables whose parent is shared by every insert (the tenant, a busy endpoint) that serialises
-- concurrent writers on one row (multixacts); measured: +20 % ingest without them. Those
-- tables keep the tenant/endpoint ids without a constraint: the application writes them from
-- the authenticated principal, and tenants and endpoints are never hard-deleted. Per-row parents
-- (an event's order, a delivery's message, an attempt's delivery) keep their constraint.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    -- Public part of the key (shown in logs and dashboards); the secret part is never stored.
    key_id        text NOT NULL UNIQUE,
    -- HMAC-SHA256(pepper, full key).
    key_hash      bytea NOT NULL,
    mode          text NOT NULL CHECK (mode IN ('live', 'test')),
    name          text NOT NULL,
    scopes        text[] NOT NULL,
    last4         text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);

-- The job ledger: every unit of work exists here before it exists anywhere else.
-- Redis only ever holds a bounded window of `queued` rows (see shared::dispatch).
CREATE TABLE jobs (
    id            uuid PRIMARY KEY,
    queue         text NOT NULL,
    tenant_id     uuid NOT NULL,
    subject_id    uuid NOT NULL,
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'queued', 'running', 'succeeded', 'dead', 'cancelled')),
    attempt       integer NOT NULL DEFAULT 0,
    max_attempts  integer NOT NULL,
    run_at        timestamptz NOT NULL DEFAULT now(),
    -- Bumped on every push to Redis; a task carries the value it was pushed with, so a stale
    -- duplicate can never claim the job.
    dispatch_seq  bigint NOT NULL DEFAULT 0,
    queued_at     timestamptz,
    lease_owner   text,
    lease_until   timestamptz,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
-- Hot paths of the dispatcher, reconciler and janitor; partial, so they stay small however big
-- the ledger. Every state change of a job rewrites its index entries (state is in every
-- predicate, so updates are never HOT): add an index here only for a query that needs it.
CREATE INDEX jobs_due ON jobs (queue, run_at) WHERE state = 'pending';
CREATE INDEX jobs_queued ON jobs (queued_at) WHERE state = 'queued';
CREATE INDEX jobs_running ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state IN ('succeeded', 'cancelled');

CREATE TABLE orders (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    external_id  text NOT NULL,
    status       text NOT NULL,
    currency     text NOT NULL,
    items        jsonb NOT NULL,
    subtotal     bigint NOT NULL,
    total        bigint NOT NULL,
    customer     jsonb NOT NULL,
    delivery     jsonb,
    notes        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, external_id)
);
CREATE INDEX orders_tenant ON orders (tenant_id, id);

CREATE TABLE order_events (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    order_id    uuid NOT NULL REFERENCES orders (id),
    seq         integer NOT NULL,
    type        text NOT NULL,
    -- Snapshot of the order as of this event: what webhooks carry.
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, seq)
);

CREATE TABLE webhook_endpoints (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenants (id),
    url                text NOT NULL,
    description        text,
    event_types        text[] NOT NULL,
    status             text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    -- AES-256-GCM(nonce || ciphertext || tag) of the signing secret, bound to the row by AAD.
    secret_ciphertext  bytea NOT NULL,
    secret_key_id      text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at         timestamptz
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, id) WHERE deleted_at IS NULL;

CREATE TABLE webhook_messages (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    -- The event the message was made from; unique so a re-run fan-out cannot duplicate it.
    event_id    uuid NOT NULL UNIQUE,
    event_type  text NOT NULL,
    -- Exact body bytes sent on every attempt (signatures cover these bytes).
    payload     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_messages_tenant ON webhook_messages (tenant_id, id);

CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    message_id       uuid NOT NULL REFERENCES webhook_messages (id),
    endpoint_id      uuid NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'succeeded', 'failed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    last_status_code integer,
    next_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (message_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);

CREATE TABLE webhook_attempts (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL,
    delivery_id        uuid NOT NULL REFERENCES webhook_deliveries (id),
    endpoint_id        uuid NOT NULL,
    message_id         uuid NOT NULL,
    attempt            integer NOT NULL,
    webhook_timestamp  bigint NOT NULL,
    status_code        integer,
    -- One of: dns, connect, tls, timeout, http_status, blocked_address, invalid_url, request.
    error_class        text,
    error_message      text,
    duration_ms        integer NOT NULL,
    response_body      text,
    response_size      bigint,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id DESC);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
