-- claim: promote due delayed and retrying tasks, then lease up to N ready tasks to one worker.
--
-- KEYS[1] ready  KEYS[2] delayed  KEYS[3] active (score = lease deadline, ms)  KEYS[4] seq
-- KEYS[5] token (fencing-token counter)  KEYS[6] outbox (audit stream)  KEYS[7] wake  KEYS[8] paused
-- KEYS[9] retry (tasks waiting for their next attempt; score = due time)
-- ARGV[1] key prefix  ARGV[2] worker id  ARGV[3] max tasks  ARGV[4] lease (ms)  ARGV[5] promote limit
-- Returns: {now, next_due (-1 = nothing delayed or retrying), count, then 11 fields per task:
--           id, token, attempt, max_attempts, name, payload, timeout_ms, backoff, idempotency key,
--           how long it waited since it was due (ms), the producer's traceparent ("" = none)}
-- Highest priority first, FIFO within a priority. One outbox entry for the whole batch.
-- A schedule's occurrence with an overlap guard (fields sg, ov) whose schedule has a run in
-- progress is not leased: "skip" (ov = s) drops it, recorded as cancelled with the reason;
-- "queue_one" (ov = q) parks it in sq:<schedule> unless one is parked already (then it is
-- dropped). guard_release (lib.lua) moves the parked one to ready when the run ends.
-- Limits (lim, see lib.lua) are decided here: concurrency caps the batch at the free slots, a
-- rate at the starts left in the sliding window (then next_due is when the oldest start leaves
-- it, so a worker sleeps until a token is due, never polls); with grouped tasks waiting, each
-- task of the batch is taken from the next group in the rotation (the ungrouped ready set is
-- one more member of it), strict priority within a group, and a group at its concurrency or
-- rate limit leaves the rotation until an attempt of it ends (attempt_ended) or its token is due.
-- A task past its deadline (field ex) is never leased: it ends cancelled with the reason.
local ready, delayed, active, seqkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local tokkey, outbox, wake, paused, retry = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local prefix, worker = ARGV[1], ARGV[2]
local max, lease, plimit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()

for _, set in ipairs({delayed, retry}) do
  local due = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, plimit)
  for _, id in ipairs(due) do
    local tkey = task_key(prefix, id)
    local f = redis.call('HMGET', tkey, 'pr', 'g')
    if f[1] then
      to_ready(prefix, ready, seqkey, id, f[1], f[2])
      redis.call('HSET', tkey, 'st', 'queued')
    end
    redis.call('ZREM', set, id)
  end
end

-- The limits in force: how many tasks this claim may start, and when a rate token is due. A
-- queue without limits pays one EXISTS (about 0.6 µs; the HMGET of six fields costs 2.2 µs).
local conc, rlim, rper, gconc, glim, gper
if redis.call('EXISTS', limits_key(prefix)) == 1 then
  local lim = redis.call('HMGET', limits_key(prefix), 'c', 'rl', 'rp', 'gc', 'gl', 'gp')
  conc, rlim, rper = tonumber(lim[1]), tonumber(lim[2]), tonumber(lim[3])
  gconc, glim, gper = tonumber(lim[4]), tonumber(lim[5]), tonumber(lim[6])
end
local room, limited, token_due = max, false, nil
if max > 0 and conc then
  local free = conc - redis.call('ZCARD', active)
  if free <= 0 then room, limited = 0, true elseif free < room then room = free end
end
if max > 0 and rlim and rper then
  local rk = rate_key(prefix)
  redis.call('ZREMRANGEBYSCORE', rk, '-inf', now - rper)
  local left = rlim - redis.call('ZCARD', rk)
  if left <= 0 then
    room, limited = 0, true
    local oldest = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
    if oldest[2] then token_due = tonumber(oldest[2]) + rper end
  elseif left < room then
    room = left
  end
end

-- Groups whose rate token is due rejoin the rotation.
local grouped = tonumber(redis.call('GET', groups_count_key(prefix))) or 0
if grouped > 0 then
  local rw = rate_wait_key(prefix)
  for _, g in ipairs(redis.call('ZRANGEBYSCORE', rw, '-inf', now, 'LIMIT', 0, 100)) do
    redis.call('ZREM', rw, g)
    if redis.call('EXISTS', group_ready_key(prefix, g)) == 1 then
      redis.call('ZADD', rotation_key(prefix), 'NX', redis.call('INCR', turn_key(prefix)), g)
    end
  end
end

