-- The job that moves a delivery now (set by every statement that makes one: the fan-out, a
-- retry, a replay, an endpoint's catch-up). A delivery that must wait for an earlier one
-- (FIFO, or an earlier event of the same order) finds that one's job through it and runs it in
-- its place (shared/src/webhooks/ordering.rs). No index: it is read by the delivery's primary
-- key. Rows from before stay NULL; they wait as before.
ALTER TABLE webhook_deliveries ADD COLUMN job_id uuid;
