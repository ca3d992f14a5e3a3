-- The W3C traceparent of whoever submitted the task, so the worker continues that trace (and the
-- Redis-loss rebuild restores it with the task). NULL when the producer sent none.
ALTER TABLE tasks ADD COLUMN trace_context text;
