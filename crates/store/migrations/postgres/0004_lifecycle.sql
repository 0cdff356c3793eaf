-- Managed certificates: the declaration (JSON), what is in force, and when to act next.
CREATE TABLE managed_certificates (
    name TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    current_serial TEXT,
    not_after BIGINT,
    next_action_at BIGINT NOT NULL,
    next_action_reason TEXT NOT NULL,
    consecutive_failures BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    targets TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- Due work is found through this index, never by scanning every managed certificate.
CREATE INDEX managed_certificates_due ON managed_certificates (next_action_at);

-- Every renewal attempt, for status and the renewal success rate.
CREATE TABLE renewal_attempts (
    id BIGSERIAL PRIMARY KEY,
    managed_name TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    issuer TEXT NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    serial TEXT
);
CREATE INDEX renewal_attempts_managed ON renewal_attempts (managed_name, id);
