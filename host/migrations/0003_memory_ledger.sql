-- Budget holds now live in the memory of the one process that enforces
-- budgets for a state directory (see host.lock); the table is unused.
DROP TABLE IF EXISTS reservations;
