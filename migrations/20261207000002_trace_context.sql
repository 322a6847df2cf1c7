-- W3C trace context (`traceparent`) of the request that wrote an event, copied to its message:
-- every attempt of the message sends a child of it (shared/src/telemetry/trace.rs). NULL for
-- events written by background work.
ALTER TABLE events ADD COLUMN traceparent text;
ALTER TABLE webhook_messages ADD COLUMN traceparent text;
