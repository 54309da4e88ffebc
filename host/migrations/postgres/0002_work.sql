-- Events on the cluster's work queue, claimed by the daemon running them:
-- an event is completed once, keyed by its id. Metadata only: never an
-- event's payload or result. Completed rows are pruned after a day; a
-- redelivery (the only reason to look one up) comes within minutes.
CREATE TABLE work_items (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    daemon TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'done')),
    -- Bumped by every claim: the running daemon's proof that the claim
    -- is still its own.
    attempts INTEGER NOT NULL,
    -- The JetStream delivery the claim was made on: a later delivery may
    -- take the event over (JetStream redelivers only when its runner
    -- stopped showing progress).
    delivery BIGINT NOT NULL DEFAULT 1,
    outcome TEXT CHECK (outcome IN ('ok', 'error')),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ
);
CREATE INDEX work_items_done ON work_items (finished_at) WHERE state = 'done';
