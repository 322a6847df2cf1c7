-- Orders, complete: live/test mode, provider, modifiers and charges, metadata, the status
-- history's sequence, and per-order delivery ordering.

ALTER TABLE orders
    ADD COLUMN mode          text NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'test')),
    ADD COLUMN provider      text NOT NULL DEFAULT 'generic',
    ADD COLUMN tax           bigint NOT NULL DEFAULT 0,
    ADD COLUMN delivery_fee  bigint NOT NULL DEFAULT 0,
    ADD COLUMN tip           bigint NOT NULL DEFAULT 0,
    ADD COLUMN discount      bigint NOT NULL DEFAULT 0,
    ADD COLUMN metadata      jsonb NOT NULL DEFAULT '{}',
    -- Sequence number of the order's latest event (history entries are numbered 1, 2, …).
    ADD COLUMN event_seq     integer NOT NULL DEFAULT 1;
ALTER TABLE orders DROP CONSTRAINT orders_tenant_id_external_id_key;
CREATE UNIQUE INDEX orders_external ON orders (tenant_id, mode, provider, external_id);
DROP INDEX orders_tenant;
CREATE INDEX orders_list ON orders (tenant_id, mode, id);
-- `updated[gte]` lets partners run their own incremental sync.
CREATE INDEX orders_updated ON orders (tenant_id, mode, updated_at);

ALTER TABLE order_events
    ADD COLUMN mode     text NOT NULL DEFAULT 'live',
    -- What changed (`{"status": ["received", "confirmed"], "reason": …}`).
    ADD COLUMN changes  jsonb NOT NULL DEFAULT '{}';

ALTER TABLE webhook_endpoints
    ADD COLUMN mode text NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'test'));
DROP INDEX webhook_endpoints_tenant;
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, mode, id)
    WHERE deleted_at IS NULL;

-- Events of one order reach each endpoint in order: a delivery waits while an earlier one of
-- the same order to the same endpoint is pending.
ALTER TABLE webhook_messages
    ADD COLUMN ordering_key  uuid,
    ADD COLUMN ordering_seq  integer;
ALTER TABLE webhook_deliveries
    ADD COLUMN ordering_key  uuid,
    ADD COLUMN ordering_seq  integer;
CREATE INDEX webhook_deliveries_ordering ON webhook_deliveries (endpoint_id, ordering_key, ordering_seq)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;