-- Take up to n tasks in rotation among the groups and the ungrouped ready set. Returns the
-- same shape as ZPOPMIN (id, score, ...) and each grouped task's group by id.
local function pop_rotating(n)
  local popped, group_of = {}, {}
  local rot, turns = rotation_key(prefix), turn_key(prefix)
  local u_turn = tonumber(redis.call('GET', ungrouped_turn_key(prefix))) or 0
  while #popped < n * 2 do
    local head = redis.call('ZRANGE', rot, 0, 0, 'WITHSCORES')
    local has_u = redis.call('ZCARD', ready) > 0
    if not head[1] and not has_u then break end
    if head[1] and (not has_u or tonumber(head[2]) < u_turn) then
      local g = head[1]
      local gk = group_ready_key(prefix, g)
      local gak = group_active_key(prefix, g)
      if gconc and redis.call('ZCARD', gak) >= gconc then
        -- At its limit: it leaves the rotation until one of its attempts ends (attempt_ended).
        -- First drop any entry whose attempt is not running (never expected; self-healing).
        for _, rid in ipairs(redis.call('ZRANGE', gak, 0, -1)) do
          if not group_of[rid] and redis.call('HGET', task_key(prefix, rid), 'st') ~= 'running' then
            redis.call('ZREM', gak, rid)
          end
        end
        if redis.call('ZCARD', gak) >= gconc then redis.call('ZREM', rot, g) end
      else
        local full = false
        if glim and gper then
          local grk = group_rate_key(prefix, g)
          redis.call('ZREMRANGEBYSCORE', grk, '-inf', now - gper)
          if redis.call('ZCARD', grk) >= glim then
            full = true
            local oldest = redis.call('ZRANGE', grk, 0, 0, 'WITHSCORES')
            redis.call('ZREM', rot, g)
            redis.call('ZADD', rate_wait_key(prefix), tonumber(oldest[2]) + gper, g)
          end
        end
        if not full then
          local t = redis.call('ZPOPMIN', gk)
          if t[1] then
            redis.call('DECR', groups_count_key(prefix))
            popped[#popped + 1] = t[1]
            popped[#popped + 1] = t[2]
            group_of[t[1]] = g
            -- Counted now, so the next pick in this batch sees it.
            redis.call('ZADD', group_active_key(prefix, g), now + lease, t[1])
            if glim and gper then
              local grk = group_rate_key(prefix, g)
              redis.call('ZADD', grk, now, t[1] .. ':' .. now)
              redis.call('PEXPIRE', grk, gper)
            end
          end
          if redis.call('EXISTS', gk) == 0 then
            redis.call('ZREM', rot, g)
            redis.call('SREM', waiting_groups_key(prefix), g)
          else
            redis.call('ZADD', rot, redis.call('INCR', turns), g)
          end
        end
      end
    else
      local t = redis.call('ZPOPMIN', ready)
      popped[#popped + 1] = t[1]
      popped[#popped + 1] = t[2]
      u_turn = redis.call('INCR', turns)
    end
  end
  redis.call('SET', ungrouped_turn_key(prefix), u_turn)
  return popped, group_of
end

local out = {now, -1, 0}
local count = 0
if room > 0 and redis.call('EXISTS', paused) == 0 then
  local popped, group_of
  if grouped > 0 then
    popped, group_of = pop_rotating(room)
  else
    popped, group_of = redis.call('ZPOPMIN', ready, room), {}
  end
  if #popped > 0 then
    -- One INCRBY reserves a fencing token for every popped task; one ZADD leases them all.
    local tok = redis.call('INCRBY', tokkey, #popped / 2) - #popped / 2
    local claimed, lease_args = {}, {}
    for i = 1, #popped, 2 do
      local id = popped[i]
      local tkey = task_key(prefix, id)
      local f = redis.call('HMGET', tkey, 'a', 'ma', 'n', 'to', 'bk', 'ik', 'sg', 'ov', 'ra', 'ex', 'tc')
      tok = tok + 1
      local blocked = nil
      if f[3] and f[10] and tonumber(f[10]) < now then
        blocked = 'expired'
        redis.call('DEL', tkey, payload_key(prefix, id))
        tombstone(prefix, id, f[7])
        redis.call('XADD', outbox, '*', 'k', 'S', 't', now, 'i', id, 'e',
          'expired: not started by its deadline (expires_at ' .. f[10] .. ' ms, ' .. (now - tonumber(f[10])) .. ' ms ago); it never ran late')
      elseif f[3] and f[7] and f[8] then
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
      if (not f[3] or blocked) and group_of[id] then
        redis.call('ZREM', group_active_key(prefix, group_of[id]), id)
      end
      if f[3] and not blocked then
        local a = tonumber(f[1]) + 1
        if rlim and rper then redis.call('ZADD', rate_key(prefix), now, id .. ':' .. a) end
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
        out[#out + 1] = f[11] or ''
        claimed[#claimed + 1] = id .. ':' .. a
        count = count + 1
      end
    end
    if count > 0 then
      if rlim and rper then redis.call('PEXPIRE', rate_key(prefix), rper) end
      redis.call('ZADD', active, unpack(lease_args))
      redis.call('XADD', outbox, '*', 'k', 'c', 't', now, 'w', worker, 'x', table.concat(claimed, ','))
    end
  end
  -- Pass the baton: work is left that another worker may start, so wake one. Not when a
  -- limit stopped this batch: attempt_ended wakes a worker when a slot frees.
  if room == max and not limited and redis.call('LLEN', wake) == 0 and
      (redis.call('ZCARD', ready) > 0 or redis.call('EXISTS', rotation_key(prefix)) == 1) then
    redis.call('LPUSH', wake, '1')
  end
end
out[3] = count
-- The window is full after this claim: the next token is due when its oldest start leaves it.
if rlim and rper and not token_due and count > 0 then
  local rk = rate_key(prefix)
  if redis.call('ZCARD', rk) >= rlim then
    local oldest = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
    token_due = tonumber(oldest[2]) + rper
    limited = true
  end
end
-- A worker sleeps until the next rate token (the queue's, or a waiting group's) as it does
-- until the next delayed task.
if token_due then out[2] = token_due end
if grouped > 0 then
  local first = redis.call('ZRANGE', rate_wait_key(prefix), 0, 0, 'WITHSCORES')
  if first[2] and (out[2] < 0 or tonumber(first[2]) < out[2]) then out[2] = tonumber(first[2]) end
end
for _, set in ipairs({delayed, retry}) do
  local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  if first[2] and (out[2] < 0 or tonumber(first[2]) < out[2]) then out[2] = tonumber(first[2]) end
end
return out
