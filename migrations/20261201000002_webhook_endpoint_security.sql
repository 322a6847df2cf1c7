-- Webhook engine, part 2: secret rotation with a grace period, optional ed25519 signing, and
-- endpoint authentication (custom headers, basic, bearer). Everything secret is sealed with
-- AES-256-GCM and bound to its endpoint row (DESIGN §3).

ALTER TABLE webhook_endpoints
    -- Secrets replaced by a rotation that still sign until they expire:
    -- [{"key_id": …, "sealed": <base64>, "expires_at": <RFC 3339>}], newest first, at most 10.
    ADD COLUMN previous_secrets       jsonb NOT NULL DEFAULT '[]',
    -- ed25519 signing (`v1a`): the sealed PKCS#8 key pair and the published `whpk_` key.
    ADD COLUMN ed25519_ciphertext     bytea,
    ADD COLUMN ed25519_key_id         text,
    ADD COLUMN ed25519_public_key     text,
    -- Sealed JSON of the custom headers ({name: value}) and of the auth
    -- ({"type": "basic", "username", "password"} or {"type": "bearer", "token"}).
    ADD COLUMN headers_ciphertext     bytea,
    ADD COLUMN headers_key_id         text,
    ADD COLUMN auth_ciphertext        bytea,
    ADD COLUMN auth_key_id            text,
    -- What the API shows of it: header names and the auth type, never values.
    ADD COLUMN header_names           text[] NOT NULL DEFAULT '{}',
    ADD COLUMN auth_type              text CHECK (auth_type IN ('basic', 'bearer'));
