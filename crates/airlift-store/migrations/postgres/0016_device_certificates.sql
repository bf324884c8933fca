-- Devices authenticated by a TLS client certificate (docs/mtls.md): the
-- device is the key its certificate carries, named by the SHA-256 of the
-- certificate's SubjectPublicKeyInfo, so a certificate re-issued for the
-- same key stays the same device and no other key can ever act as it. A
-- device has at most one such key; the subject's common name is kept for
-- people. Inserted in the same transaction as the device row.
CREATE TABLE device_certificates (
    spki_sha256 TEXT PRIMARY KEY NOT NULL,
    device_id TEXT NOT NULL UNIQUE REFERENCES devices (id) ON DELETE CASCADE,
    subject_cn TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
