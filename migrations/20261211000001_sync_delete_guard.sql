-- A full run that would delete more than its configuration's `max_delete_percent` of the
-- records by absence (a truncated read, an API answering an empty page) deletes none of them
-- unless started with `confirm_deletes` (shared/src/sync/engine/mod.rs, `finish`).
ALTER TABLE sync_runs ADD COLUMN confirm_deletes boolean NOT NULL DEFAULT false;
