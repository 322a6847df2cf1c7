-- Webhook engine, part 4: endpoint health. Auto-disable after M consecutive failures or N days
-- of nothing but failures; operational endpoints receive `endpoint.disabled` and
-- `endpoint.recovered` events instead of order events.

ALTER TABLE webhook_endpoints
    ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0,
    -- First failure since the last success.
    ADD COLUMN failing_since        timestamptz,
    ADD COLUMN operational          boolean NOT NULL DEFAULT false;
