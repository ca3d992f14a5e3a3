-- A task's group (tenant): per-group limits and fair turns among groups apply to it. Kept so
-- the Redis-loss rebuild puts a waiting task back into its group.
ALTER TABLE tasks ADD COLUMN task_group text;

-- The limits of a queue. Postgres is their record: the rebuild restores them into Redis
-- (the claim script decides with Redis's copy). NULL = no limit of that kind.
CREATE TABLE queue_limits (
    queue text PRIMARY KEY,
    concurrency int4,
    rate_limit int4,
    rate_period_ms int4,
    group_concurrency int4,
    group_rate_limit int4,
    group_rate_period_ms int4,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text,
    CHECK ((rate_limit IS NULL) = (rate_period_ms IS NULL)),
    CHECK ((group_rate_limit IS NULL) = (group_rate_period_ms IS NULL))
);
