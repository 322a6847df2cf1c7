-- Integrations: the external systems a tenant connects (ERP, MES, payment gateways, …), with
-- their credentials sealed one by one (docs/architecture.md §4, "Integrations").

CREATE TABLE integrations (
    id                    uuid PRIMARY KEY,
    tenant_id             uuid NOT NULL REFERENCES tenants (id),
    mode                  text NOT NULL CHECK (mode IN ('live', 'test')),
    name                  text NOT NULL,
    -- The tenant's own handle for it (a slug), unique per tenant and mode.
    code                  text NOT NULL,
    type                  text NOT NULL CHECK (type IN ('payment_gateway', 'erp', 'mes', 'crm',
                              'accounting', 'email', 'sms', 'shipping', 'inventory', 'api',
                              'webhook', 'database')),
    provider              text NOT NULL,
    status                text NOT NULL DEFAULT 'active'
                          CHECK (status IN ('active', 'inactive', 'error', 'testing')),
    base_url              text,
    config                jsonb NOT NULL DEFAULT '{}',
    -- What the last connection check found.
    connection_status     text NOT NULL DEFAULT 'unknown'
                          CHECK (connection_status IN ('connected', 'error', 'unknown')),
    last_health_check_at  timestamptz,
    -- From `config.health_interval` (default 5 min); NULL = scheduled checks off.
    health_interval_ms    integer DEFAULT 300000,
    -- When the scheduled check is due; claimed by moving it one interval on.
    next_health_check_at  timestamptz,
    last_error            text,
    calls_total           bigint NOT NULL DEFAULT 0,
    failures_total        bigint NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    -- Deleted integrations keep their row (their logs and inbound events point at it); their
    -- credentials are removed at once.
    deleted_at            timestamptz
);
CREATE UNIQUE INDEX integrations_code_unique ON integrations (tenant_id, mode, code)
    WHERE deleted_at IS NULL;
CREATE INDEX integrations_list ON integrations (tenant_id, mode, id) WHERE deleted_at IS NULL;
CREATE INDEX integrations_health_due ON integrations (next_health_check_at)
    WHERE deleted_at IS NULL AND health_interval_ms IS NOT NULL AND status <> 'inactive';

-- One sealed value per named credential (`bearer_token`, `password`, `url`, …). The AAD binds
-- each ciphertext to its tenant, integration and name: a value copied to another row or name
-- does not open. `fingerprint` (keyed HMAC, not a plain hash) and `last4` let people tell
-- values apart without seeing them.
CREATE TABLE integration_credentials (
    integration_id  uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    tenant_id       uuid NOT NULL,
    name            text NOT NULL,
    key_id          text NOT NULL,
    sealed          bytea NOT NULL,
    fingerprint     text NOT NULL,
    last4           text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration_id, name)
);
-- Keyring rotation finds what an old key still seals.
CREATE INDEX integration_credentials_key ON integration_credentials (key_id);

-- Every call made on an integration's behalf (connection tests, health checks, sync adapter
-- requests) and every inbound request, with credential values redacted. Kept
-- `SWITCHYARD_INTEGRATION_LOG_RETENTION` (ids are UUIDv7: time-ordered).
CREATE TABLE integration_logs (
    id              uuid PRIMARY KEY,
    integration_id  uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    tenant_id       uuid NOT NULL,
    direction       text NOT NULL CHECK (direction IN ('outbound', 'inbound')),
    -- What made the call: `connection_test`, `health_check`, `sync`, `inbound`.
    kind            text NOT NULL,
    method          text,
    -- Path (HTTP) or `host:port/database` (SQL); never a query string or credentials.
    target          text,
    status_code     integer,
    ok              boolean NOT NULL,
    duration_ms     integer NOT NULL,
    error           text,
    request_body    text,
    response_body   text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX integration_logs_list ON integration_logs (integration_id, id);

-- Integration health notices are events too.
ALTER TABLE events DROP CONSTRAINT events_source_check;
ALTER TABLE events ADD CONSTRAINT events_source_check
    CHECK (source IN ('api', 'order', 'endpoint', 'test', 'integration'));

-- Keyring rotations: re-encryption of every sealed value with the active master key, one at a
-- time (a job each). Kept like audit events.
CREATE TABLE keyring_rotations (
    id           uuid PRIMARY KEY,
    key_id       text NOT NULL,
    state        text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'finished', 'failed')),
    rotated      jsonb NOT NULL DEFAULT '{}',
    unreadable   jsonb NOT NULL DEFAULT '{}',
    error        text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE UNIQUE INDEX keyring_rotations_one_running ON keyring_rotations ((true))
    WHERE state = 'running';
