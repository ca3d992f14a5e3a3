-- guard: shared by the scripts that end a task (prepended to ack, fail, cancel and reap).
--
-- A schedule with an overlap policy other than "allow" owns a guard key "sg:<schedule>" that
-- names its run in progress; claim.lua takes it. When that run ends, the guard is dropped and
-- the one occurrence parked behind it ("sq:<schedule>", overlap "queue_one") goes to ready.
local function guard_release(prefix, id, sg, ready, seqkey, wake)
  if not sg or sg == '' then return end
  local gkey = prefix .. 'sg:' .. sg
  if redis.call('GET', gkey) ~= id then return end
  redis.call('DEL', gkey)
  local pkey = prefix .. 'sq:' .. sg
  local parked = redis.call('GET', pkey)
  if not parked then return end
  redis.call('DEL', pkey)
  local f = redis.call('HMGET', prefix .. 't:' .. parked, 'st', 'pr')
  if f[1] == 'queued' then
    local seq = redis.call('INCR', seqkey)
    redis.call('ZADD', ready, (100 - tonumber(f[2])) * 70368744177664 + seq, parked)
    if redis.call('LLEN', wake) < 8 then redis.call('LPUSH', wake, '1') end
  end
end

