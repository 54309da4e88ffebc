-- Operator overrides of agents' model bindings: the model and/or the key
-- an operator assigned to one binding, over what the agent's manifest
-- says. Only the admin API writes them; an agent cannot.
CREATE TABLE binding_overrides (
    agent   TEXT NOT NULL,
    binding TEXT NOT NULL,
    model   TEXT,
    key     TEXT,
    set_by  TEXT NOT NULL,
    set_at  INTEGER NOT NULL,
    PRIMARY KEY (agent, binding)
) WITHOUT ROWID;
