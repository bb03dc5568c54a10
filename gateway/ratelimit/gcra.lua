-- GCRA (generic cell rate algorithm; ATM Forum TM 4.0 §4.4.2, Brandur "Rate limiting,
-- Cells and GCRA"): a line-for-line port of gateway/ratelimit/gcra.py:gcra_us, run
-- atomically by Redis, so concurrent callers on any number of connections never exceed it.
--
-- KEYS[1]  the subject's key, e.g. rl:{gate:abc} — the ONLY key touched (Cluster-safe).
-- ARGV[1]  emission interval T in whole microseconds (>= 1)
-- ARGV[2]  burst b (>= 1)
-- ARGV[3]  cost (0 <= cost <= b; 0 peeks without writing)
-- ARGV[4]  optional "now" in microseconds since the epoch. Absent in production: time is
--          Redis TIME, one clock for every worker however skewed theirs are. Tests pass it
--          to drive the script from a FrozenClock.
-- Stored:  the TAT as an integer of microseconds, with PEXPIRE at the TAT (a key whose TAT
--          has passed means exactly "never seen", so it may vanish).
-- Returns: {allowed 0|1, remaining, retry_after_us, reset_after_us}
--
-- All values are integers below 2^53, exact in Lua 5.1's doubles.

local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
if not interval or not burst or not cost or interval < 1 or burst < 1 or cost < 0
    or cost > burst then
  return redis.error_reply("ERR gcra: bad interval, burst or cost")
end

local now
if ARGV[4] then
  now = tonumber(ARGV[4])
else
  -- Redis < 5 replicates scripts verbatim and refuses writes after TIME; Redis >= 5 (and
  -- 7, our target) replicates effects already, where this call is a no-op.
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then
  tat = now
end

local burst_us = burst * interval
local new_tat = tat + cost * interval
local allow_at = new_tat - burst_us
local diff = now - allow_at

if diff < 0 then
  local remaining = math.floor((now - (tat - burst_us)) / interval)
  if remaining < 0 then remaining = 0 end
  if remaining > burst then remaining = burst end
  return {0, remaining, -diff, tat - now}
end

if cost > 0 then
  redis.call('SET', KEYS[1], string.format('%d', new_tat),
             'PX', string.format('%d', math.ceil((new_tat - now) / 1000)))
end
local remaining = math.floor(diff / interval)
if remaining > burst then remaining = burst end
return {1, remaining, 0, new_tat - now}
