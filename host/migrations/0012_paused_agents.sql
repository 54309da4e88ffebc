-- Agents an operator paused: they take no event (API, webhook or schedule)
-- until resumed. Only the admin API writes it; an agent cannot.
CREATE TABLE paused_agents (
    agent     TEXT PRIMARY KEY,
    paused_by TEXT NOT NULL,
    paused_at INTEGER NOT NULL
) WITHOUT ROWID;

-- The audit log's record kind, for the dashboard's filter: a virtual
-- column computed from the record's JSON, and indexed, so listing one kind
-- newest first reads only that kind's rows.
ALTER TABLE audit ADD COLUMN kind TEXT GENERATED ALWAYS AS (json_extract(event, '$.kind')) VIRTUAL;
CREATE INDEX audit_kind ON audit (kind, seq);

-- When each key was last used, for the dashboard's key list: the newest
-- usage row of a key is one index lookup.
CREATE INDEX usage_key_at ON usage (key_id, at);
