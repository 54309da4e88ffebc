-- The tamper-evident audit log (see host/src/audit.rs): append-only, each
-- record hashing the one before it. Metadata only.
CREATE TABLE audit (
    id        INTEGER PRIMARY KEY,   -- storage order
    seq       INTEGER NOT NULL,      -- the record's number, from 1
    at        INTEGER NOT NULL,      -- Unix seconds
    event     TEXT NOT NULL,         -- canonical JSON
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_seq ON audit (seq);

-- Admin API tokens: only a SHA-256 of each token is kept.
CREATE TABLE api_tokens (
    name        TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

-- Webhook deliveries already handled, so a redelivery runs once.
CREATE TABLE deliveries (
    source      TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (source, delivery_id)
) WITHOUT ROWID;
