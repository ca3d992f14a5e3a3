-- The audit writer updates every task row at least once per attempt (status, attempts,
-- finished_at). With `status` in an index no such update could be HOT (heap-only), so each
-- one also wrote a new entry into every index of the table, the GIN search index included.
-- Queue listings and counts read a queue's rows anyway (counts by status scan them all), so
-- an index on the queue alone serves them; and pages keep room for the new row version.
DROP INDEX IF EXISTS tasks_queue_status;
CREATE INDEX IF NOT EXISTS tasks_queue ON tasks (queue);
ALTER TABLE tasks SET (fillfactor = 80);
