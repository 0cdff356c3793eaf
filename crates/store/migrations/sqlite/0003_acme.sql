-- ACME accounts, orders and authorizations: each one JSON document plus the columns that
-- look-ups use. `version` guards updates (optimistic concurrency).
CREATE TABLE acme_objects (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    tenant TEXT NOT NULL,
    account_id TEXT NOT NULL,
    lookup TEXT NOT NULL,
    status TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL
);
-- One account per key and tenant.
CREATE UNIQUE INDEX acme_accounts_key ON acme_objects (tenant, lookup) WHERE kind = 'account';
CREATE INDEX acme_objects_account ON acme_objects (account_id, kind, lookup, status, expires_at);
CREATE INDEX acme_objects_kind_lookup ON acme_objects (kind, lookup);
CREATE INDEX acme_objects_expires ON acme_objects (expires_at);

-- Nonces that were used (single use survives restarts); kept until they expire.
CREATE TABLE acme_used_nonces (
    nonce_id BIGINT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX acme_used_nonces_expires ON acme_used_nonces (expires_at);

-- External account binding keys, per tenant; each binds at most one account.
CREATE TABLE acme_eab_keys (
    kid TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    hmac_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at BIGINT,
    account_id TEXT
);

-- A certificate replaced through ACME ARI (`replaces`) points at its replacement.
ALTER TABLE certificates ADD COLUMN superseded_by BIGINT;
