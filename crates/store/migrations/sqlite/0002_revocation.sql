-- Revocation state on each certificate, and the index CRL generation reads.
ALTER TABLE certificates ADD COLUMN revoked_at BIGINT;
ALTER TABLE certificates ADD COLUMN revocation_reason BIGINT;
ALTER TABLE certificates ADD COLUMN invalidity_date BIGINT;
-- Which CRL partition (shard) lists this certificate when revoked.
ALTER TABLE certificates ADD COLUMN crl_shard BIGINT NOT NULL DEFAULT 0;
CREATE INDEX certificates_revoked ON certificates (issuer, status, crl_shard, not_after);
