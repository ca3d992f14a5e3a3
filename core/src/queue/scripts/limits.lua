-- limits: set a queue's limits (Postgres's queue_limits is their record; this is the copy the
-- claim script reads). A limit that went away or grew applies to the next claim: every group
-- with waiting tasks rejoins the rotation (claim.lua takes out again one still at its limit),
-- groups waiting for a rate token rejoin when the group rate is gone, and a worker is woken.
--
-- KEYS[1] wake
-- ARGV[1] key prefix  ARGV[2..7] c, rl, rp, gc, gl, gp ("" = no such limit)
-- Returns: 1
local wake = KEYS[1]
local prefix = ARGV[1]
local lk = limits_key(prefix)
for i, field in ipairs({'c', 'rl', 'rp', 'gc', 'gl', 'gp'}) do
  local v = ARGV[i + 1]
  if v == '' then redis.call('HDEL', lk, field) else redis.call('HSET', lk, field, v) end
end
if ARGV[3] == '' then redis.call('DEL', rate_key(prefix)) end
local rw, rot, turns = rate_wait_key(prefix), rotation_key(prefix), turn_key(prefix)
if ARGV[6] == '' then redis.call('DEL', rw) end
for _, g in ipairs(redis.call('SMEMBERS', waiting_groups_key(prefix))) do
  if not redis.call('ZSCORE', rw, g) then redis.call('ZADD', rot, 'NX', redis.call('INCR', turns), g) end
end
wake_one(wake)
return 1
