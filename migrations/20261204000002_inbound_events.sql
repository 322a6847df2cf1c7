-- Inbound webhooks (docs/architecture.md §9): an integration with `inbound` settings receives
-- webhooks at /inbound/<token>; each request is stored raw before Switchyard answers 2xx and
-- processed by a job.

ALTER TABLE integrations
    -- Verification rules and the action (secrets are sealed credentials named `inbound/0`,
    -- `inbound/1`, … in integration_credentials, never here).
    ADD COLUMN inbound jsonb,
    -- The unguessable part of the inbound URL (`in_…`): it resolves tenant and integration.
    ADD COLUMN inbound_token text;
CREATE UNIQUE INDEX integrations_inbound_token ON integrations (inbound_token)
    WHERE inbound_token IS NOT NULL;

CREATE TABLE inbound_events (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    mode            text NOT NULL CHECK (mode IN ('live', 'test')),
    integration_id  uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    -- `rejected`: failed verification or malformed; never processed.
    status          text NOT NULL CHECK (status IN ('pending', 'processing', 'completed',
                                                    'failed', 'ignored', 'rejected')),
    -- The sender's event id (`webhook-id`, Stripe's `id`, `X-GitHub-Delivery`, a JSON pointer).
    dedupe_id       text,
    -- `verified`, `unverified` (scheme `none`) or `rejected`; `reason` says why.
    verification    text NOT NULL CHECK (verification IN ('verified', 'unverified', 'rejected')),
    reason          text,
    content_type    text,
    -- Request headers, credentials and cookies redacted.
    headers         jsonb NOT NULL,
    body            bytea NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    result          jsonb,
    received_at     timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz
);
CREATE UNIQUE INDEX inbound_events_dedupe ON inbound_events (integration_id, dedupe_id)
    WHERE dedupe_id IS NOT NULL AND status <> 'rejected';
CREATE INDEX inbound_events_list ON inbound_events (tenant_id, mode, id);

-- Partners' systems are event sources too.
ALTER TABLE events DROP CONSTRAINT events_source_check;
ALTER TABLE events ADD CONSTRAINT events_source_check
    CHECK (source IN ('api', 'order', 'endpoint', 'test', 'integration', 'inbound'));
