-- Shared by the benchmark's wrk scripts (loadtests/bench.py): per-thread counters of status
-- classes and of answers containing WRK_EXPECT, reported by done() as one JSON line
-- ("WRKJSON {...}") that bench.py parses. wrk's Lua is LuaJIT; os.getenv works.
local M = {}
local threads = {}
local counter = 1

function M.setup(thread)
  thread:set("tid", counter)
  thread:set("nthreads", tonumber(os.getenv("WRK_THREADS") or "1"))
  counter = counter + 1
  table.insert(threads, thread)
end

-- This thread's share of the non-empty lines of the file named by env var `name` (thread i
-- of n takes lines i, i+n, …), and how many.
function M.my_lines(name)
  local tid = _G.tid or 1
  local nthreads = _G.nthreads or 1
  local out, n, k = {}, 0, 0
  for line in io.lines(os.getenv(name)) do
    if k % nthreads == tid - 1 and line ~= "" then
      n = n + 1
      out[n] = line
    end
    k = k + 1
  end
  return out, n
end

-- Request headers: this Content-Type, and WRK_AUTH as Authorization when set.
function M.headers(content_type)
  local headers = { ["Content-Type"] = content_type }
  local auth = os.getenv("WRK_AUTH")
  if auth and auth ~= "" then headers["Authorization"] = auth end
  return headers
end

M.expect = os.getenv("WRK_EXPECT") or ""
M.counts = { s2 = 0, s4 = 0, s429 = 0, s5 = 0, expected = 0, other = 0 }

function M.response(status, headers, body)
  local c = M.counts
  if status == 429 then c.s429 = c.s429 + 1
  elseif status >= 500 then c.s5 = c.s5 + 1
  elseif status >= 400 then c.s4 = c.s4 + 1
  else c.s2 = c.s2 + 1 end
  if M.expect ~= "" and body and string.find(body, M.expect, 1, true) then
    c.expected = c.expected + 1
  else
    c.other = c.other + 1
    if M.first_other == nil then  -- kept for the report: what an unexpected answer said
      M.first_other = status .. " " .. string.sub(tostring(body), 1, 240)
    end
  end
end

function M.done(summary, latency, requests)
  local t = { s2 = 0, s4 = 0, s429 = 0, s5 = 0, expected = 0, other = 0, wrapped = 0 }
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do
      t[k] = t[k] + (tonumber(thread:get("c_" .. k)) or 0)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"s2":%d,"s4":%d,"s429":%d,"s5":%d,"expected":%d,' ..
    '"other":%d,"wrapped":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d,"first_other":"%s"}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, t.s2, t.s4, t.s429, t.s5,
    t.expected, t.other, t.wrapped, e.connect, e.read, e.write, e.status, e.timeout,
    first_other()))
end

-- The first thread's first unexpected answer, made safe inside a JSON string.
function first_other()
  for _, thread in ipairs(threads) do
    local v = thread:get("c_first_other")
    if v then return (string.gsub(v, '[%c"\\]', "'")) end
  end
  return ""
end

-- Threads publish their counters as globals so done() (in the main state) can read them.
function M.publish(wrapped)
  for k, v in pairs(M.counts) do _G["c_" .. k] = v end
  _G["c_wrapped"] = wrapped or 0
  _G["c_first_other"] = M.first_other
end

return M
