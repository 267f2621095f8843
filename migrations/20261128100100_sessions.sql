-- One row per signed-in session, browser or API.
--
-- Browser sessions are tower-sessions records (`token_hash` = SHA-256 of the
-- cookie's session id; the cookie value itself is never stored) with
-- Kleidia's own columns beside them. API sessions are created by
-- POST /api/auth/login; the JWT names the row in its `sid` claim, so deleting
-- the row (logout, account disabled, expiry) revokes the token at once.
-- The workstation agent's public key lives and dies with the row.
CREATE TABLE user_sessions (
    id                    uuid PRIMARY KEY,
    user_id               uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind                  text NOT NULL CHECK (kind IN ('browser', 'api')),
    token_hash            bytea CONSTRAINT user_sessions_token_hash_key UNIQUE,
    data                  jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at            timestamptz NOT NULL DEFAULT now(),
    last_seen_at          timestamptz NOT NULL DEFAULT now(),
    -- Idle expiry, moved forward on use but never past the absolute expiry.
    expires_at            timestamptz NOT NULL,
    absolute_expires_at   timestamptz NOT NULL,
    ip                    text,
    user_agent            text,
    agent_pubkey          text,
    agent_key_fingerprint text
);

CREATE INDEX user_sessions_user_idx ON user_sessions (user_id);
CREATE INDEX user_sessions_expires_idx ON user_sessions (expires_at);
