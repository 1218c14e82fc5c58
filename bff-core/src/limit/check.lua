-- Several requests' rate limits and quotas, checked and counted at once. Requests with the same
-- checks come as one group: its requests are judged one after another, each all or nothing,
-- exactly as if each had been its own call, so the first ones pass and, once one is refused, the
-- rest are too (nothing has changed for them). The groups are judged in the order given. Each key
-- is read once and written once, however many requests count on it.
-- KEYS: per group, one per rate limit (GCRA), then one per quota.
-- ARGV: per group, its number of requests, of rate limits and of quotas; then per rate limit its
-- interval (microseconds) and burst; then per quota its requests and window (seconds).
-- Returns per group how many of its requests pass, then two integers per key, as they were before
-- the group: for a rate limit, how far its theoretical arrival time is ahead of now (microseconds,
-- at least 0) and 0; for a quota, the requests used in the window and the microseconds until it
-- resets. `batch.rs` works each request's counts out of them. Time is Redis's own, so every
-- replica agrees on it.
local call, tonumber, format, floor, ceil, max, min =
  redis.call, tonumber, string.format, math.floor, math.ceil, math.max, math.min
local t = call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}   -- rate limit key -> theoretical arrival time
local quotas = {} -- quota key -> { window, used, reset, changed }
local changed = {} -- rate limit keys to write
local intervals = {} -- the group's rate limits' intervals, by place
local out = {}
local key = 0
local arg = 1

-- ceil(a / b) for whole a >= 0 and b >= 1, exact where a float division may round.
local function ceil_div(a, b)
  local q = floor(a / b)
  if q * b < a then q = q + 1 end
  if q > 0 and (q - 1) * b >= a then q = q - 1 end
  return q
end

while arg <= #ARGV do
  local n = tonumber(ARGV[arg])
  local limits = tonumber(ARGV[arg + 1])
  local windows = tonumber(ARGV[arg + 2])
  arg = arg + 3
  local pass = n
  out[#out + 1] = 0
  local at = #out
  for i = 1, limits do
    local name = KEYS[key + i]
    local interval = tonumber(ARGV[arg + 2 * i - 2])
    intervals[i] = interval
    local burst = tonumber(ARGV[arg + 2 * i - 1])
    local tat = tats[name]
    if tat == nil then
      tat = tonumber(call('GET', name)) or now
      tats[name] = tat
    end
    local ahead = max(tat - now, 0)
    -- The j-th request passes while ahead + j * interval <= burst * interval.
    pass = min(pass, max(burst - ceil_div(ahead, interval), 0))
    out[#out + 1] = ahead
    out[#out + 1] = 0
  end
  for i = limits + 1, limits + windows do
    local name = KEYS[key + i]
    local requests = tonumber(ARGV[arg + 2 * i - 2])
    local per = tonumber(ARGV[arg + 2 * i - 1]) * 1000000
    local window = floor(now / per)
    local quota = quotas[name]
    if quota == nil then
      local stored = call('HMGET', name, 'w', 'n')
      quota = { window, 0, (window + 1) * per - now }
      if tonumber(stored[1]) == window then quota[2] = tonumber(stored[2]) or 0 end
      quotas[name] = quota
    end
    pass = min(pass, max(requests - quota[2], 0))
    out[#out + 1] = quota[2]
    out[#out + 1] = quota[3]
  end
  out[at] = pass
  if pass > 0 then
    for i = 1, limits do
      local name = KEYS[key + i]
      tats[name] = now + max(tats[name] - now, 0) + pass * intervals[i]
      changed[name] = true
    end
    for i = limits + 1, limits + windows do
      local quota = quotas[KEYS[key + i]]
      quota[2] = quota[2] + pass
      quota[4] = true
    end
  end
  key = key + limits + windows
  arg = arg + 2 * (limits + windows)
end

-- Each key changed is written once, to expire when it is whole again. Numbers are written with
-- `%d` (exact below 2^63; Lua's own conversion would print 17 significant digits, slowly).
for name in pairs(changed) do
  local tat = tats[name]
  call('SET', name, format('%d', tat), 'PX', format('%d', ceil((tat - now) / 1000)))
end
for name, quota in pairs(quotas) do
  if quota[4] then
    call('HSET', name, 'w', format('%d', quota[1]), 'n', format('%d', quota[2]))
    call('PEXPIRE', name, format('%d', ceil(quota[3] / 1000) + 60000))
  end
end
return out
