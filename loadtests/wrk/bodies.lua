-- POST one prepared body per request from WRK_BODIES (a file, one body per line; thread i of n
-- takes lines i, i+n, …); past the end the thread starts again (counted in "wrapped").
-- Env: WRK_PATH, WRK_AUTH, WRK_EXPECT (substring counted as the expected answer).
package.path = (os.getenv("WRK_LUA_DIR") or "loadtests/wrk") .. "/?.lua;" .. package.path
local common = require("common")

local bodies = {}
local n = 0
local i = 0
local wrapped = 0
local path, headers

function setup(thread) common.setup(thread) end

function init(args)
  tid = _G.tid or 1
  local nthreads = _G.nthreads or 1
  local k = 0
  for line in io.lines(os.getenv("WRK_BODIES")) do
    if k % nthreads == tid - 1 and line ~= "" then
      n = n + 1
      bodies[n] = line
    end
    k = k + 1
  end
  path = os.getenv("WRK_PATH") or "/v1/gates/offline-scans"
  headers = { ["Content-Type"] = "application/json" }
  local auth = os.getenv("WRK_AUTH")
  if auth and auth ~= "" then headers["Authorization"] = auth end
end

function request()
  i = i + 1
  local idx = i
  if idx > n then
    wrapped = wrapped + 1
    idx = ((idx - 1) % n) + 1
  end
  return wrk.format("POST", path, headers, bodies[idx])
end

function response(status, h, body)
  common.response(status, h, body)
  common.publish(wrapped)
end

function done(summary, latency, requests) common.done(summary, latency, requests) end
