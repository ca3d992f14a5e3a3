-- cancel: a waiting, scheduled, retrying or dead task is removed at once; a running one is
-- flagged, and the flag reaches its handler through the next heartbeat.
--
-- KEYS[1] ready  KEYS[2] delayed  KEYS[3] dead  KEYS[4] dlq  KEYS[5] outbox  KEYS[6] retry
-- KEYS[7] seq  KEYS[8] wake (both for guard_release)
-- ARGV[1] key prefix  ARGV[2] id  ARGV[3] actor (who asked; audited)
-- Returns: {result, status before}; result is "cancelled", "cancelling" (running: flagged),
--          "not_found" (not in Redis: finished or unknown) or "refused" (already being cancelled)
local ready, delayed, dead, dlq, outbox, retry = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local seqkey, wake = KEYS[7], KEYS[8]
local prefix, id, actor = ARGV[1], ARGV[2], ARGV[3]
local tkey = task_key(prefix, id)
local now = now_ms()
local f = redis.call('HMGET', tkey, 'st', 'cx', 'a', 'sg', 'g')
local st = f[1]
if not st then return {'not_found', ''} end
if st == 'running' then
  if f[2] == '1' then return {'refused', st} end
  redis.call('HSET', tkey, 'cx', '1')
  redis.call('XADD', outbox, '*', 'k', 'Q', 't', now, 'i', id, 'by', actor, 'st', st)
  return {'cancelling', st}
end
if st == 'queued' then
  from_ready(prefix, ready, id, f[5])
elseif st == 'scheduled' then
  redis.call('ZREM', delayed, id)
elseif st == 'retrying' then
  redis.call('ZREM', retry, id)
elseif st == 'dead' then
  redis.call('ZREM', dead, id)
  redis.call('ZREM', dlq, id)
end
guard_release(prefix, id, f[4], ready, seqkey, wake)
tombstone(prefix, id, f[4])
redis.call('DEL', tkey, payload_key(prefix, id))
redis.call('XADD', outbox, '*', 'k', 'X', 't', now, 'i', id, 'a', f[3] or 0, 'by', actor, 'st', st)
return {'cancelled', st}
