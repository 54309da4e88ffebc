-- Invocations: one row per event an agent ran in the daemon, metadata only
-- (never the payload or the result), for the operator's list of recent
-- invocations. Bounded: the daemon keeps the newest rows only.
CREATE TABLE invocations (
    id          INTEGER PRIMARY KEY,
    event_id    TEXT NOT NULL,
    agent       TEXT NOT NULL,
    source      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    started_at  INTEGER NOT NULL,           -- Unix milliseconds
    duration_ms INTEGER NOT NULL,
    outcome     TEXT NOT NULL               -- ok, or the error kind
);
CREATE INDEX invocations_agent ON invocations (agent, id);
CREATE INDEX invocations_event ON invocations (event_id);

-- Model calls name their event, so an invocation's tokens and cost add up.
ALTER TABLE usage ADD COLUMN event_id TEXT;
CREATE INDEX usage_event ON usage (event_id);
