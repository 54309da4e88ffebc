-- Token roles: admin (every route), publish (the registry, in the
-- namespaces of publish_namespaces), viewer (every read of the admin API
-- and the registry, and nothing that changes state).
ALTER TABLE api_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'
    CHECK (role IN ('admin', 'publish', 'viewer'));
UPDATE api_tokens SET role = 'publish' WHERE publish_namespaces IS NOT NULL;
