-- Every transition updates a task row; an index on updated_at made each of those updates
-- touch one more index without serving any query (listings order by id, which is time-ordered).
DROP INDEX IF EXISTS tasks_status_updated;
