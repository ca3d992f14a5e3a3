-- The handler's own log lines during an attempt, captured by the worker (bounded there: the
-- last 200 lines / 64 KiB, a first line saying what was dropped) and written with the attempt.
-- Log search finds words in them: a task matches when its own row or one of its attempts does.
-- The index is partial: most attempts log nothing, and an attempt without logs keeps its
-- updates heap-only (a NULL stays NULL, so the indexed value never changes).
ALTER TABLE task_attempts ADD COLUMN logs text;
ALTER TABLE task_attempts ADD COLUMN log_search tsvector GENERATED ALWAYS AS (to_tsvector('simple', logs)) STORED;
CREATE INDEX task_attempts_log_search ON task_attempts USING gin (log_search) WHERE log_search IS NOT NULL;
