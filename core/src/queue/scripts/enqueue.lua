-- enqueue: add a batch of tasks to one queue, ready now or delayed.
--
-- KEYS[1] ready    sorted set, score = (100 - priority) * 2^46 + seq  (ZPOPMIN = highest priority, FIFO)
-- KEYS[2] delayed  sorted set, score = due time (ms)
-- KEYS[3] seq      counter giving FIFO order within a priority
-- KEYS[4] wake     list that blocked workers BLPOP on; a few tokens suffice, because a worker that
--                  claims and leaves work behind wakes the next one (claim.lua)
-- ARGV[1] key prefix of this queue, "<ns>:{<queue>}:": task hashes (t:<id>), payloads (p:<id>) and
--         idempotency keys (idem:<key>) live under it. The payload is a string of its own so the
--         hash keeps only short fields and stays in Redis's compact encoding (~2x less memory).
-- ARGV[2] idempotency retention (ms)
-- ARGV[3] number of tasks; then 16 fields per task:
--         id, name, payload, priority, max_attempts, backoff, timeout_ms, idempotency key ("" = none),
--         run_at (epoch ms, 0 = use delay), delay_ms, dedupe key (the idempotency key scoped to the
--         API key that submitted it, so two clients' keys never collide; "" = none),
--         schedule id of a schedule's occurrence ("" = none) and its overlap code ("s" skip, "q"
--         queue one, "" allow: no guard); stored only when set; the task's group ("" = none: see
--         to_ready in lib.lua); its deadline (epoch ms, 0 = none: no attempt starts after it, see
--         claim.lua); its producer's W3C traceparent ("" = none: see core/src/telemetry.rs). An occurrence whose id has a tombstone (done:<id>, see lib.lua)
--         already ran and is not enqueued again.
-- Returns: {now, id_1, created_1, id_2, created_2, ...}; created is 1 for a new task, 0 when the
--          idempotency key (or the id) already named a task, whose id is returned instead.
local ready, delayed, seqkey, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix = ARGV[1]
local retention = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local now = now_ms()
local out = {now}
local woke = false
for i = 0, n - 1 do
  local b = 3 + i * 16
  local id, name, payload = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local pr, ma, bk, to, ik = tonumber(ARGV[b + 4]), ARGV[b + 5], ARGV[b + 6], ARGV[b + 7], ARGV[b + 8]
  local run_at, delay, dk = tonumber(ARGV[b + 9]), tonumber(ARGV[b + 10]), ARGV[b + 11]
  local sg, ov, g, ex, tc = ARGV[b + 12], ARGV[b + 13], ARGV[b + 14], ARGV[b + 15], ARGV[b + 16]
  local tkey = task_key(prefix, id)
  local existing = nil
  if dk ~= '' then
    existing = redis.call('GET', idem_key(prefix, dk))
  end
  if not existing and (redis.call('EXISTS', tkey) == 1 or (sg ~= '' and redis.call('EXISTS', done_key(prefix, id)) == 1)) then
    existing = id
  end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  else
    if dk ~= '' then
      redis.call('SET', idem_key(prefix, dk), id, 'PX', retention)
    end
    local due = run_at
    if due == 0 then due = now + delay end
    if ov ~= '' then
      redis.call('HSET', tkey, 'sg', sg, 'ov', ov)
    elseif sg ~= '' then
      redis.call('HSET', tkey, 'sg', sg)
    end
    if g ~= '' then redis.call('HSET', tkey, 'g', g) end
    if ex ~= '0' then redis.call('HSET', tkey, 'ex', ex) end
    if tc ~= '' then redis.call('HSET', tkey, 'tc', tc) end
    if due <= now then
      redis.call('HSET', tkey, 'n', name, 'pr', pr, 'a', 0, 'ma', ma, 'mb', ma,
        'bk', bk, 'to', to, 'st', 'queued', 'ik', ik, 'ca', now, 'ra', now)
      redis.call('SET', payload_key(prefix, id), payload)
      to_ready(prefix, ready, seqkey, id, pr, g)
      if not woke and redis.call('LLEN', wake) < 8 then
        redis.call('LPUSH', wake, '1')
        woke = true
      end
    else
      redis.call('HSET', tkey, 'n', name, 'pr', pr, 'a', 0, 'ma', ma, 'mb', ma,
        'bk', bk, 'to', to, 'st', 'scheduled', 'ik', ik, 'ca', now, 'ra', due)
      redis.call('SET', payload_key(prefix, id), payload)
      redis.call('ZADD', delayed, due, id)
      -- A new earliest due time must reach a worker that is sleeping until a later one.
      local first = redis.call('ZRANGE', delayed, 0, 0)
      if first[1] == id then redis.call('LPUSH', wake, '1') end
    end
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
return out
