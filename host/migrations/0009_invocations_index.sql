-- The invocation list joins usage by event (usage_event); nothing looks an
-- invocation up by its event id, so this index only slowed every insert.
DROP INDEX IF EXISTS invocations_event;
