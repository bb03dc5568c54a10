-- The token and introspection rows against the gateway and its peer (loadtests/bench.py,
-- peer_comparison): a fixed form POST; every answer is checked, and only a checked one counts
-- as expected.
-- Env: WRK_PATH, WRK_BODY, WRK_AUTH (Authorization value), WRK_CHECK:
--   token       a 200 whose JSON has "access_token" holding a compact JWS (three base64url
--               segments) and "token_type": "Bearer"
--   introspect  a 200 whose JSON has "active": true
package.path = (os.getenv("WRK_LUA_DIR") or "loadtests/wrk") .. "/?.lua;" .. package.path
local common = require("common")

local req
local check = os.getenv("WRK_CHECK") or "token"

function setup(thread) common.setup(thread) end

function init(args)
  local headers = common.headers("application/x-www-form-urlencoded")
  req = wrk.format("POST", os.getenv("WRK_PATH") or "/", headers, os.getenv("WRK_BODY") or "")
end

function request() return req end

local function checked(status, body)
  if status ~= 200 or not body then return false end
  if check == "token" then
    local jws = string.match(body, '"access_token"%s*:%s*"([%w_%-]+%.[%w_%-]+%.[%w_%-]+)"')
    return jws ~= nil and string.find(body, '"token_type"%s*:%s*"Bearer"') ~= nil
  end
  return string.find(body, '"active"%s*:%s*true') ~= nil
end

function response(status, headers, body)
  local c = common.counts
  if status == 429 then c.s429 = c.s429 + 1
  elseif status >= 500 then c.s5 = c.s5 + 1
  elseif status >= 400 then c.s4 = c.s4 + 1
  else c.s2 = c.s2 + 1 end
  if checked(status, body) then
    c.expected = c.expected + 1
  else
    c.other = c.other + 1
    if common.first_other == nil then
      common.first_other = status .. " " .. string.sub(tostring(body), 1, 240)
    end
  end
  common.publish(0)
end

function done(summary, latency, requests) common.done(summary, latency, requests) end
