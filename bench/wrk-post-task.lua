-- wrk script for scripts/bench: POST /v1/tasks with a JSON body and a bearer key, counting
-- responses by status in every thread, and printing one JSON summary line at the end:
--   CHRONOS_WRK {"ok":…, "other":…, "requests":…, "duration_us":…, "p50_us":…, …}
-- The key and queue come from CHRONOS_BENCH_KEY and CHRONOS_BENCH_QUEUE.
local key = os.getenv("CHRONOS_BENCH_KEY") or error("CHRONOS_BENCH_KEY is not set")
local queue = os.getenv("CHRONOS_BENCH_QUEUE") or "bench-api"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.body = '{"name":"noop","queue":"' .. queue .. '","payload":{"order":42}}'

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok = 0
  other = 0
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local total_ok, total_other = 0, 0
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_other = total_other + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    'CHRONOS_WRK {"ok":%d,"other":%d,"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,"socket_errors":%d}\n',
    total_ok, total_other, summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect + e.read + e.write + e.timeout))
end
