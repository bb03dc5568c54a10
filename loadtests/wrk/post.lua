-- A fixed POST (noop baseline, token endpoint, introspection, code issuance).
-- Env: WRK_PATH, WRK_BODY, WRK_CTYPE, WRK_AUTH (Authorization value, optional), WRK_ACCEPT,
-- WRK_EXPECT (substring counted as the expected answer).
package.path = (os.getenv("WRK_LUA_DIR") or "loadtests/wrk") .. "/?.lua;" .. package.path
local common = require("common")

local req

function setup(thread) common.setup(thread) end

function init(args)
  local headers = common.headers(os.getenv("WRK_CTYPE") or "application/json")
  local accept = os.getenv("WRK_ACCEPT")
  if accept and accept ~= "" then headers["Accept"] = accept end
  req = wrk.format("POST", os.getenv("WRK_PATH") or "/", headers, os.getenv("WRK_BODY") or "")
end

function request() return req end

function response(status, headers, body)
  common.response(status, headers, body)
  common.publish(0)
end

function done(summary, latency, requests) common.done(summary, latency, requests) end
