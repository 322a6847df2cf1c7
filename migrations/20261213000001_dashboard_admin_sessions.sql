-- A dashboard session opened with the admin token holds a mark of that token (an HMAC under
-- the server's pepper) and ends when the deployment's admin token changes
-- (shared/src/operators/sessions.rs). Admin-token sessions from before hold none: they end now,
-- and their browsers sign in again.
DELETE FROM dashboard_sessions WHERE operator_id IS NULL;
ALTER TABLE dashboard_sessions ADD COLUMN admin_token_mark bytea;
ALTER TABLE dashboard_sessions ADD CONSTRAINT dashboard_sessions_admin_token_mark
    CHECK ((operator_id IS NULL) = (admin_token_mark IS NOT NULL));
