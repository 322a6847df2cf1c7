-- The scheduler (shared::schedule): periodic jobs enqueued exactly once per slot by any number
-- of worker replicas. A slot's job carries the key `<schedule>@<slot>`; the unique index makes
-- every replica but one insert nothing.
ALTER TABLE jobs ADD COLUMN unique_key text;
CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key) WHERE unique_key IS NOT NULL;

-- How far each schedule got: catch-up after every replica was down starts here.
CREATE TABLE schedules (
    id          text PRIMARY KEY,
    last_slot   timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
