-- Issue 18 §1: OIDC sign-in.
--
-- An account created by its first OIDC sign-in is linked to the provider's
-- (issuer, subject) pair; the username is only a label. Its password_hash is
-- '!oidc', which is no PHC string, so no password ever opens it.
ALTER TABLE users
    ADD COLUMN oidc_issuer  text,
    ADD COLUMN oidc_subject text,
    ADD CONSTRAINT users_oidc_identity_key UNIQUE (oidc_issuer, oidc_subject),
    ADD CONSTRAINT users_oidc_pair CHECK ((oidc_issuer IS NULL) = (oidc_subject IS NULL));

-- A browser session made by an OIDC sign-in, re-checked with the provider
-- (refresh-token grant) at least every `oidc.recheck_secs`. The refresh token
-- is sealed with AES-256-GCM under a key kept in OpenBao (never stored in
-- clear); the row goes with its session.
CREATE TABLE oidc_sessions (
    session_id      uuid PRIMARY KEY REFERENCES user_sessions (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_token   bytea,
    next_check_at   timestamptz NOT NULL,
    last_checked_at timestamptz
);

CREATE INDEX oidc_sessions_due_idx ON oidc_sessions (next_check_at);
