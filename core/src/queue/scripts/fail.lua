-- fail: end one running attempt that did not succeed. The retry decision lives here, beside
-- the state change: attempts left and not permanent => retrying (delayed by the backoff),
-- otherwise dead (kept in Redis for inspection and queued for the SQS dead-letter queue).
--
-- KEYS[1] active  KEYS[2] retry (score = next attempt's due time)  KEYS[3] dead (score = died at)
-- KEYS[4] dlq (pending SQS sends)  KEYS[5] outbox  KEYS[6] wake  KEYS[7] delayed
-- KEYS[8] ready  KEYS[9] seq (both for guard_release)
-- ARGV[1] key prefix  ARGV[2] id  ARGV[3] fencing token  ARGV[4] worker id
-- ARGV[5] outcome: "error" | "permanent" | "cancelled"
-- ARGV[6] error message  ARGV[7] error detail (chain / stack trace)
-- ARGV[8] retry delay override in ms (-1 = use the task's backoff)  ARGV[9] random number in [0, 1)
-- ARGV[10] the handler's captured log lines ('' = none; the outbox entry carries them as 'l')
-- Returns: {"retrying", due_ms} | {"dead", now} | {"cancelled", now} | {"stale", 0}
local active, retry, dead, dlq, outbox, wake, delayed = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local ready, seqkey = KEYS[8], KEYS[9]
local prefix, id, tok, worker, outcome = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local msg, detail = ARGV[6], ARGV[7]
local override, rnd = tonumber(ARGV[8]), tonumber(ARGV[9])
-- Appended to the outbox entry: nothing when the handler logged nothing.
local logs = {}
if ARGV[10] and ARGV[10] ~= '' then logs = {'l', ARGV[10]} end
local tkey = task_key(prefix, id)
local now = now_ms()
local f = redis.call('HMGET', tkey, 'tok', 'st', 'a', 'ma', 'bk', 'sg', 'g')
if f[1] ~= tok or f[2] ~= 'running' then
  return {'stale', 0}
end
local a, ma = tonumber(f[3]), tonumber(f[4])
redis.call('ZREM', active, id)
attempt_ended(prefix, ready, wake, id, f[7], redis.call('HGET', limits_key(prefix), 'c'))

if outcome == 'cancelled' then
  guard_release(prefix, id, f[6], ready, seqkey, wake)
  tombstone(prefix, id, f[6])
  redis.call('DEL', tkey, payload_key(prefix, id))
  redis.call('XADD', outbox, '*', 'k', 'C', 't', now, 'i', id, 'a', a, 'w', worker, unpack(logs))
  return {'cancelled', now}
end

if outcome == 'permanent' or a >= ma then
  guard_release(prefix, id, f[6], ready, seqkey, wake)
  redis.call('HSET', tkey, 'st', 'dead', 'le', msg, 'fa', now)
  redis.call('HDEL', tkey, 'tok', 'cx')
  redis.call('ZADD', dead, now, id)
  redis.call('ZADD', dlq, now, id)
  redis.call('XADD', outbox, '*', 'k', 'x', 't', now, 'i', id, 'a', a, 'w', worker, 'e', msg, 's', detail, unpack(logs))
  return {'dead', now}
end

local delay = override
if delay < 0 then delay = backoff_delay(f[5], a, rnd) end
local due = now + delay
redis.call('HSET', tkey, 'st', 'retrying', 'le', msg, 'ra', due)
redis.call('HDEL', tkey, 'tok')
redis.call('ZADD', retry, due, id)
redis.call('XADD', outbox, '*', 'k', 'r', 't', now, 'i', id, 'a', a, 'w', worker, 'e', msg, 's', detail, 'ra', due, unpack(logs))
-- A new earliest due time must reach a worker sleeping until a later one.
local first = redis.call('ZRANGE', retry, 0, 0)
local sched = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if first[1] == id and (not sched[2] or due < tonumber(sched[2])) then redis.call('LPUSH', wake, '1') end
return {'retrying', due}
