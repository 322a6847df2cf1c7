-- The record store written faster (docs/benchmarks.md, sync): a record's configuration is no
-- longer a foreign key (its per-row check was a third of a batch's insert cost; the API
-- shows it only while the configuration exists), and a full run's sweep of unseen records
-- reads the entity's records by the primary key instead of an index of its own (the sweep
-- runs once per full run, which has just read every row anyway).
ALTER TABLE sync_records DROP CONSTRAINT sync_records_configuration_id_fkey;
DROP INDEX sync_records_configuration;
