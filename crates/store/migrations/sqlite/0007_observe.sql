-- What `certkeeper scan` and scheduled scans saw at each TLS endpoint (the latest scan).
CREATE TABLE scan_endpoints (
    tenant TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    server_name TEXT NOT NULL,
    scanned_at BIGINT NOT NULL,
    scanner TEXT NOT NULL,
    certificate_id BIGINT,
    serial TEXT,
    not_after BIGINT,
    findings TEXT NOT NULL,
    valid BIGINT NOT NULL,
    error TEXT,
    PRIMARY KEY (tenant, endpoint, server_name)
);

-- Silences of built-in alerts: every alert whose labels match all matchers is held back
-- between starts_at and ends_at.
CREATE TABLE alert_silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    comment TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- `/metrics` gives the soonest-expiring managed certificates their own series.
CREATE INDEX managed_certificates_not_after ON managed_certificates (not_after);

-- `/metrics` counts certificates by status and expiry window (all tenants, then the system
-- tenant's own to take off), and managed certificates by state, from these indexes alone.
CREATE INDEX certificates_status_not_after ON certificates (status, not_after);
CREATE INDEX certificates_tenant_status_not_after ON certificates (tenant, status, not_after);
CREATE INDEX managed_certificates_state ON managed_certificates (state);

-- The dashboard counts the week's denials without reading the whole audit log.
CREATE INDEX audit_log_outcome_at ON audit_log (outcome, at_ms);
