-- One request's rate limits and quota, checked and counted atomically: all or nothing.
-- KEYS: one per rate limit (GCRA), then one per quota.
-- ARGV[1]: the number of rate limits; then per rate limit its interval (microseconds) and
-- burst; then per quota its requests and window (seconds).
-- Returns 4 integers per key: allowed (1/0), remaining, retry after and reset (microseconds).
-- Time is Redis's own, so every replica agrees on it.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limits = tonumber(ARGV[1])
local out = {}
local allowed = true
local writes = {}
for i = 1, limits do
  local interval = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
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
    writes[i] = new_tat
    out[#out + 1] = 1
    out[#out + 1] = math.floor((now - allow_at) / interval)
    out[#out + 1] = 0
    out[#out + 1] = new_tat - now
  end
end
local quota_writes = {}
local arg = 2 * limits + 2
for i = limits + 1, #KEYS do
  local requests = tonumber(ARGV[arg])
  local per = tonumber(ARGV[arg + 1]) * 1000000
  arg = arg + 2
  local window = math.floor(now / per)
  local reset = (window + 1) * per - now
  local stored = redis.call('HMGET', KEYS[i], 'w', 'n')
  local used = 0
  if tonumber(stored[1]) == window then used = tonumber(stored[2]) or 0 end
  if used >= requests then
    allowed = false
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = reset
    out[#out + 1] = reset
  else
    quota_writes[i] = { window, used + 1, reset }
    out[#out + 1] = 1
    out[#out + 1] = requests - used - 1
    out[#out + 1] = 0
    out[#out + 1] = reset
  end
end
if allowed then
  for i, new_tat in pairs(writes) do
    redis.call('SET', KEYS[i], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
  end
  for i, w in pairs(quota_writes) do
    redis.call('HSET', KEYS[i], 'w', string.format('%.0f', w[1]), 'n', string.format('%.0f', w[2]))
    redis.call('PEXPIRE', KEYS[i], math.ceil(w[3] / 1000) + 60000)
  end
end
return out
