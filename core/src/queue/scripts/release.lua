-- release: a worker shutting down hands its unfinished leases straight back to ready, so no
-- task waits for lease expiry. The interrupted attempt does not use up the task's budget.
--
-- KEYS[1] active  KEYS[2] ready  KEYS[3] seq  KEYS[4] token  KEYS[5] outbox  KEYS[6] wake
-- ARGV[1] key prefix  ARGV[2] worker id  then triples: id, fencing token, the interrupted
-- handler's captured log lines ('' = none; the outbox entry carries them as field 'l<id>')
-- Returns: one integer per triple, 1 = released, 0 = refused (stale token or not running)
local active, ready, seqkey, tokkey, outbox, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local prefix, worker = ARGV[1], ARGV[2]
local now = now_ms()
local out, back, logs = {}, {}, {}
local limited = redis.call('HGET', limits_key(prefix), 'c')
for i = 3, #ARGV, 3 do
  local id, tok, lines = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local tkey = task_key(prefix, id)
  local f = redis.call('HMGET', tkey, 'tok', 'st', 'pr', 'a', 'g')
  if f[1] == tok and f[2] == 'running' then
    redis.call('ZREM', active, id)
    attempt_ended(prefix, ready, wake, id, f[5], limited)
    redis.call('HINCRBY', tkey, 'ma', 1)
    redis.call('HSET', tkey, 'st', 'queued', 'tok', redis.call('INCR', tokkey), 'ra', now)
    redis.call('HDEL', tkey, 'cx')
    to_ready(prefix, ready, seqkey, id, f[3], f[5])
    back[#back + 1] = id .. ':' .. f[4]
    if lines ~= '' then
      logs[#logs + 1] = 'l' .. id
      logs[#logs + 1] = lines
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if #back > 0 then
  redis.call('XADD', outbox, '*', 'k', 'B', 't', now, 'w', worker, 'x', table.concat(back, ','), unpack(logs))
  wake_one(wake)
end
return out
