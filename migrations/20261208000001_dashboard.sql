-- Operator accounts for the dashboard, and the dashboard's sign-in sessions.
--
-- An operator signs in with an email and a generated access secret (shown once, like an API
-- key: high-entropy, so it is stored as HMAC-SHA256 with the server's pepper, not a slow
-- password hash). Roles: `viewer` reads, `operator` also acts. Deleting an operator deletes
-- its sessions.
CREATE TABLE operators (
    id           uuid PRIMARY KEY,
    email        text NOT NULL,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('viewer', 'operator')),
    secret_hash  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX operators_email ON operators (lower(email));

-- A session is known by the hash of its cookie's token, never the token itself. Sessions of
-- the admin token have no operator. Purged once expired.
CREATE TABLE dashboard_sessions (
    token_hash   bytea PRIMARY KEY,
    operator_id  uuid REFERENCES operators ON DELETE CASCADE,
    role         text NOT NULL CHECK (role IN ('viewer', 'operator')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);

-- Dashboard actions of an operator account are audited as theirs.
ALTER TABLE audit_events DROP CONSTRAINT audit_events_actor_type_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_actor_type_check
    CHECK (actor_type IN ('admin', 'api_key', 'system', 'operator'));
