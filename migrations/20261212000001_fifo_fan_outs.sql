-- Strict FIFO across fan-outs (shared/src/webhooks/delivery.rs): a FIFO delivery waits for
-- earlier events of its tenant whose fan-out is still waiting or queued. This index finds
-- them by tenant and event id; the few running ones are read through `jobs_running`. One
-- entry per event (its fan-out job is born queued; a retry adds one more).
CREATE INDEX jobs_fan_outs_waiting ON jobs (tenant_id, subject_id)
    WHERE queue = 'event_fan_out' AND state IN ('pending', 'queued');
