-- Webhook engine, part 5: message payloads are removed after the retention period; messages,
-- deliveries and attempts stay as metadata.

ALTER TABLE webhook_messages
    ALTER COLUMN payload DROP NOT NULL,
    ADD COLUMN payload_removed_at timestamptz;
-- What the janitor still has to purge (ids are UUIDv7: time order).
CREATE INDEX webhook_messages_payload_kept ON webhook_messages (id) WHERE payload IS NOT NULL;
