-- Dashboard sign-ins. The cookie holds a random secret; only its SHA-256 is stored, so a copy
-- of this table opens no session. A session remembers which API key signed in (by the key's
-- hash): revoking the key ends its sessions at once, and the role is the key's, read live.
-- In Postgres rather than Redis so that sessions outlive a dashboard restart and a Redis that
-- lost its data (the queues are rebuilt from Postgres then; nobody should be signed out).
CREATE TABLE dashboard_sessions (
    id_hash    text        PRIMARY KEY,
    key_id     text        NOT NULL,
    key_hash   text        NOT NULL,
    csrf       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions (expires_at);

-- Attempts finished per minute (the dashboard's throughput chart) are found by when they
-- started: the audit writer sets started_at once and never changes it, so this index keeps
-- attempt updates heap-only, and a BRIN index is a few pages however large the table grows.
CREATE INDEX task_attempts_started_brin ON task_attempts USING brin (started_at);
