-- Failed sign-in counters, per account (keyed by the username as typed, so
-- unknown names are throttled exactly like real ones) and per client address.
CREATE TABLE login_throttle (
    scope           text NOT NULL CHECK (scope IN ('account', 'client')),
    key             text NOT NULL,
    failures        integer NOT NULL DEFAULT 0,
    first_failure_at timestamptz NOT NULL,
    last_failure_at timestamptz NOT NULL,
    locked_until    timestamptz,
    PRIMARY KEY (scope, key)
);
