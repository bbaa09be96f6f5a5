-- wrk script of npm run bench: one API key per request (bench-key, or bench-key-0..N-1 in turn
-- when run with `-- N`, starting at the Mth with `-- N M`), status codes counted, and a JSON summary line for bench/run.mjs.
local threads = {}

function setup(thread)
  thread:set("first", #threads)
  table.insert(threads, thread)
end

function init(args)
  keys = tonumber(args[1] or "1")
  counter = first + tonumber(args[2] or "0")
  statuses = {}
end

function request()
  counter = counter + 1
  local key = "bench-key"
  if keys > 1 then key = "bench-key-" .. (counter % keys) end
  return wrk.format("GET", "/v1/items", { ["x-api-key"] = key })
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do
      all[code] = (all[code] or 0) + n
    end
  end
  local parts = {}
  for code, n in pairs(all) do
    table.insert(parts, string.format('"%d":%d', code, n))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests":%d,"durationUs":%d,"p50Us":%d,"p99Us":%d,"errors":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, table.concat(parts, ",")))
end
