-- One request shape per run, taken from the environment, or, with WRK_REQUESTS_FILE, many
-- callers: each line of the file is "<bearer credential><TAB><body>" and every request
-- takes one line at random. Prints one JSON line when done.
wrk.method = os.getenv("WRK_METHOD") or "GET"
local body = os.getenv("WRK_BODY")
if body and #body > 0 then wrk.body = body end
for line in string.gmatch(os.getenv("WRK_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end

local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

local prepared = {}
init = function(args)
  local file = os.getenv("WRK_REQUESTS_FILE")
  if not file or #file == 0 then return end
  math.randomseed(os.time() * 100 + (thread_id or 0))
  for line in io.lines(file) do
    local credential, payload = string.match(line, "^([^\t]*)\t(.*)$")
    local headers = {["Authorization"] = "Bearer " .. credential}
    if #payload > 0 then headers["Content-Type"] = "application/json" end
    prepared[#prepared + 1] = wrk.format(nil, nil, headers, #payload > 0 and payload or nil)
  end
end

-- Defined only for many callers: without it wrk sends one pre-built request, cheaply.
if (os.getenv("WRK_REQUESTS_FILE") or "") ~= "" then
  request = function() return prepared[math.random(#prepared)] end
end

done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non_2xx":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"timeouts":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.timeout, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.mean))
end
