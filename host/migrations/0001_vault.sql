-- The key vault. Secrets are stored only as AES-256-GCM ciphertext; see
-- host/src/vault.rs for the scheme.

-- One row that proves the master key: a known plaintext sealed with it.
CREATE TABLE vault_check (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE keys (
    id          TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    -- HMAC of the secret under a key derived from the master key: lets an
    -- operator tell keys apart without revealing anything about them.
    fingerprint TEXT NOT NULL,
    -- NULL once revoked: the ciphertext is deleted, the metadata kept.
    nonce       BLOB,
    ciphertext  BLOB,
    created_at  INTEGER NOT NULL,
    rotated_at  INTEGER,
    revoked_at  INTEGER,
    CHECK ((nonce IS NULL) = (ciphertext IS NULL))
);
