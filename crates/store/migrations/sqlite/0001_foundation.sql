-- Inventory: every certificate issued, imported or belonging to a CA of ours.
CREATE TABLE certificates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    serial TEXT NOT NULL,
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    common_name TEXT,
    sans TEXT NOT NULL,
    san_search TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    key_algorithm TEXT NOT NULL,
    spki_sha256 TEXT NOT NULL,
    fingerprint_sha256 TEXT NOT NULL,
    profile TEXT,
    tenant TEXT NOT NULL,
    requester TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    labels TEXT NOT NULL,
    der BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
-- The same certificate may be known to several tenants, once each.
CREATE UNIQUE INDEX certificates_tenant_fingerprint ON certificates (tenant, fingerprint_sha256);
CREATE INDEX certificates_serial ON certificates (serial);
CREATE INDEX certificates_not_after ON certificates (not_after, id);
CREATE INDEX certificates_tenant_not_after ON certificates (tenant, not_after, id);
CREATE INDEX certificates_spki ON certificates (spki_sha256);

CREATE TABLE certificate_labels (
    certificate_id BIGINT NOT NULL REFERENCES certificates (id),
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (certificate_id, name)
);
CREATE INDEX certificate_labels_name_value ON certificate_labels (name, value, certificate_id);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    tenant TEXT,
    secret_sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

-- One row: the last entry of the audit chain. Locking it serialises appends across processes.
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
