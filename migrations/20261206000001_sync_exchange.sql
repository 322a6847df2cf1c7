-- Outbound and bidirectional syncs (docs/architecture.md §10): the target integration of a
-- sync between two integrations, the side a run is reading, per-record sync links and
-- conflicts.

ALTER TABLE sync_configurations
    ADD COLUMN target_integration_id uuid REFERENCES integrations (id) ON DELETE CASCADE;

-- A bidirectional run reads the source's changes, then the target's; each side has its own
-- watermark, frozen when the run starts.
ALTER TABLE sync_runs
    ADD COLUMN phase text NOT NULL DEFAULT 'source' CHECK (phase IN ('source', 'target')),
    ADD COLUMN target_watermark text;

-- What both sides last agreed on, per record: the three-way base of conflict detection and
-- echo suppression (a row the sync wrote reads back equal to its base, and is skipped).
CREATE TABLE sync_links (
    configuration_id  uuid NOT NULL REFERENCES sync_configurations (id) ON DELETE CASCADE,
    key               text NOT NULL,
    -- The record in the target's field names; NULL: deleted on both sides.
    base              jsonb,
    -- Each side's version when they last agreed (change column value, ETag, update time).
    source_version    text,
    target_version    text,
    last_run_id       uuid,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (configuration_id, key)
);
CREATE INDEX sync_links_deleted ON sync_links (synced_at) WHERE base IS NULL;

CREATE TABLE sync_conflicts (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL,
    mode              text NOT NULL CHECK (mode IN ('live', 'test')),
    configuration_id  uuid NOT NULL REFERENCES sync_configurations (id) ON DELETE CASCADE,
    run_id            uuid,
    key               text NOT NULL,
    status            text NOT NULL CHECK (status IN ('open', 'resolved')),
    -- both_changed | deleted_and_changed | same_fields_changed
    reason            text NOT NULL,
    -- Each side now (NULL: deleted) and the base they last agreed on, in the target's names.
    source_data       jsonb,
    target_data       jsonb,
    base              jsonb,
    -- The fields the two sides disagree on.
    fields            text[] NOT NULL,
    resolution        text CHECK (resolution IN ('source', 'target', 'merged', 'converged')),
    resolved_data     jsonb,
    resolved_by       text,
    resolved_at       timestamptz,
    -- Why the last resolution could not be written (the conflict is open again).
    error             text,
    -- When a run wrote the resolution to both sides.
    applied_at        timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- A record has at most one conflict not yet applied.
CREATE UNIQUE INDEX sync_conflicts_pending ON sync_conflicts (configuration_id, key)
    WHERE applied_at IS NULL;
CREATE INDEX sync_conflicts_list ON sync_conflicts (tenant_id, mode, id);
CREATE INDEX sync_conflicts_to_apply ON sync_conflicts (configuration_id, id)
    WHERE status = 'resolved' AND applied_at IS NULL;
CREATE INDEX sync_conflicts_applied ON sync_conflicts (applied_at) WHERE applied_at IS NOT NULL;
