-- restore: put tasks back into a queue from their Postgres record after Redis lost its data.
-- A task already live in Redis is left alone, so running this twice (or beside live traffic)
-- changes nothing. A task that was running is put back as ready: its attempt counts as lost.
--
-- KEYS[1] ready  KEYS[2] delayed  KEYS[3] retry  KEYS[4] dead  KEYS[5] seq  KEYS[6] wake
-- ARGV[1] key prefix  ARGV[2] number of tasks; then 16 fields per task:
--         id, name, payload, priority, attempts, max_attempts, backoff, timeout_ms,
--         idempotency key, status (Postgres), run_at (epoch ms), and for a schedule's occurrence
--         with an overlap guard its schedule id and overlap code (see enqueue.lua; "" = none),
--         its group ("" = none), its deadline (epoch ms, 0 = none) and its traceparent ("" = none)
-- Returns: the ids of the tasks restored (those Redis did not hold)
local ready, delayed, retry, dead, seqkey, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local prefix, n = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local restored = {}
for i = 0, n - 1 do
  local b = 2 + i * 16
  local id, name, payload = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local pr, a, ma, bk, to, ik = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]), ARGV[b + 7], ARGV[b + 8], ARGV[b + 9]
  local st, ra = ARGV[b + 10], tonumber(ARGV[b + 11])
  local sg, ov, g, ex, tc = ARGV[b + 12], ARGV[b + 13], ARGV[b + 14], ARGV[b + 15], ARGV[b + 16]
  local tkey = task_key(prefix, id)
  if redis.call('EXISTS', tkey) == 0 then
    local status, set, score = 'queued', nil, nil
    if st == 'dead' then
      status, set, score = 'dead', dead, now
    elseif (st == 'scheduled' or st == 'retrying') and ra > now then
      status, set, score = st, delayed, ra
      if st == 'retrying' then set = retry end
    end
    -- A running attempt was lost with Redis: it counts, but never leaves the task without one.
    if st == 'running' and a >= ma then ma = a + 1 end
    redis.call('HSET', tkey, 'n', name, 'pr', pr, 'a', a, 'ma', ma, 'mb', ma, 'bk', bk, 'to', to,
      'st', status, 'ik', ik, 'ca', now, 'ra', ra)
    if ov ~= '' then
      redis.call('HSET', tkey, 'sg', sg, 'ov', ov)
    elseif sg ~= '' then
      redis.call('HSET', tkey, 'sg', sg)
    end
    if g ~= '' then redis.call('HSET', tkey, 'g', g) end
    if ex ~= '0' then redis.call('HSET', tkey, 'ex', ex) end
    if tc ~= '' then redis.call('HSET', tkey, 'tc', tc) end
    redis.call('SET', payload_key(prefix, id), payload)
    if set then redis.call('ZADD', set, score, id) else to_ready(prefix, ready, seqkey, id, pr, g) end
    restored[#restored + 1] = id
  end
end
if #restored > 0 then wake_one(wake) end
return restored
