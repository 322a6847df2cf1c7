-- Webhook engine, part 7: a tenant's event type catalog (built-in types are listed by the
-- application; these are the tenant's own entries).

CREATE TABLE event_types (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    name         text NOT NULL,
    description  text,
    -- Optional JSON Schema of the event's `data`.
    schema       jsonb,
    deprecated   boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
