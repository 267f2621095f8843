-- Expiry notices (issue 18 §4): what each recipient has been told in a
-- period (`notices.interval_secs` long; a day by default), so that however
-- many replicas run the job, and however often an admin presses "Send now",
-- one thing reaches one recipient once a period. The replicas also take a
-- transaction-scoped advisory lock for the run, so two never send at once.
--
-- `recipient` is `user:<uuid>` or `webhook`; `item` is the certificate id for
-- an expiring certificate and '' for a key on factory credentials.
CREATE TABLE notices_sent (
    period     bigint NOT NULL,
    recipient  text NOT NULL,
    serial     bigint NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('certificate_expiring', 'factory_credentials')),
    item       text NOT NULL,
    sent_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (period, recipient, serial, kind, item)
);

CREATE INDEX notices_sent_at_idx ON notices_sent (sent_at);
