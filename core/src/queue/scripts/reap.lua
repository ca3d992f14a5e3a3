-- reap: leases whose deadline passed (the worker died or hung) go back to ready, counting the
-- lost attempt; with no attempts left the task is dead. The fencing token is bumped so the
-- old holder can no longer ack, fail or heartbeat it.
--
-- KEYS[1] active  KEYS[2] ready  KEYS[3] dead  KEYS[4] dlq  KEYS[5] seq  KEYS[6] token
-- KEYS[7] outbox  KEYS[8] wake
-- ARGV[1] key prefix  ARGV[2] max leases to reap in this call
-- Returns: {reaped count, next lease deadline (-1 = no active lease)}
local active, ready, dead, dlq, seqkey, tokkey, outbox, wake =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local prefix, limit = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', 0, limit)
local requeued = 0
local limited = redis.call('HGET', limits_key(prefix), 'c')
for _, id in ipairs(expired) do
  local tkey = task_key(prefix, id)
  redis.call('ZREM', active, id)
  local f = redis.call('HMGET', tkey, 'a', 'ma', 'pr', 'w', 'sg', 'g')
  if f[1] then
    attempt_ended(prefix, ready, wake, id, f[6], limited)
    local a, ma = tonumber(f[1]), tonumber(f[2])
    redis.call('HSET', tkey, 'tok', redis.call('INCR', tokkey))
    redis.call('HDEL', tkey, 'cx')
    local msg = 'lease expired: worker ' .. (f[4] or '?') .. ' stopped heartbeating'
    if a >= ma then
      guard_release(prefix, id, f[5], ready, seqkey, wake)
      redis.call('HSET', tkey, 'st', 'dead', 'le', msg, 'fa', now)
      redis.call('ZADD', dead, now, id)
      redis.call('ZADD', dlq, now, id)
      redis.call('XADD', outbox, '*', 'k', 'x', 't', now, 'i', id, 'a', a, 'w', f[4] or '', 'e', msg, 's', '', 'o', 'lost')
    else
      to_ready(prefix, ready, seqkey, id, f[3], f[6])
      -- Ready again from now: the next claim's wait is not counted from before the lost run.
      redis.call('HSET', tkey, 'st', 'queued', 'le', msg, 'ra', now)
      redis.call('XADD', outbox, '*', 'k', 'L', 't', now, 'i', id, 'a', a, 'w', f[4] or '', 'e', msg)
      requeued = requeued + 1
    end
  end
end
if requeued > 0 then wake_one(wake) end
local nxt = redis.call('ZRANGE', active, 0, 0, 'WITHSCORES')
local deadline = -1
if nxt[2] then deadline = tonumber(nxt[2]) end
return {#expired, deadline}
