-- Worker processes, as they report themselves every few seconds (GET /admin/v1/workers, the
-- dashboard): who they are, what they consume, how busy they are. A worker that stops cleanly
-- says so; one that vanished just stops reporting. Rows not seen for the job retention go.
CREATE TABLE workers (
    -- The process's lease owner name (host-pid-nonce): unique per start.
    id            text PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    version       text NOT NULL,
    -- [{"queue": "webhook_deliveries", "concurrency": 32}, …]
    queues        jsonb NOT NULL,
    -- Jobs running in the process at its last report.
    busy          integer NOT NULL DEFAULT 0,
    started_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz
);
CREATE INDEX workers_last_seen ON workers (last_seen_at);
