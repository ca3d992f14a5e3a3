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

-- Wake one idle worker, keeping only a few tokens: a worker that claims and leaves work behind
-- wakes the next (claim.lua), so a backlog of spurious wake-ups never builds up.
local function wake_one(wake)
  if redis.call('LLEN', wake) < 8 then redis.call('LPUSH', wake, '1') end
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
  local f = redis.call('HMGET', task_key(prefix, parked), 'st', 'pr')
  if f[1] == 'queued' then
    redis.call('ZADD', ready, ready_score(f[2], redis.call('INCR', seqkey)), parked)
    wake_one(wake)
  end
end

-- ---------------------------------------------------------------------------------------------
