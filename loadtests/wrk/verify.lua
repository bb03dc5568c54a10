-- POST a code verification per request, one code per request from WRK_CODES (a file, one
-- code per line; thread i of n takes lines i, i+n, …). With distinct pre-issued codes each is
-- used once (the allow path); past the end the thread starts again (those are replays, and
-- are counted in "wrapped"). Every request has its own request_id (no idempotent retries).
-- Env: WRK_PATH (/v1/codes/verify), WRK_AUTH (Bearer gate token), WRK_SCENE, WRK_CODES,
-- WRK_EXPECT ("\"allow\"" or a deny reason).
package.path = (os.getenv("WRK_LUA_DIR") or "loadtests/wrk") .. "/?.lua;" .. package.path
local common = require("common")

local codes = {}
local n = 0
local i = 0
local wrapped = 0
local prefix, path, headers

function setup(thread) common.setup(thread) end

function init(args)
  tid = _G.tid or 1            -- set by setup() through thread:set
  codes, n = common.my_lines("WRK_CODES")
  path = os.getenv("WRK_PATH") or "/v1/codes/verify"
  headers = common.headers("application/json")
  -- WRK_RUN makes request ids unique across runs (a reused id would be an idempotent retry)
  prefix = '","scene":"' .. (os.getenv("WRK_SCENE") or "metro") .. '","request_id":"' ..
           (os.getenv("WRK_RUN") or "run") .. "-b" .. tid .. "-"
end

function request()
  i = i + 1
  local idx = i
  if idx > n then
    wrapped = wrapped + 1
    idx = ((idx - 1) % n) + 1
  end
  return wrk.format("POST", path, headers, '{"code":"' .. codes[idx] .. prefix .. i .. '"}')
end

function response(status, h, body)
  common.response(status, h, body)
  common.publish(wrapped)
end

function done(summary, latency, requests) common.done(summary, latency, requests) end
