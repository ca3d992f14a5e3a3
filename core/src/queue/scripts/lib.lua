-- lib: prepended to every script (Lua in Redis has no includes), so the clock, the ready score,
-- the key names, the backoff formula and the overlap guard exist once.
--
-- Keys a script cannot name in KEYS (a task's hash, found inside the script) are built here from
-- the queue's prefix "<ns>:{<queue>}:" (ARGV[1] of every script): they share the queue's hash
-- tag, so every key a script touches is in one Redis Cluster slot. keys.rs builds the same names
-- on the Rust side; tests/tests/scripts.rs checks that both agree.

-- Redis's clock in ms: workers' clocks never decide a due time or a lease.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The ready set's score: highest priority first (ZPOPMIN), FIFO within a priority (seq).
local SHIFT = 70368744177664 -- 2^46
local function ready_score(pr, seq)
  return (100 - tonumber(pr)) * SHIFT + seq
end

local function task_key(prefix, id) return prefix .. 't:' .. id end
local function payload_key(prefix, id) return prefix .. 'p:' .. id end
local function idem_key(prefix, key) return prefix .. 'idem:' .. key end
local function done_key(prefix, id) return prefix .. 'done:' .. id end
local function guard_key(prefix, sg) return prefix .. 'sg:' .. sg end
local function parked_key(prefix, sg) return prefix .. 'sq:' .. sg end
-- Limits (queue_limits in Postgres is the record; restored into Redis by the rebuild): hash
-- "lim" with c (concurrency), rl/rp (rate: starts per period ms), gc (per-group concurrency),
-- gl/gp (per-group rate). Rate limits are sliding windows: "rl" (and "grl:<g>" per group) logs
-- the start times of the last period, so no window of one period ever holds more starts.
local function limits_key(prefix) return prefix .. 'lim' end
local function rate_key(prefix) return prefix .. 'rl' end
-- Groups (tenants). A task with a group waits in "gr:<g>" (same scores as ready), not in ready;
-- "gn" counts them. "grp" is the rotation of groups that may start a task, by turn number
-- ("gturn" hands them out; "gr0" is the turn of the ungrouped ready set, which takes part in
-- the rotation as one more group); "grw" holds groups waiting for a rate token (score = due);
-- "gw" is the set of groups with waiting tasks; "ga:<g>" the group's running attempts.
local function group_ready_key(prefix, g) return prefix .. 'gr:' .. g end
local function group_active_key(prefix, g) return prefix .. 'ga:' .. g end
local function group_rate_key(prefix, g) return prefix .. 'grl:' .. g end
local function groups_count_key(prefix) return prefix .. 'gn' end
local function rotation_key(prefix) return prefix .. 'grp' end
local function rate_wait_key(prefix) return prefix .. 'grw' end
local function turn_key(prefix) return prefix .. 'gturn' end
local function ungrouped_turn_key(prefix) return prefix .. 'gr0' end
local function waiting_groups_key(prefix) return prefix .. 'gw' end

-- Wake one idle worker, keeping only a few tokens: a worker that claims and leaves work behind
-- wakes the next (claim.lua), so a backlog of spurious wake-ups never builds up.
local function wake_one(wake)
  if redis.call('LLEN', wake) < 8 then redis.call('LPUSH', wake, '1') end
end

-- A task becomes ready: into the ready set, or its group's set (joining the rotation unless the
-- group waits for a rate token). `g` is the task's group (nil or '' = none).
local function to_ready(prefix, ready, seqkey, id, pr, g)
  local score = ready_score(pr, redis.call('INCR', seqkey))
  if not g or g == '' then
    redis.call('ZADD', ready, score, id)
    return
  end
  if redis.call('ZADD', group_ready_key(prefix, g), score, id) == 1 then
    redis.call('INCR', groups_count_key(prefix))
  end
  redis.call('SADD', waiting_groups_key(prefix), g)
  if not redis.call('ZSCORE', rate_wait_key(prefix), g) then
    redis.call('ZADD', rotation_key(prefix), 'NX', redis.call('INCR', turn_key(prefix)), g)
  end
end

