-- When the endpoint's breaker last closed: the failure window that may trip it again starts
-- there, not before (shared/src/webhooks/breaker.rs, `on_failure`). The failures that opened
-- it last time no longer count once a probe has succeeded.
ALTER TABLE dispatch_groups ADD COLUMN closed_at timestamptz;
