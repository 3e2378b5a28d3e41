-- Shared by every wrk run: optional token rotation and a JSON summary line at the end.
-- Environment: BENCH_TOKENS (file, one token per line), BENCH_METHOD, BENCH_BODY_BYTES,
-- BENCH_CONNECTION_CLOSE (non-empty: every request says Connection: close, so each one
-- comes on a new connection; wrk's -H is not used because request() builds the headers).
local tokens = {}
local path_tokens = os.getenv("BENCH_TOKENS")
if path_tokens and path_tokens ~= "" then
  for line in io.lines(path_tokens) do tokens[#tokens + 1] = line end
end
local method = os.getenv("BENCH_METHOD") or "GET"
local body_bytes = tonumber(os.getenv("BENCH_BODY_BYTES") or "0")
local body = nil
if body_bytes > 0 then body = string.rep("x", body_bytes) end
local close = (os.getenv("BENCH_CONNECTION_CLOSE") or "") ~= ""
local counter = 0

function setup(thread)
  thread:set("offset", math.random(1, math.max(#tokens, 1)))
end

function request()
  local headers = {}
  if #tokens > 0 then
    counter = counter + 1
    headers["Authorization"] = "Bearer " .. tokens[((counter + offset) % #tokens) + 1]
  end
  if body then headers["Content-Type"] = "application/json" end
  if close then headers["Connection"] = "close" end
  return wrk.format(method, nil, headers, body)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
