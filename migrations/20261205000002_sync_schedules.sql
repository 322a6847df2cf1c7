-- Scheduled sync runs: when a configuration's next slot is due (NULL: no schedule, or
-- disabled), and which slot a scheduled run was started for (one run per slot, enforced).
ALTER TABLE sync_configurations ADD COLUMN next_run_at timestamptz;
CREATE INDEX sync_configurations_due ON sync_configurations (next_run_at)
    WHERE next_run_at IS NOT NULL;
ALTER TABLE sync_runs ADD COLUMN scheduled_for timestamptz;
CREATE UNIQUE INDEX sync_runs_one_per_slot ON sync_runs (configuration_id, scheduled_for)
    WHERE scheduled_for IS NOT NULL;

-- An inbound "data changed" webhook that arrives while a run is going asks for one more run
-- after it (the going run may have read past the change already).
ALTER TABLE sync_configurations ADD COLUMN rerun_requested boolean NOT NULL DEFAULT false;
