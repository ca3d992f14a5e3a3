-- What a handler returned (JSON, size-limited by the worker), kept with the task.
ALTER TABLE tasks ADD COLUMN result jsonb;
-- A deadline: a task not started by then ends cancelled with the reason and never runs late.
ALTER TABLE tasks ADD COLUMN expires_at timestamptz;
-- The last progress a handler reported (`{"pct": 0-100, "message": "..."}`), carried by heartbeats.
ALTER TABLE tasks ADD COLUMN progress jsonb;
