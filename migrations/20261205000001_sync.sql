-- The sync engine (docs/architecture.md §11): configurations between an integration's table and
-- Switchyard's record store, their runs (a `sync_runs` job each), per-batch checkpoints, the
-- records, run logs and per-record errors.

CREATE TABLE sync_configurations (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    mode            text NOT NULL CHECK (mode IN ('live', 'test')),
    name            text NOT NULL,
    entity          text NOT NULL,
    integration_id  uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    -- The whole configuration as the API shows it (validated by shared::sync::config).
    spec            jsonb NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    -- The committed position of the stream between runs (shared::sync::cursor::State).
    cursor          jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_configurations_list ON sync_configurations (tenant_id, mode, id);

CREATE TABLE sync_runs (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL,
    mode              text NOT NULL CHECK (mode IN ('live', 'test')),
    configuration_id  uuid NOT NULL REFERENCES sync_configurations (id) ON DELETE CASCADE,
    status            text NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'partial',
                                                      'failed', 'cancelled')),
    trigger           text NOT NULL CHECK (trigger IN ('manual', 'scheduled', 'retry', 'inbound')),
    -- The run's one job on the `sync_runs` queue (a retry is a new run with a new job).
    job_id            uuid NOT NULL,
    rows_read         bigint NOT NULL DEFAULT 0,
    rows_inserted     bigint NOT NULL DEFAULT 0,
    rows_updated      bigint NOT NULL DEFAULT 0,
    rows_unchanged    bigint NOT NULL DEFAULT 0,
    rows_deleted      bigint NOT NULL DEFAULT 0,
    conflicts         bigint NOT NULL DEFAULT 0,
    rows_failed       bigint NOT NULL DEFAULT 0,
    batches           integer NOT NULL DEFAULT 0,
    cursor_before     jsonb,
    cursor_after      jsonb,
    -- Frozen at the start of the run, on the source's clock; the run reads below it.
    watermark         text,
    -- Where the run is (keyset position after the last committed batch): a resumed run starts here.
    checkpoint        jsonb,
    cancel_requested  boolean NOT NULL DEFAULT false,
    error             text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz
);
-- One active run per configuration.
CREATE UNIQUE INDEX sync_runs_one_active ON sync_runs (configuration_id)
    WHERE status IN ('pending', 'running');
CREATE INDEX sync_runs_list ON sync_runs (tenant_id, mode, id);
CREATE INDEX sync_runs_configuration ON sync_runs (configuration_id, id);
CREATE INDEX sync_runs_finished ON sync_runs (finished_at) WHERE status NOT IN ('pending', 'running');

-- Switchyard's record store: the synced rows, one per entity and key, mapped.
CREATE TABLE sync_records (
    tenant_id         uuid NOT NULL,
    mode              text NOT NULL CHECK (mode IN ('live', 'test')),
    entity            text NOT NULL,
    key               text NOT NULL,
    data              jsonb NOT NULL,
    -- SHA-256 of the mapped data: an equal hash is an unchanged row (not rewritten).
    hash              bytea NOT NULL,
    configuration_id  uuid REFERENCES sync_configurations (id) ON DELETE SET NULL,
    -- The last run that saw the row (full runs delete by absence: rows no run saw).
    seen_run_id       uuid,
    deleted_at        timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, mode, entity, key)
);
CREATE INDEX sync_records_updated ON sync_records (tenant_id, mode, entity, updated_at, key);
CREATE INDEX sync_records_configuration ON sync_records (configuration_id, seen_run_id)
    WHERE deleted_at IS NULL;
CREATE INDEX sync_records_tombstones ON sync_records (deleted_at) WHERE deleted_at IS NOT NULL;

CREATE TABLE sync_run_logs (
    id          uuid PRIMARY KEY,
    run_id      uuid NOT NULL REFERENCES sync_runs (id) ON DELETE CASCADE,
    level       text NOT NULL CHECK (level IN ('info', 'warn', 'error')),
    message     text NOT NULL,
    details     jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_run_logs_run ON sync_run_logs (run_id, id);

-- Records a run could not apply (poison rows): skipped, kept with the reason.
CREATE TABLE sync_record_errors (
    id          uuid PRIMARY KEY,
    run_id      uuid NOT NULL REFERENCES sync_runs (id) ON DELETE CASCADE,
    record_key  text,
    error       text NOT NULL,
    data        jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_record_errors_run ON sync_record_errors (run_id, id);

-- Sync runs announce their end through the outbox.
ALTER TABLE events DROP CONSTRAINT events_source_check;
ALTER TABLE events ADD CONSTRAINT events_source_check
    CHECK (source IN ('api', 'order', 'endpoint', 'test', 'integration', 'inbound', 'sync'));
