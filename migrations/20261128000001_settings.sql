-- Kleidia's policies and instance settings, one JSON document per key.
-- Changes are audited by the application (audit_log arrives with the identity layer).
CREATE TABLE settings (
    key         text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_.]{0,63}$'),
    value       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
