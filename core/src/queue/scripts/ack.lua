-- ack: complete a batch of running tasks. A completed task (hash and payload) leaves Redis;
-- Postgres keeps its record.
--
-- KEYS[1] active  KEYS[2] outbox  KEYS[3] ready  KEYS[4] seq  KEYS[5] wake (for guard_release)
-- ARGV[1] key prefix  ARGV[2] worker id  then quadruples: id, fencing token, the handler's
-- captured log lines ('' = none; otherwise the outbox entry carries them as field 'l<id>'),
-- and its JSON result ('' = none; carried as 'r<id>')
-- Returns: one integer per quadruple, 1 = completed, 0 = refused (stale token or not running)
local active, outbox, ready, seqkey, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, worker = ARGV[1], ARGV[2]
local now = now_ms()
local out, done, logs = {}, {}, {}
local limited = redis.call('HGET', limits_key(prefix), 'c')
for i = 3, #ARGV, 4 do
  local id, tok, lines, result = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local tkey = task_key(prefix, id)
  local f = redis.call('HMGET', tkey, 'tok', 'st', 'a', 'sg', 'g')
  if f[1] == tok and f[2] == 'running' then
    redis.call('ZREM', active, id)
    attempt_ended(prefix, ready, wake, id, f[5], limited)
    guard_release(prefix, id, f[4], ready, seqkey, wake)
    tombstone(prefix, id, f[4])
    redis.call('DEL', tkey, payload_key(prefix, id))
    done[#done + 1] = id .. ':' .. f[3]
    if lines ~= '' then
      logs[#logs + 1] = 'l' .. id
      logs[#logs + 1] = lines
    end
    if result ~= '' then
      logs[#logs + 1] = 'r' .. id
      logs[#logs + 1] = result
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if #done > 0 then
  redis.call('XADD', outbox, '*', 'k', 'd', 't', now, 'w', worker, 'x', table.concat(done, ','), unpack(logs))
end
return out
