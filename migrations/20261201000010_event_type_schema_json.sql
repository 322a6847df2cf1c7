-- An event type's schema is the tenant's document, kept as written: `json` stores its text,
-- where `jsonb` would turn numbers into `numeric` and print them back in forms (hundreds of
-- digits) that no longer read as the JSON numbers the tenant sent.
ALTER TABLE event_types ALTER COLUMN schema TYPE json USING schema::json;
