-- Webhook engine, part 6: optional strict FIFO per endpoint. One delivery at a time, in
-- message order; a failing head holds back only its own endpoint.

ALTER TABLE webhook_endpoints ADD COLUMN fifo boolean NOT NULL DEFAULT false;
CREATE INDEX webhook_deliveries_fifo ON webhook_deliveries (endpoint_id, message_id)
    WHERE status = 'pending';
