-- heartbeat: extend the leases a worker holds, tell it which tasks were cancelled, and carry
-- the progress its handlers reported since the last beat (so progress costs no round trip of
-- its own and reaches Redis at most once per beat).
--
-- KEYS[1] active  KEYS[2] outbox
-- ARGV[1] key prefix  ARGV[2] lease (ms)  then triples: id, fencing token, progress (JSON
-- text, '' = unchanged; kept in the task hash as 'pg' and sent to the outbox as a 'P' entry)
-- Returns: one integer per triple: 0 = extended, 1 = extended and cancel requested,
--          -1 = refused (the lease was lost: reaped, or the token is stale)
local active, outbox = KEYS[1], KEYS[2]
local prefix, lease = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local out = {}
for i = 3, #ARGV, 3 do
  local id, tok, pg = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local tkey = task_key(prefix, id)
  local f = redis.call('HMGET', tkey, 'tok', 'st', 'cx', 'a')
  if f[1] == tok and f[2] == 'running' then
    redis.call('ZADD', active, 'XX', now + lease, id)
    if pg ~= '' then
      redis.call('HSET', tkey, 'pg', pg)
      redis.call('XADD', outbox, '*', 'k', 'P', 't', now, 'i', id, 'a', f[4], 'p', pg)
    end
    if f[3] == '1' then out[#out + 1] = 1 else out[#out + 1] = 0 end
  else
    out[#out + 1] = -1
  end
end
return out
