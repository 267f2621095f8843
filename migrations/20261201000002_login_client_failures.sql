-- Issue 14 §2: behind a load balancer everybody shares one address. The
-- lockout counts failures per (client address, account) in login_throttle
-- (scope 'account', key '<client> <account>'); the per-client limit counts
-- the DISTINCT accounts failing from one address (password spraying), one
-- row per (client, account) here, and only slows that address down.
CREATE TABLE login_client_failures (
    client          text NOT NULL,
    account         text NOT NULL,
    last_failure_at timestamptz NOT NULL,
    PRIMARY KEY (client, account)
);

CREATE INDEX login_client_failures_age_idx ON login_client_failures (last_failure_at);

-- Counters keyed by the account alone no longer mean anything.
DELETE FROM login_throttle WHERE scope = 'account' AND position(' ' in key) = 0;
