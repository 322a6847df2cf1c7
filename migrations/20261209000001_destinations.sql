-- Destinations beyond signed HTTP webhooks (README, "Destinations"): an endpoint's kind, its
-- settings and, sealed apart from them, the settings that are secrets. For kinds other than
-- `http`, `url` holds where deliveries go without any secret (`amqp://host:5672`,
-- `mailto:ops@example.com`), for lists and the dashboard.
ALTER TABLE webhook_endpoints
    ADD COLUMN kind text NOT NULL DEFAULT 'http'
        CHECK (kind IN ('http', 'slack', 'discord', 'email', 'rabbitmq', 'nats', 'http_action')),
    ADD COLUMN config jsonb,
    ADD COLUMN config_secret_names text[] NOT NULL DEFAULT '{}',
    ADD COLUMN config_key_id text,
    ADD COLUMN config_ciphertext bytea;
