-- The durable record of every task. Redis holds the live queues; this is what survives.
CREATE TABLE tasks (
    id              uuid PRIMARY KEY,
    queue           text        NOT NULL,
    name            text        NOT NULL,
    payload         jsonb       NOT NULL,
    priority        smallint    NOT NULL CHECK (priority BETWEEN 0 AND 100),
    status          text        NOT NULL CHECK (status IN
                      ('scheduled', 'queued', 'running', 'retrying', 'completed', 'dead', 'cancelled')),
    run_at          timestamptz NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    max_attempts    integer     NOT NULL,
    backoff         jsonb       NOT NULL,
    timeout_ms      bigint      NOT NULL,
    idempotency_key text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    -- Outbox stream position of the last transition applied: audit writers may apply batches
    -- out of order; an older event never overwrites a newer state.
    event_seq       bigint      NOT NULL DEFAULT 0,
    search          tsvector GENERATED ALWAYS AS (
                      to_tsvector('simple', name || ' ' || coalesce(last_error, ''))) STORED
);
CREATE INDEX tasks_queue_status ON tasks (queue, status);
CREATE INDEX tasks_created ON tasks (created_at DESC, id DESC);
CREATE INDEX tasks_search ON tasks USING gin (search);

-- One row per attempt. No foreign key: the audit writer must never be wedged by one bad row.
CREATE TABLE task_attempts (
    task_id     uuid        NOT NULL,
    attempt     integer     NOT NULL,
    worker      text,
    started_at  timestamptz,
    finished_at timestamptz,
    outcome     text CHECK (outcome IN ('completed', 'failed', 'lost', 'released', 'cancelled')),
    error       text,
    detail      text,
    PRIMARY KEY (task_id, attempt)
);

-- Idempotency keys, deduplicated per queue within a retention window.
CREATE TABLE idempotency_keys (
    queue      text        NOT NULL,
    key        text        NOT NULL,
    task_id    uuid        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (queue, key)
);

-- Manual actions (cancel, retry-now, redrive, ...) and who did them.
CREATE TABLE audit_log (
    id      bigserial   PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text        NOT NULL,
    action  text        NOT NULL,
    task_id uuid,
    detail  jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_task ON audit_log (task_id);
