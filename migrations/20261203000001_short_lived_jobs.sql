-- Scheduled kinds may keep their finished slot jobs shorter than the ledger's default (the
-- worker's job-kind registry: `keep_finished`). This index lets that purge find them without
-- walking every older finished job of every queue; only slot jobs (unique_key set) are in it,
-- so deliveries pay nothing for it.
CREATE INDEX jobs_slot_finished ON jobs (queue, finished_at)
    WHERE unique_key IS NOT NULL AND state IN ('succeeded', 'cancelled');
