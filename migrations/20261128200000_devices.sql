-- The YubiKey fleet (DESIGN §3). No PIN, PUK, management key or private key
-- is ever stored here: the escrowed secrets live in OpenBao KV v2
-- (yubikeys/data/{serial}/secrets); this schema only records which KV version
-- each device is known to hold.
CREATE TABLE devices (
    serial          bigint PRIMARY KEY CHECK (serial > 0 AND serial <= 4294967295),
    model           text NOT NULL DEFAULT 'YubiKey 5' CHECK (length(model) BETWEEN 1 AND 100),
    firmware        text CHECK (firmware ~ '^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$'),
    form_factor     text CHECK (length(form_factor) <= 50),
    owner_id        uuid REFERENCES users (id) ON DELETE SET NULL,
    state           text NOT NULL DEFAULT 'registered'
                    CHECK (state IN ('registered', 'active', 'suspended', 'lost', 'revoked', 'returned', 'retired')),
    -- KV v2 version of yubikeys/{serial}/secrets that the device confirmed;
    -- NULL while the device still has its factory credentials.
    secrets_version bigint CHECK (secrets_version > 0),
    enrolled_at     timestamptz,
    last_seen_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX devices_state_idx ON devices (state, serial);
CREATE INDEX devices_owner_idx ON devices (owner_id, serial);
CREATE INDEX devices_firmware_idx ON devices (firmware, serial);

-- One row per operation authorised for the agent. `id` is the ticket id.
CREATE TABLE operations (
    id                   uuid PRIMARY KEY,
    device_serial        bigint NOT NULL REFERENCES devices (serial),
    kind                 text NOT NULL CHECK (kind IN (
                             'set_pin', 'set_puk', 'unblock_pin', 'rotate_management_key',
                             'generate_csr', 'import_certificate', 'attest', 'reset')),
    actor_id             uuid REFERENCES users (id) ON DELETE SET NULL,
    actor_name           text NOT NULL,
    session_id           uuid,
    agent_key_fingerprint text,
    state                text NOT NULL DEFAULT 'pending'
                         CHECK (state IN ('pending', 'succeeded', 'failed')),
    params_hash          text,
    -- The escrow versions this operation moves between (secret-changing kinds).
    secrets_version_prev bigint,
    secrets_version_new  bigint,
    -- Non-secret facts: slot, algorithm, the agent's error code, …
    details              jsonb NOT NULL DEFAULT '{}'::jsonb,
    error                text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    ticket_expires_at    timestamptz,
    finished_at          timestamptz
);

CREATE INDEX operations_device_idx ON operations (device_serial, created_at DESC);
-- At most one unfinished secret change per device: the next one must know
-- which version the device holds.
CREATE UNIQUE INDEX operations_one_pending_secret_change
    ON operations (device_serial) WHERE state = 'pending' AND secrets_version_new IS NOT NULL;

CREATE TABLE certificates (
    id               uuid PRIMARY KEY,
    device_serial    bigint NOT NULL REFERENCES devices (serial),
    slot             text NOT NULL CHECK (slot IN ('9a', '9c', '9d', '9e')),
    -- As OpenBao writes it: colon-separated lowercase hex.
    serial_number    text NOT NULL CONSTRAINT certificates_serial_number_key UNIQUE,
    subject          text NOT NULL,
    key_algorithm    text NOT NULL,
    not_before       timestamptz NOT NULL,
    not_after        timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'issued' CHECK (status IN ('issued', 'revoked')),
    revoked_at       timestamptz,
    revocation_reason text,
    pem              text NOT NULL,
    operation_id     uuid REFERENCES operations (id),
    issued_by        uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX certificates_device_idx ON certificates (device_serial, slot, created_at DESC);
CREATE INDEX certificates_expiry_idx ON certificates (not_after) WHERE status = 'issued';
