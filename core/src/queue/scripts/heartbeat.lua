-- heartbeat: extend the leases a worker holds and tell it which tasks were cancelled.
--
-- KEYS[1] active
-- ARGV[1] key prefix  ARGV[2] lease (ms)  then pairs: id, fencing token
-- Returns: one integer per pair: 0 = extended, 1 = extended and cancel requested,
--          -1 = refused (the lease was lost: reaped, or the token is stale)
local active = KEYS[1]
local prefix, lease = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local out = {}
for i = 3, #ARGV, 2 do
  local id, tok = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', task_key(prefix, id), 'tok', 'st', 'cx')
  if f[1] == tok and f[2] == 'running' then
    redis.call('ZADD', active, 'XX', now + lease, id)
    if f[3] == '1' then out[#out + 1] = 1 else out[#out + 1] = 0 end
  else
    out[#out + 1] = -1
  end
end
return out
