-- Issue 14 §6: a plain user registers a YubiKey to themselves only with the
-- card present. The server hands the agent a presence challenge for the
-- card (a single-use nonce, bound to the session and its agent key); the
-- card makes its attested presence key (slot 95) and signs the nonce, and
-- the device is registered under the serial in that attestation. No device
-- row exists yet, hence a table of its own (no foreign key to devices).
CREATE TABLE registration_challenges (
    id                    uuid PRIMARY KEY,
    -- The serial the agent was told to use; the attestation must name it.
    serial                bigint NOT NULL,
    user_id               uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id            uuid NOT NULL,
    agent_key_fingerprint text NOT NULL,
    nonce                 bytea NOT NULL CHECK (length(nonce) = 32),
    created_at            timestamptz NOT NULL DEFAULT now(),
    expires_at            timestamptz NOT NULL,
    used_at               timestamptz
);

CREATE INDEX registration_challenges_expiry_idx ON registration_challenges (expires_at);
