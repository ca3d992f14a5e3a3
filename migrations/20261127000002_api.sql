-- Which API key created a task (producers may read only their own tasks).
ALTER TABLE tasks ADD COLUMN created_by text;
CREATE INDEX tasks_created_by ON tasks (created_by, id DESC);
CREATE INDEX tasks_status_updated ON tasks (status, updated_at DESC);

-- Log search covers the payload's strings and numbers too.
ALTER TABLE tasks DROP COLUMN search;
ALTER TABLE tasks ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('simple', name || ' ' || coalesce(last_error, ''))
    || jsonb_to_tsvector('simple', payload, '["string", "numeric"]')) STORED;
CREATE INDEX tasks_search ON tasks USING gin (search);

-- API keys: only a SHA-256 of the secret is stored; the secret is shown once at creation.
CREATE TABLE api_keys (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL,
    role       text        NOT NULL CHECK (role IN ('admin', 'operator', 'producer', 'viewer')),
    hash       text        NOT NULL UNIQUE,
    prefix     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text        NOT NULL,
    revoked_at timestamptz
);
