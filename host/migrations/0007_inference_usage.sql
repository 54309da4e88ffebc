-- Inference on real servers: prompt-cache token counts, estimated usage
-- (a server that reported no token counts), and which model of a binding's
-- fallback chain answered (0 for the binding's own).
ALTER TABLE usage ADD COLUMN cache_read_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN fallback INTEGER NOT NULL DEFAULT 0;
