-- Usage accounting and budget reservations. Metadata only: never prompts,
-- responses or keys.

CREATE TABLE usage (
    id            INTEGER PRIMARY KEY,
    at            INTEGER NOT NULL,          -- Unix seconds
    agent         TEXT NOT NULL,
    binding       TEXT NOT NULL,
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    key_id        TEXT,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_micros   INTEGER NOT NULL,          -- millionths of a US dollar
    latency_ms    INTEGER NOT NULL,
    outcome       TEXT NOT NULL              -- ok, or the error kind
);
CREATE INDEX usage_agent_at ON usage (agent, at);

-- The worst-case cost of calls in flight, held until they settle.
CREATE TABLE reservations (
    id          INTEGER PRIMARY KEY,
    agent       TEXT NOT NULL,
    tokens      INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX reservations_agent ON reservations (agent);

-- Running totals per agent and calendar window, so a budget check reads two
-- rows instead of summing the day's or month's usage.
CREATE TABLE usage_totals (
    agent        TEXT NOT NULL,
    window       TEXT NOT NULL CHECK (window IN ('day', 'month')),
    window_start INTEGER NOT NULL,
    tokens       INTEGER NOT NULL,
    cost_micros  INTEGER NOT NULL,
    PRIMARY KEY (agent, window, window_start)
) WITHOUT ROWID;
