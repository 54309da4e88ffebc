-- Publisher tokens: NULL is an admin token (every route); otherwise a
-- comma-separated list of the namespaces the token may push to and pull
-- from over /v2/ ("*" for every namespace), and nothing else.
ALTER TABLE api_tokens ADD COLUMN publish_namespaces TEXT;
