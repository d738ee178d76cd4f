-- wrk script: POST batches to the worker. Environment:
--   BENCH_ITEMS   items per batch (default 1)
--   BENCH_TASKS   how many tasks to spread over: bench-0 .. bench-(n-1) (default 1)
--   BENCH_TASK    one task by name instead (the shards scenarios)
--   BENCH_KEYS    "0": items carry no idempotency key (a sharded task's keyless batches
--                 spread over its stores; keyed ones all go to its first)
--   BENCH_REPEAT  "1": every other batch repeats keys from a small pool (default off)
--   BENCH_KEY     the API key
--   BENCH_NOW     "1": no delay, so that every run executes while the load goes on
--   BENCH_RUN     what makes this load's idempotency keys its own (bench/run.mjs gives
--                 each wrk run its own): wrk's math.random starts from the same seed in
--                 every run, so without it a later load on the same worker repeats an
--                 earlier one's keys, and its items are deduplicated instead of accepted
local items = tonumber(os.getenv("BENCH_ITEMS") or "1")
local tasks = tonumber(os.getenv("BENCH_TASKS") or "1")
local one_task = os.getenv("BENCH_TASK")
local keyless = os.getenv("BENCH_KEYS") == "0"
local repeat_keys = os.getenv("BENCH_REPEAT") == "1"
local key = os.getenv("BENCH_KEY") or ""
local delay = os.getenv("BENCH_NOW") == "1" and "" or ',"delay":"1h"'
local counter = 0
-- Per-thread status counts, as numbers (wrk copies only plain values between threads).
local codes = { 200, 400, 401, 404, 413, 422, 429, 500, 502, 503 }
for _, code in ipairs(codes) do _G["s" .. code] = 0 end
s_other = 0
local threads = {}
local prefix = ""

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  prefix = string.format("%st%d-%d-", os.getenv("BENCH_RUN") or "", id, math.random(1, 1e9))
  wrk.method = "POST"
  wrk.headers["content-type"] = "application/json"
  wrk.headers["authorization"] = "Bearer " .. key
end

local payload = string.rep("p", 160)

function request()
  counter = counter + 1
  local parts = {}
  for i = 1, items do
    local k
    if repeat_keys and counter % 2 == 0 then
      k = "pool-" .. (i % 50)
    else
      k = prefix .. counter .. "-" .. i
    end
    local keyed = keyless and "" or string.format('"idempotencyKey":"%s",', k)
    parts[i] = string.format(
      '{"payload":{"n":%d,"text":"%s"},"options":{%s"tags":["bench","t%d"]%s}}',
      i, payload, keyed, i % 5, delay)
  end
  local task = one_task or ("bench-" .. (counter % tasks))
  return wrk.format(nil, "/api/v1/tasks/" .. task .. "/batch", nil, '{"items":[' .. table.concat(parts, ",") .. ']}')
end

function response(status, headers, body)
  local name = "s" .. status
  if _G[name] ~= nil then
    _G[name] = _G[name] + 1
  else
    s_other = s_other + 1
  end
end

function done(summary, latency, requests)
  local status_json = {}
  for _, code in ipairs(codes) do
    local n = 0
    for _, thread in ipairs(threads) do n = n + (thread:get("s" .. code) or 0) end
    if n > 0 then table.insert(status_json, string.format('"%d":%d', code, n)) end
  end
  local other = 0
  for _, thread in ipairs(threads) do other = other + (thread:get("s_other") or 0) end
  if other > 0 then table.insert(status_json, string.format('"other":%d', other)) end
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"socket_errors":%d,"timeouts":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.timeout,
    table.concat(status_json, ",")))
end
