-- Recurring schedules. The tick plans each schedule's occurrences ahead, as delayed tasks,
-- in `(planned_until, now + horizon]` and advances `planned_until` in the same transaction
-- (rows are taken with FOR UPDATE SKIP LOCKED, so two ticks never plan one schedule at once).
CREATE TABLE schedules (
    id            uuid PRIMARY KEY,
    name          text        NOT NULL UNIQUE,
    cron          text        NOT NULL,
    timezone      text        NOT NULL DEFAULT 'UTC',
    -- the task template
    task_name     text        NOT NULL,
    queue         text        NOT NULL,
    payload       jsonb       NOT NULL,
    priority      smallint    NOT NULL CHECK (priority BETWEEN 0 AND 100),
    max_attempts  integer     NOT NULL,
    backoff       jsonb       NOT NULL,
    timeout_ms    bigint      NOT NULL,
    enabled       boolean     NOT NULL DEFAULT true,
    overlap       text        NOT NULL DEFAULT 'allow' CHECK (overlap IN ('allow', 'skip', 'queue_one')),
    misfire       text        NOT NULL DEFAULT 'run_once' CHECK (misfire IN ('run_all', 'run_once', 'skip')),
    -- every occurrence at or before this instant has been planned (or deliberately skipped)
    planned_until timestamptz NOT NULL,
    last_fire_at  timestamptz,
    next_fire_at  timestamptz,
    created_by    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due ON schedules (planned_until) WHERE enabled;

-- A planned occurrence is an ordinary task that remembers its schedule and fire instant
-- (run_at moves with retries; fire_at does not).
ALTER TABLE tasks ADD COLUMN schedule_id uuid REFERENCES schedules (id) ON DELETE SET NULL;
ALTER TABLE tasks ADD COLUMN fire_at timestamptz;
CREATE INDEX tasks_schedule_fire ON tasks (schedule_id, fire_at DESC) WHERE schedule_id IS NOT NULL;
