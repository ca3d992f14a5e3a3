-- Bulk operations (redrive the dead-letter queue, cancel or retry every task a filter selects)
-- run as jobs: a request records one row and answers 202 at once; any process running the
-- background services (or the tick) takes the job's lease and works through it a step at a
-- time. Each step's cursor, counts and the dead tasks whose SQS message is still to be removed
-- are committed together, so a job whose process died resumes at its last step once its lease
-- expires, and never counts a task twice.
CREATE TABLE jobs (
    id                    uuid        PRIMARY KEY,
    kind                  text        NOT NULL CHECK (kind IN ('redrive', 'cancel', 'retry')),
    -- The tasks it works on (queue, name, status, q, created_after/before, error group).
    selection             jsonb       NOT NULL,
    state                 text        NOT NULL DEFAULT 'queued'
                                      CHECK (state IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    phase                 text        NOT NULL DEFAULT 'tasks' CHECK (phase IN ('tasks', 'letters', 'done')),
    -- Who asked: the steps act as this key (manual actions are audited under its id).
    created_by            text        NOT NULL,
    created_role          text        NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    started_at            timestamptz,
    updated_at            timestamptz NOT NULL DEFAULT now(),
    finished_at           timestamptz,
    -- Tasks the selection matched when the job was created (the job never goes past them).
    total                 bigint      NOT NULL,
    processed             bigint      NOT NULL DEFAULT 0,
    succeeded             bigint      NOT NULL DEFAULT 0,
    skipped               bigint      NOT NULL DEFAULT 0,
    -- The next step takes tasks with ids below this (ids are time-ordered).
    cursor_id             uuid        NOT NULL,
    -- Redriven tasks whose SQS message is not removed yet.
    letters_pending       uuid[]      NOT NULL DEFAULT '{}',
    letter_sweeps         integer     NOT NULL DEFAULT 0,
    sqs_messages_removed  bigint      NOT NULL DEFAULT 0,
    -- Redriven tasks whose message no sweep of the SQS queue found (never sent, or consumed).
    sqs_letters_not_found bigint      NOT NULL DEFAULT 0,
    steps                 integer     NOT NULL DEFAULT 0,
    -- Errors in a row (a store unreachable); the step is retried, the job fails after many.
    errors                integer     NOT NULL DEFAULT 0,
    last_error            text,
    lease_owner           text,
    lease_until           timestamptz,
    cancel_requested      boolean     NOT NULL DEFAULT false
);
CREATE INDEX jobs_open ON jobs (created_at) WHERE state IN ('queued', 'running');
CREATE INDEX jobs_newest ON jobs (created_at DESC);
