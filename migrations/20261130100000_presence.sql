-- Proof of presence (issue 12, §2). A device's secrets are released only to
-- an agent whose card has just signed a server nonce, bound to the operation
-- and to the agent key the secrets will be encrypted to, with the attested
-- P-256 key in the retired slot 95 recorded here.

-- DER SubjectPublicKeyInfo of the presence key; NULL until the first
-- operation establishes it (factory card), and again after a PIV reset.
ALTER TABLE devices
    ADD COLUMN presence_public_key bytea,
    ADD COLUMN presence_established_at timestamptz;

-- One challenge per operation (or per resume of an unconfirmed change):
-- single use, short-lived, bound to the session and its agent key.
CREATE TABLE presence_challenges (
    id                    uuid PRIMARY KEY,
    operation_id          uuid NOT NULL,
    device_serial         bigint NOT NULL REFERENCES devices (serial),
    purpose               text NOT NULL CHECK (purpose IN ('authorize', 'resume')),
    kind                  text NOT NULL,
    -- The operation request without any PIN the person typed (that one is
    -- sent again with the proof and never stored).
    request               jsonb NOT NULL DEFAULT '{}'::jsonb,
    user_id               uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id            uuid NOT NULL,
    agent_key_fingerprint text NOT NULL,
    nonce                 bytea NOT NULL CHECK (length(nonce) = 32),
    establish             boolean NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    expires_at            timestamptz NOT NULL,
    used_at               timestamptz
);

CREATE INDEX presence_challenges_operation_idx ON presence_challenges (operation_id);
CREATE INDEX presence_challenges_expiry_idx ON presence_challenges (expires_at);
