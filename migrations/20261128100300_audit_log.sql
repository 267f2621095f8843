-- The audit log: append-only and hash-chained. Row n stores prev_hash (the
-- hash of row n-1, 32 zero bytes for row 1) and
-- hash = SHA-256(prev_hash || canonical content of row n); see app/src/audit.
-- `id` is the position in the chain, gap-free; a writer takes the chain head
-- row FOR UPDATE in its own transaction, so concurrent writers queue instead
-- of forking the chain, and the head also reveals a deleted last row.
CREATE TABLE audit_log (
    id          bigint PRIMARY KEY CHECK (id > 0),
    created_at  timestamptz NOT NULL,
    actor_id    uuid,
    actor_name  text NOT NULL,
    action      text NOT NULL,
    target_type text,
    target_id   text,
    details     jsonb NOT NULL,
    ip          text,
    prev_hash   bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash        bytea NOT NULL CHECK (length(hash) = 32)
);

CREATE INDEX audit_log_created_idx ON audit_log (created_at, id);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_name, id);
CREATE INDEX audit_log_action_idx ON audit_log (action, id);
CREATE INDEX audit_log_target_idx ON audit_log (target_type, target_id, id);

CREATE TABLE audit_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_id   bigint NOT NULL,
    last_hash bytea NOT NULL
);
INSERT INTO audit_head (singleton, last_id, last_hash) VALUES (true, 0, decode(repeat('00', 32), 'hex'));

-- Append-only for the application: rows are never updated or deleted. (The
-- table owner can still disable the trigger; `kleidia audit verify` is what
-- detects that kind of tampering.)
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
