-- purge_dead: take dead tasks past their retention out of Redis, so the caller may delete
-- their Postgres rows. A task is purged only while it is still dead with its dead letter sent;
-- one retried or redriven meanwhile, or whose SQS message is still pending, is left alone. A
-- task Redis does not hold at all (it is neither a hash nor in the dead set) counts as purged.
--
-- KEYS[1] dead  KEYS[2] dlq (pending SQS sends)
-- ARGV[1] key prefix  ARGV[2..] task ids
-- Returns: the ids purged
local dead, dlq = KEYS[1], KEYS[2]
local prefix = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local tkey = task_key(prefix, id)
  local st = redis.call('HGET', tkey, 'st')
  local in_dead = redis.call('ZSCORE', dead, id)
  if not st and not in_dead then
    out[#out + 1] = id
  elseif st == 'dead' and in_dead and not redis.call('ZSCORE', dlq, id) then
    redis.call('ZREM', dead, id)
    redis.call('DEL', tkey, payload_key(prefix, id))
    out[#out + 1] = id
  end
end
return out
