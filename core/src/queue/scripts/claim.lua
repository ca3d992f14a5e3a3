-- claim: promote due delayed and retrying tasks, then lease up to N ready tasks to one worker.
--
-- KEYS[1] ready  KEYS[2] delayed  KEYS[3] active (score = lease deadline, ms)  KEYS[4] seq
-- KEYS[5] token (fencing-token counter)  KEYS[6] outbox (audit stream)  KEYS[7] wake  KEYS[8] paused
-- KEYS[9] retry (tasks waiting for their next attempt; score = due time)
-- ARGV[1] key prefix  ARGV[2] worker id  ARGV[3] max tasks  ARGV[4] lease (ms)  ARGV[5] promote limit
-- Returns: {now, next_due (-1 = nothing delayed or retrying), count, then 10 fields per task:
--           id, token, attempt, max_attempts, name, payload, timeout_ms, backoff, idempotency key,
--           how long it waited since it was due (ms)}
-- Highest priority first, FIFO within a priority. One outbox entry for the whole batch.
-- A schedule's occurrence with an overlap guard (fields sg, ov) whose schedule has a run in
-- progress is not leased: "skip" (ov = s) drops it, recorded as cancelled with the reason;
-- "queue_one" (ov = q) parks it in sq:<schedule> unless one is parked already (then it is
-- dropped). guard_release (lib.lua) moves the parked one to ready when the run ends.
local ready, delayed, active, seqkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local tokkey, outbox, wake, paused, retry = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local prefix, worker = ARGV[1], ARGV[2]
local max, lease, plimit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()

for _, set in ipairs({delayed, retry}) do
  local due = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, plimit)
  for _, id in ipairs(due) do
    local tkey = task_key(prefix, id)
    local pr = tonumber(redis.call('HGET', tkey, 'pr'))
    if pr then
      local seq = redis.call('INCR', seqkey)
      redis.call('ZADD', ready, ready_score(pr, seq), id)
      redis.call('HSET', tkey, 'st', 'queued')
    end
    redis.call('ZREM', set, id)
  end
end

local out = {now, -1, 0}
local count = 0
if max > 0 and redis.call('EXISTS', paused) == 0 then
  local popped = redis.call('ZPOPMIN', ready, max)
  if #popped > 0 then
    -- One INCRBY reserves a fencing token for every popped task; one ZADD leases them all.
    local tok = redis.call('INCRBY', tokkey, #popped / 2) - #popped / 2
    local claimed, lease_args = {}, {}
    for i = 1, #popped, 2 do
      local id = popped[i]
      local tkey = task_key(prefix, id)
      local f = redis.call('HMGET', tkey, 'a', 'ma', 'n', 'to', 'bk', 'ik', 'sg', 'ov', 'ra')
      tok = tok + 1
      local blocked = nil
      if f[3] and f[7] and f[8] then
        local gkey = guard_key(prefix, f[7])
        local holder = redis.call('GET', gkey)
        -- completed and cancelled runs leave Redis; a dead one is finished too
        if holder and holder ~= id then
          local hst = redis.call('HGET', task_key(prefix, holder), 'st')
          if hst and hst ~= 'dead' then blocked = holder end
        end
        if blocked then
          local pkey = parked_key(prefix, f[7])
          local parked = f[8] == 'q' and redis.call('GET', pkey)
          if f[8] == 'q' and not (parked and parked ~= id and redis.call('HGET', task_key(prefix, parked), 'st') == 'queued') then
            redis.call('SET', pkey, id)
          else
            local why = 'skipped: the previous run ' .. blocked .. ' of its schedule has not finished (overlap '
            if f[8] == 'q' then why = why .. 'queue_one: one run is already waiting)' else why = why .. 'skip)' end
            redis.call('DEL', tkey, payload_key(prefix, id))
            tombstone(prefix, id, f[7])
            redis.call('XADD', outbox, '*', 'k', 'S', 't', now, 'i', id, 'e', why)
          end
        else
          redis.call('SET', gkey, id)
        end
      end
      if f[3] and not blocked then
        local a = tonumber(f[1]) + 1
        redis.call('HSET', tkey, 'a', a, 'st', 'running', 'tok', tok, 'w', worker, 'ls', now)
        lease_args[#lease_args + 1] = now + lease
        lease_args[#lease_args + 1] = id
        out[#out + 1] = id
        out[#out + 1] = tok
        out[#out + 1] = a
        out[#out + 1] = f[2]
        out[#out + 1] = f[3]
        out[#out + 1] = redis.call('GET', payload_key(prefix, id)) or 'null'
        out[#out + 1] = f[4]
        out[#out + 1] = f[5]
        out[#out + 1] = f[6]
        out[#out + 1] = math.max(0, now - (tonumber(f[9]) or now))
        claimed[#claimed + 1] = id .. ':' .. a
        count = count + 1
      end
    end
    if count > 0 then
      redis.call('ZADD', active, unpack(lease_args))
      redis.call('XADD', outbox, '*', 'k', 'c', 't', now, 'w', worker, 'x', table.concat(claimed, ','))
    end
  end
  -- Pass the baton: work is left, so wake another idle worker.
  if redis.call('ZCARD', ready) > 0 and redis.call('LLEN', wake) == 0 then
    redis.call('LPUSH', wake, '1')
  end
end
out[3] = count
for _, set in ipairs({delayed, retry}) do
  local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  if first[2] and (out[2] < 0 or tonumber(first[2]) < out[2]) then out[2] = tonumber(first[2]) end
end
return out
