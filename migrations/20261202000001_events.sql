-- One outbox for every event (docs/architecture.md §4): partners' own events (POST /v1/events),
-- order events, operational notices and test sends are all `events` rows, written in the
-- producer's own statement. The fan-out reads only this table, never a producer's.

-- Position of an event among those sharing its ordering key, on one clock (the database's):
-- events posted one after another through different API replicas keep their order.
CREATE SEQUENCE events_seq;

CREATE TABLE events (
    id                   uuid PRIMARY KEY,
    tenant_id            uuid NOT NULL,
    mode                 text NOT NULL CHECK (mode IN ('live', 'test')),
    type                 text NOT NULL,
    data                 jsonb NOT NULL,
    -- Who produced it: a partner (`api`), an order change, an endpoint's health (`endpoint`),
    -- a test send (`test`).
    source               text NOT NULL CHECK (source IN ('api', 'order', 'endpoint', 'test')),
    -- Who receives it: the tenant's ordinary endpoints, its operational endpoints (all but the
    -- endpoint the notice is about), or only `endpoint_id` (a test send).
    audience             text NOT NULL DEFAULT 'endpoints'
                         CHECK (audience IN ('endpoints', 'operational', 'endpoint')),
    endpoint_id          uuid,
    -- Events sharing a key reach each endpoint in `seq` order.
    ordering_key         text,
    seq                  bigint NOT NULL DEFAULT nextval('events_seq'),
    occurred_at          timestamptz NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    -- A fan-out that gave up (its job is dead): later events of its key stop waiting for it.
    fan_out_failed_at    timestamptz,
    fan_out_error        text
);
CREATE INDEX events_list ON events (tenant_id, mode, id);
CREATE INDEX events_type ON events (tenant_id, mode, type, id);
CREATE INDEX events_ordering ON events (tenant_id, mode, ordering_key, seq)
    WHERE ordering_key IS NOT NULL;

-- Order events so far become events, keyed by their order; fan-out jobs move to the new queue.
INSERT INTO events (id, tenant_id, mode, type, data, source, ordering_key, seq, occurred_at,
                    created_at, fan_out_failed_at, fan_out_error)
SELECT id, tenant_id, mode, type, data, 'order', order_id::text,
       row_number() OVER (ORDER BY created_at, seq), created_at, created_at,
       fan_out_failed_at, fan_out_error
  FROM order_events;
SELECT setval('events_seq', COALESCE((SELECT max(seq) FROM events), 0) + 1, false);
ALTER TABLE order_events DROP COLUMN fan_out_failed_at, DROP COLUMN fan_out_error;
UPDATE jobs SET queue = 'event_fan_out' WHERE queue = 'order_events';

-- Messages made before this change (operational notices, test sends) get their event.
INSERT INTO events (id, tenant_id, mode, type, data, source, audience, occurred_at, created_at)
SELECT m.event_id, m.tenant_id, COALESCE(w.mode, 'live'), m.event_type,
       COALESCE((m.payload::jsonb) -> 'data', '{}'::jsonb),
       CASE WHEN m.event_type LIKE 'endpoint.%' THEN 'endpoint' ELSE 'test' END,
       CASE WHEN m.event_type LIKE 'endpoint.%' THEN 'operational' ELSE 'endpoint' END,
       m.created_at, m.created_at
  FROM webhook_messages m
  LEFT JOIN LATERAL (SELECT e.mode FROM webhook_deliveries d
                       JOIN webhook_endpoints e ON e.id = d.endpoint_id
                      WHERE d.message_id = m.id LIMIT 1) w ON true
 WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = m.event_id);

-- Ordering keys are the event's key (text; an order's id for order events), positions the
-- event's `seq`.
DROP INDEX webhook_deliveries_ordering;
ALTER TABLE webhook_messages
    ALTER COLUMN ordering_key TYPE text USING ordering_key::text,
    ALTER COLUMN ordering_seq TYPE bigint;
ALTER TABLE webhook_deliveries
    ALTER COLUMN ordering_key TYPE text USING ordering_key::text,
    ALTER COLUMN ordering_seq TYPE bigint;
UPDATE webhook_messages m SET ordering_seq = e.seq
  FROM events e WHERE e.id = m.event_id AND m.ordering_key IS NOT NULL;
UPDATE webhook_deliveries d SET ordering_seq = m.ordering_seq
  FROM webhook_messages m WHERE m.id = d.message_id AND d.ordering_key IS NOT NULL;
CREATE INDEX webhook_deliveries_ordering
    ON webhook_deliveries (endpoint_id, ordering_key, ordering_seq)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;
