-- guard: shared by the scripts that end a task (prepended to claim, ack, fail, cancel and reap).
--
-- A schedule's occurrence (its hash has field sg = schedule id) that leaves Redis leaves a
-- tombstone "done:<id>" behind for a while, so the tick, which re-enqueues occurrences it
-- cannot find (after a crash between writing their rows and enqueueing them), never enqueues
-- one that already ran. enqueue.lua refuses an id with a tombstone.
local DONE_TTL_MS = 21600000 -- 6 h: longer than any audit lag the tick could observe
local function tombstone(prefix, id, sg)
  if sg and sg ~= '' then redis.call('SET', prefix .. 'done:' .. id, '1', 'PX', DONE_TTL_MS) end
end
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

