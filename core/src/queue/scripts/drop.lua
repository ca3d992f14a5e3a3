-- drop: take back a schedule's occurrences that have not started (the schedule was paused,
-- edited or deleted). A task that was claimed even once is left alone, and so is one that
-- already finished (its tombstone says so; Postgres may not know yet). One that Redis never
-- received (the tick stopped between writing its row and enqueueing it) counts as dropped.
--
-- KEYS[1] ready  KEYS[2] delayed
-- ARGV[1] key prefix  ARGV[2..] task ids
-- Returns: the ids dropped (their Postgres rows are deleted by the caller)
local ready, delayed = KEYS[1], KEYS[2]
local prefix = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local tkey = task_key(prefix, id)
  local f = redis.call('HMGET', tkey, 'st', 'a', 'g')
  if (f[1] == 'scheduled' or f[1] == 'queued') and f[2] == '0' then
    from_ready(prefix, ready, id, f[3])
    redis.call('ZREM', delayed, id)
    redis.call('DEL', tkey, payload_key(prefix, id))
    out[#out + 1] = id
  elseif not f[1] and redis.call('EXISTS', done_key(prefix, id)) == 0 then
    out[#out + 1] = id
  end
end
return out
