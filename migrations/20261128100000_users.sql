-- People who sign in to Kleidia. Passwords are Argon2id PHC strings; the
-- username is stored lower-case and is unique.
CREATE TABLE users (
    id                   uuid PRIMARY KEY,
    username             text NOT NULL CONSTRAINT users_username_key UNIQUE
                         CHECK (username ~ '^[a-z0-9][a-z0-9._@-]{0,63}$'),
    display_name         text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    email                text CHECK (email IS NULL OR length(email) <= 254),
    role                 text NOT NULL CHECK (role IN ('admin', 'helpdesk', 'auditor', 'user')),
    password_hash        text NOT NULL,
    -- Set when an administrator (or the CLI) chose the password: the person
    -- is sent to change it at their next sign-in.
    must_change_password boolean NOT NULL DEFAULT false,
    disabled             boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    last_login_at        timestamptz
);

-- Searching by name in the user list.
CREATE INDEX users_display_name_idx ON users (lower(display_name));
