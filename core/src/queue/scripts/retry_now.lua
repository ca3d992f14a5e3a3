-- retry_now: a scheduled, retrying or dead task becomes ready at once. A dead task gets a fresh
-- attempt budget (its attempt numbers keep counting up, so history is never overwritten).
--
-- KEYS[1] ready  KEYS[2] delayed  KEYS[3] dead  KEYS[4] dlq  KEYS[5] seq  KEYS[6] outbox  KEYS[7] wake
-- KEYS[8] retry
-- ARGV[1] key prefix  ARGV[2] id  ARGV[3] actor (who asked; audited)
-- Returns: {result, status before}; result is "queued", "not_found" or "refused" (queued or running)
local ready, delayed, dead, dlq, seqkey, outbox, wake, retry = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local prefix, id, actor = ARGV[1], ARGV[2], ARGV[3]
local tkey = task_key(prefix, id)
local now = now_ms()
local f = redis.call('HMGET', tkey, 'st', 'pr', 'a', 'mb', 'ma', 'g')
local st = f[1]
if not st then return {'not_found', ''} end
if st == 'scheduled' then
  redis.call('ZREM', delayed, id)
elseif st == 'retrying' then
  redis.call('ZREM', retry, id)
elseif st == 'dead' then
  redis.call('ZREM', dead, id)
  redis.call('ZREM', dlq, id)
  f[5] = tonumber(f[3]) + tonumber(f[4])
  redis.call('HSET', tkey, 'ma', f[5])
  redis.call('HDEL', tkey, 'fa')
else
  return {'refused', st}
end
to_ready(prefix, ready, seqkey, id, f[2], f[6])
redis.call('HSET', tkey, 'st', 'queued', 'ra', now)
-- 'ma': the attempt budget now, so Postgres records the dead task's fresh budget too.
redis.call('XADD', outbox, '*', 'k', 'R', 't', now, 'i', id, 'by', actor, 'st', st, 'ma', f[5] or '')
wake_one(wake)
return {'queued', st}
