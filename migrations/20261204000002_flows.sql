-- Flows and dependencies: a task that waits for others is `pending` (in Postgres only; Redis
-- holds it once everything it waits for has finished), with the count of those still open.
ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check CHECK (status IN
    ('pending', 'scheduled', 'queued', 'running', 'retrying', 'completed', 'dead', 'cancelled'));
ALTER TABLE tasks ADD COLUMN pending_deps integer NOT NULL DEFAULT 0;
-- 'ignore': a task it waits for that ends dead or cancelled counts as finished; NULL: it fails
-- this task (cancelled, last_error naming the one that failed).
ALTER TABLE tasks ADD COLUMN on_child_failure text CHECK (on_child_failure IN ('ignore'));
-- When the last task it waited for finished and it was queued; the tick enqueues one whose
-- release died between the Postgres commit and Redis.
ALTER TABLE tasks ADD COLUMN released_at timestamptz;
CREATE INDEX tasks_released ON tasks (released_at) WHERE released_at IS NOT NULL;

-- task_id waits for depends_on. kind 'child': a flow's tree (cancelling the parent cancels the
-- child); 'depends_on': a task named by POST /v1/tasks `depends_on`. state: how depends_on
-- ended, NULL while it has not (set once: a child that runs twice counts once).
CREATE TABLE task_deps (
    task_id    uuid NOT NULL,
    depends_on uuid NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('child', 'depends_on')),
    state      text CHECK (state IN ('completed', 'dead', 'cancelled')),
    PRIMARY KEY (task_id, depends_on)
);
-- What the audit writer looks up for every task that finishes: only open edges, so it stays
-- small however many flows have run.
CREATE INDEX task_deps_open ON task_deps (depends_on) WHERE state IS NULL;
