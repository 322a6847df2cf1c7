-- API key lifecycle: allowlists, rate limits, rotation, usage and the audit log.

ALTER TABLE api_keys
    -- CIDR blocks (IPv4 or IPv6) the key may be used from; empty = anywhere.
    ADD COLUMN allowed_cidrs          text[] NOT NULL DEFAULT '{}',
    -- Per-key limits; NULL = the server default.
    ADD COLUMN rate_limit_per_minute  integer,
    ADD COLUMN rate_limit_per_hour    integer,
    -- The key this one replaced by a roll.
    ADD COLUMN rolled_from            uuid,
    -- Bumped by every change that affects authentication: API replicas poll it to drop cached
    -- keys (revocation reaches every replica within seconds).
    ADD COLUMN updated_at             timestamptz NOT NULL DEFAULT now();
CREATE INDEX api_keys_updated ON api_keys (updated_at);

ALTER TABLE tenants
    -- Limit over all of a tenant's keys together; NULL = the server default.
    ADD COLUMN rate_limit_per_minute integer;

-- Requests per key, hour and operation; written by each API replica's aggregator every few
-- seconds (never a write per request).
CREATE TABLE api_key_usage (
    api_key_id  uuid NOT NULL REFERENCES api_keys (id),
    tenant_id   uuid NOT NULL,
    hour        timestamptz NOT NULL,
    operation   text NOT NULL,
    requests    bigint NOT NULL DEFAULT 0,
    errors      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (api_key_id, hour, operation)
);

-- Append-only record of every write on keys and of the operator API.
CREATE TABLE audit_events (
    id           uuid PRIMARY KEY,
    tenant_id    uuid,
    actor_type   text NOT NULL CHECK (actor_type IN ('admin', 'api_key', 'system')),
    -- The API key's id for `api_key`; NULL for the operator token.
    actor_id     uuid,
    action       text NOT NULL,
    target_type  text NOT NULL,
    target_id    uuid NOT NULL,
    request_id   text,
    ip           text,
    -- What changed, without secrets.
    changes      jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_tenant ON audit_events (tenant_id, id);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
