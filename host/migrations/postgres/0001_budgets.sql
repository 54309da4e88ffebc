-- Budgets shared by every daemon of a cluster.
--
-- For each agent and window (a UTC day or month, by its start in Unix
-- seconds): what calls have used (settled) and what daemons hold in leases
-- (leased). A daemon takes a slice only when settled + leased + slice stays
-- within the limit, with both windows' rows locked, so together the daemons
-- can never let more than the limit through.
CREATE TABLE budget_windows (
    agent TEXT NOT NULL,
    span TEXT NOT NULL CHECK (span IN ('day', 'month')),
    start_at BIGINT NOT NULL,
    settled_tokens BIGINT NOT NULL DEFAULT 0 CHECK (settled_tokens >= 0),
    settled_cost_micros BIGINT NOT NULL DEFAULT 0 CHECK (settled_cost_micros >= 0),
    leased_tokens BIGINT NOT NULL DEFAULT 0 CHECK (leased_tokens >= 0),
    leased_cost_micros BIGINT NOT NULL DEFAULT 0 CHECK (leased_cost_micros >= 0),
    PRIMARY KEY (agent, span, start_at)
);

-- The slice one daemon holds for one agent and day (and the month that day
-- is in): what it has not reported yet. The daemon renews it every second,
-- reporting what its calls used. A lease not renewed within the grace
-- period belongs to a daemon that is gone; any daemon reclaims it and counts
-- its unreported remainder as spent, since calls may have used it.
CREATE TABLE budget_leases (
    daemon TEXT NOT NULL,
    agent TEXT NOT NULL,
    day_start BIGINT NOT NULL,
    month_start BIGINT NOT NULL,
    tokens BIGINT NOT NULL CHECK (tokens >= 0),
    cost_micros BIGINT NOT NULL CHECK (cost_micros >= 0),
    renewed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (daemon, agent, day_start)
);
CREATE INDEX budget_leases_by_agent ON budget_leases (agent, renewed_at);