-- A waiting task leaves the ready set (or its group's). Returns 1 when it was there.
local function from_ready(prefix, ready, id, g)
  if not g or g == '' then return redis.call('ZREM', ready, id) end
  local gk = group_ready_key(prefix, g)
  local n = redis.call('ZREM', gk, id)
  if n == 1 then
    redis.call('DECR', groups_count_key(prefix))
    if redis.call('EXISTS', gk) == 0 then
      redis.call('SREM', waiting_groups_key(prefix), g)
      redis.call('ZREM', rotation_key(prefix), g)
    end
  end
  return n
end

-- Tasks waiting to start: the ready set and every group's.
local function waiting_count(prefix, ready)
  return redis.call('ZCARD', ready) + (tonumber(redis.call('GET', groups_count_key(prefix))) or 0)
end

-- An attempt ended (ack, fail, reap, release): its group's slot frees, and the group rejoins
-- the rotation if it has tasks waiting; with a concurrency limit, a worker blocked by it is
-- woken. `limited` is the queue's concurrency limit as read by the caller (nil = none).
local function attempt_ended(prefix, ready, wake, id, g, limited)
  if g and g ~= '' then
    redis.call('ZREM', group_active_key(prefix, g), id)
    if redis.call('EXISTS', group_ready_key(prefix, g)) == 1 and not redis.call('ZSCORE', rate_wait_key(prefix), g) then
      if redis.call('ZADD', rotation_key(prefix), 'NX', redis.call('INCR', turn_key(prefix)), g) == 1 then
        wake_one(wake)
        return
      end
    end
  end
  if limited and waiting_count(prefix, ready) > 0 then wake_one(wake) end
end

-- The delay (ms) before the retry that follows attempt `a` (1-based): min(cap, base * 2^(a-1))
-- for exponential, min(cap, base) for fixed, then jitter with `rnd` in [0, 1). `bk` is the
-- compact form of the task's backoff, "e|f:<base>:<cap>:<none|full|equal>" (model.rs encodes it).
-- The one place the formula lives.
local function backoff_delay(bk, a, rnd)
  local kind, base, cap, jitter = string.match(bk, '^(%a):(%d+):(%d+):(%a+)$')
  base, cap = tonumber(base), tonumber(cap)
  local delay
  if kind == 'e' then
    delay = math.min(cap, base * 2 ^ (a - 1))
  else
    delay = math.min(cap, base)
  end
  if jitter == 'full' then
    delay = math.floor(delay * rnd)
  elseif jitter == 'equal' then
    delay = math.floor(delay / 2 + delay / 2 * rnd)
  end
  return delay
end

-- A schedule's occurrence (its hash has field sg = schedule id) that leaves Redis leaves a
-- tombstone "done:<id>" behind for a while, so the tick, which re-enqueues occurrences it
-- cannot find (after a crash between writing their rows and enqueueing them), never enqueues
-- one that already ran. enqueue.lua refuses an id with a tombstone.
local DONE_TTL_MS = 21600000 -- 6 h: longer than any audit lag the tick could observe
local function tombstone(prefix, id, sg)
  if sg and sg ~= '' then redis.call('SET', done_key(prefix, id), '1', 'PX', DONE_TTL_MS) end
end

-- A schedule with an overlap policy other than "allow" owns a guard key "sg:<schedule>" that
-- names its run in progress; claim.lua takes it. When that run ends, the guard is dropped and
-- the one occurrence parked behind it ("sq:<schedule>", overlap "queue_one") goes to ready.
local function guard_release(prefix, id, sg, ready, seqkey, wake)
  if not sg or sg == '' then return end
  local gkey = guard_key(prefix, sg)
  if redis.call('GET', gkey) ~= id then return end
  redis.call('DEL', gkey)
  local pkey = parked_key(prefix, sg)
  local parked = redis.call('GET', pkey)
  if not parked then return end
  redis.call('DEL', pkey)
  local f = redis.call('HMGET', task_key(prefix, parked), 'st', 'pr', 'g')
  if f[1] == 'queued' then
    to_ready(prefix, ready, seqkey, parked, f[2], f[3])
    wake_one(wake)
  end
end

-- ---------------------------------------------------------------------------------------------
