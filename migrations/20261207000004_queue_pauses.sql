-- Queues an operator paused cluster-wide (POST /admin/v1/queues/{queue}/pause): while a row is
-- here, no dispatcher pushes the queue's jobs, no worker claims them, and no fan-out or
-- hand-off starts one (shared/src/dispatch/pauses.rs). At most one row per queue; resuming
-- deletes it.
CREATE TABLE queue_pauses (
    queue      text PRIMARY KEY,
    paused_at  timestamptz NOT NULL DEFAULT now(),
    -- Who paused it: `admin`, or the request id of the call.
    paused_by  text
);
