-- Key containment.
-- A binding or grant suspended for one agent after a blocked leak, until an
-- operator resumes it. `kind` is `model` or `tool`; `name` the binding or
-- the tool as granted.
CREATE TABLE suspensions (
    agent TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    since INTEGER NOT NULL,
    event_id TEXT,
    view TEXT NOT NULL,
    -- The vault key that came back: every binding or grant of the agent
    -- that sends it is suspended with this one.
    key_id TEXT,
    PRIMARY KEY (agent, kind, name)
);
-- A key's value before its last rotation, sealed like the current one, so
-- a call still in flight with the old value is scanned for it too. Cleared
-- by revocation and replaced by the next rotation.
ALTER TABLE keys ADD COLUMN previous_nonce BLOB;
ALTER TABLE keys ADD COLUMN previous_ciphertext BLOB;
