-- The sealed private key of a managed certificate that keeps its key across renewals
-- (key.rotate = false): AES-256-GCM under the data directory's key-encryption key.
ALTER TABLE managed_certificates ADD COLUMN key_sealed TEXT;
