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
  bodies, n = common.my_lines("WRK_BODIES")
  path = os.getenv("WRK_PATH") or "/v1/gates/offline-scans"
  headers = common.headers("application/json")
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
