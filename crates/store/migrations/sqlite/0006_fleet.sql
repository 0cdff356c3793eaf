-- Host agents and fleet rollouts.

-- One-time bootstrap tokens: an agent enrolls with one, once, before it expires.
CREATE TABLE agent_bootstrap_tokens (
    id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    tenant TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    used_by TEXT
);

-- Enrolled agents and the serial of their identity certificate.
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tenant TEXT NOT NULL,
    status TEXT NOT NULL,
    identity_serial TEXT NOT NULL,
    previous_identity_serial TEXT,
    identity_not_after BIGINT NOT NULL,
    enrolled_at BIGINT NOT NULL,
    revoked_at BIGINT,
    trust_sha256 TEXT
);
CREATE UNIQUE INDEX agents_active_name ON agents (name) WHERE status = 'active';

-- A managed certificate an agent deploys to a local target, with what it last reported.
CREATE TABLE agent_bindings (
    agent_id TEXT NOT NULL,
    managed_name TEXT NOT NULL,
    target TEXT NOT NULL,
    deployed_serial TEXT,
    attempted_serial TEXT,
    attempt BIGINT NOT NULL,
    error TEXT,
    reported_at BIGINT NOT NULL,
    PRIMARY KEY (agent_id, managed_name)
);
CREATE INDEX agent_bindings_managed ON agent_bindings (managed_name);

-- What agents receive for a serial: certificate, chain, and the key sealed under the
-- data directory's key-encryption key.
CREATE TABLE agent_payloads (
    managed_name TEXT NOT NULL,
    serial TEXT NOT NULL,
    certificate_pem TEXT NOT NULL,
    chain_pem TEXT NOT NULL,
    key_sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (managed_name, serial)
);

-- A new certificate on its way to the agents, wave by wave (times in milliseconds).
CREATE TABLE rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    managed_name TEXT NOT NULL,
    serial TEXT NOT NULL,
    previous_serial TEXT,
    state TEXT NOT NULL,
    urgent BIGINT NOT NULL,
    current_wave BIGINT NOT NULL,
    last_wave BIGINT NOT NULL,
    wave_released_at BIGINT NOT NULL,
    reason TEXT,
    requested_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX rollouts_managed ON rollouts (managed_name, id);
CREATE INDEX rollouts_state ON rollouts (state);

CREATE TABLE rollout_agents (
    rollout_id BIGINT NOT NULL,
    agent_id TEXT NOT NULL,
    wave BIGINT NOT NULL,
    previous_serial TEXT,
    confirmed_at BIGINT,
    PRIMARY KEY (rollout_id, agent_id)
);

-- The serial every agent outside a running rollout serves.
ALTER TABLE managed_certificates ADD COLUMN fleet_serial TEXT;
-- When a key compromise was declared (ms) and not yet answered by a new certificate.
ALTER TABLE managed_certificates ADD COLUMN compromised_at BIGINT;

-- CA certificates handed to every agent's trust bundle ahead of their use (a new
-- intermediate or root), beside the root and issuing chain in force.
CREATE TABLE trust_anchors (
    fingerprint TEXT PRIMARY KEY,
    certificate_pem TEXT NOT NULL,
    subject TEXT NOT NULL,
    not_after BIGINT NOT NULL,
    added_by TEXT NOT NULL,
    added_at BIGINT NOT NULL
);
