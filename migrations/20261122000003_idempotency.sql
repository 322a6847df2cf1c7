-- Idempotency keys (Stripe semantics): the first response to a POST/PATCH carrying an
-- `Idempotency-Key` is kept and replayed for retries with the same key.

CREATE TABLE idempotency_keys (
    tenant_id      uuid NOT NULL,
    mode           text NOT NULL,
    key            text NOT NULL,
    method         text NOT NULL,
    path           text NOT NULL,
    -- SHA-256 of the method, path and canonical JSON body: a reuse with other parameters is refused.
    request_hash   bytea NOT NULL,
    state          text NOT NULL CHECK (state IN ('started', 'finished')),
    -- Identifies the request holding a `started` claim, which lapses at `locked_until` (a crashed
    -- request must not block its key forever).
    claim_id       uuid NOT NULL,
    locked_until   timestamptz NOT NULL,
    response_status        integer,
    response_content_type  text,
    -- AES-256-GCM under the master keyring (a response may hold a secret shown once, or PII).
    response_body          bytea,
    response_key_id        text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, mode, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
