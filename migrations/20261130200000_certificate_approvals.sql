-- Certificates in another person's name (issue 12 §2). A key generation on a
-- device whose owner is not the requester waits for the owner's confirmation
-- (from the owner's own session) or the approval of an admin who is not the
-- requester, when the policy's `certificate_approval` asks for it.
--
-- An approval is bound to (device, requester, slot) and to the owner at the
-- time of the request, expires, and is used by at most one key generation
-- (`operation_id`). User ids are kept without a foreign key, as in the audit
-- log: the record outlives the accounts.
CREATE TABLE certificate_approvals (
    id              uuid PRIMARY KEY,
    device_serial   bigint NOT NULL REFERENCES devices (serial),
    slot            text NOT NULL CHECK (slot IN ('9a', '9c', '9d', '9e')),
    requester_id    uuid NOT NULL,
    requester_name  text NOT NULL,
    owner_id        uuid NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'approved', 'rejected', 'used')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    decided_by      uuid,
    decided_by_name text,
    decided_at      timestamptz,
    -- The key generation that used the approval.
    operation_id    uuid,
    used_at         timestamptz,
    CONSTRAINT certificate_approvals_not_own_request CHECK (owner_id <> requester_id),
    -- Whoever asked never decides.
    CONSTRAINT certificate_approvals_not_self_approved CHECK (decided_by IS DISTINCT FROM requester_id),
    CONSTRAINT certificate_approvals_decided CHECK (
        (status = 'pending') = (decided_at IS NULL)
        AND (decided_at IS NULL) = (decided_by IS NULL)),
    CONSTRAINT certificate_approvals_used CHECK (
        (status = 'used') = (operation_id IS NOT NULL)
        AND (operation_id IS NULL) = (used_at IS NULL))
);

CREATE INDEX certificate_approvals_lookup_idx
    ON certificate_approvals (device_serial, requester_id, slot, created_at DESC);
CREATE INDEX certificate_approvals_owner_idx ON certificate_approvals (owner_id, created_at DESC);
CREATE INDEX certificate_approvals_created_idx ON certificate_approvals (created_at DESC);

-- The request is never rewritten and rows are never deleted; the status only
-- moves forward (pending → approved | rejected, approved → used), a decision
-- and a use are written once, and the expiry can only come sooner. Every
-- change is also in the audit log.
CREATE FUNCTION certificate_approvals_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'TRUNCATE') THEN
        RAISE EXCEPTION 'a certificate approval is never deleted';
    END IF;
    IF NEW.id <> OLD.id OR NEW.device_serial <> OLD.device_serial OR NEW.slot <> OLD.slot
       OR NEW.requester_id <> OLD.requester_id OR NEW.requester_name <> OLD.requester_name
       OR NEW.owner_id <> OLD.owner_id OR NEW.created_at <> OLD.created_at THEN
        RAISE EXCEPTION 'a certificate approval request is never rewritten';
    END IF;
    IF NEW.expires_at > OLD.expires_at THEN
        RAISE EXCEPTION 'a certificate approval is never extended';
    END IF;
    IF NEW.status <> OLD.status THEN
        IF NOT ((OLD.status = 'pending' AND NEW.status IN ('approved', 'rejected'))
                OR (OLD.status = 'approved' AND NEW.status = 'used')) THEN
            RAISE EXCEPTION 'a certificate approval cannot go from % to %', OLD.status, NEW.status;
        END IF;
    END IF;
    IF OLD.decided_at IS NOT NULL AND (NEW.decided_at IS DISTINCT FROM OLD.decided_at
       OR NEW.decided_by IS DISTINCT FROM OLD.decided_by
       OR NEW.decided_by_name IS DISTINCT FROM OLD.decided_by_name) THEN
        RAISE EXCEPTION 'a certificate approval is decided once';
    END IF;
    IF OLD.operation_id IS NOT NULL AND (NEW.operation_id IS DISTINCT FROM OLD.operation_id
       OR NEW.used_at IS DISTINCT FROM OLD.used_at) THEN
        RAISE EXCEPTION 'a certificate approval is used once';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER certificate_approvals_guard BEFORE UPDATE OR DELETE ON certificate_approvals
    FOR EACH ROW EXECUTE FUNCTION certificate_approvals_guard();
CREATE TRIGGER certificate_approvals_no_truncate BEFORE TRUNCATE ON certificate_approvals
    FOR EACH STATEMENT EXECUTE FUNCTION certificate_approvals_guard();
