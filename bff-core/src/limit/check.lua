-- Several requests' rate limits and quotas, checked and counted one request after another, in
-- the order given: each request's all or nothing, exactly as if each had been its own call.
-- KEYS: per request, one per rate limit (GCRA), then one per quota.
-- ARGV: per request, its number of rate limits and of quotas; then per rate limit its interval
-- (microseconds) and burst; then per quota its requests and window (seconds).
-- Returns 4 integers per key, in the order of KEYS: allowed (1/0), remaining, retry after and
-- reset (microseconds). Time is Redis's own, so every replica agrees on it.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
local key = 0
local arg = 1
while arg <= #ARGV do
  local limits = tonumber(ARGV[arg])
  local quotas = tonumber(ARGV[arg + 1])
  arg = arg + 2
  local allowed = true
  local writes = {}
  local quota_writes = {}
  for _ = 1, limits do
    key = key + 1
    local interval = tonumber(ARGV[arg])
    local burst = tonumber(ARGV[arg + 1])
    arg = arg + 2
    local tat = tonumber(redis.call('GET', KEYS[key])) or now
    if tat < now then tat = now end
    local new_tat = tat + interval
    local allow_at = new_tat - burst * interval
    if now < allow_at then
      allowed = false
      out[#out + 1] = 0
      out[#out + 1] = 0
      out[#out + 1] = allow_at - now
      out[#out + 1] = tat - now
    else
      writes[key] = new_tat
      out[#out + 1] = 1
      out[#out + 1] = math.floor((now - allow_at) / interval)
      out[#out + 1] = 0
      out[#out + 1] = new_tat - now
    end
  end
  for _ = 1, quotas do
    key = key + 1
    local requests = tonumber(ARGV[arg])
    local per = tonumber(ARGV[arg + 1]) * 1000000
    arg = arg + 2
    local window = math.floor(now / per)
    local reset = (window + 1) * per - now
    local stored = redis.call('HMGET', KEYS[key], 'w', 'n')
    local used = 0
    if tonumber(stored[1]) == window then used = tonumber(stored[2]) or 0 end
    if used >= requests then
      allowed = false
      out[#out + 1] = 0
      out[#out + 1] = 0
      out[#out + 1] = reset
      out[#out + 1] = reset
    else
      quota_writes[key] = { window, used + 1, reset }
      out[#out + 1] = 1
      out[#out + 1] = requests - used - 1
      out[#out + 1] = 0
      out[#out + 1] = reset
    end
  end
  -- Written before the next request is judged, which sees them.
  if allowed then
    for i, new_tat in pairs(writes) do
      redis.call('SET', KEYS[i], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
    end
    for i, w in pairs(quota_writes) do
      redis.call('HSET', KEYS[i], 'w', string.format('%.0f', w[1]), 'n', string.format('%.0f', w[2]))
      redis.call('PEXPIRE', KEYS[i], math.ceil(w[3] / 1000) + 60000)
    end
  end
end
return out
