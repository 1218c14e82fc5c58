-- wrk script for the fault matrix: counts responses by status and those carrying X-Bff-Degraded,
-- and prints them, with the slowest response, after the run.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
  degraded = 0
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  if headers["X-Bff-Degraded"] or headers["x-bff-degraded"] then
    degraded = degraded + 1
  end
end

function done(summary, latency, requests)
  local total, degraded_total = {}, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("counts")) do
      total[status] = (total[status] or 0) + n
    end
    degraded_total = degraded_total + thread:get("degraded")
  end
  io.write("STATUSES")
  for status, n in pairs(total) do
    io.write(string.format(" %d=%d", status, n))
  end
  io.write(string.format("\nDEGRADED %d\nMAX_MS %.1f\n", degraded_total, latency.max / 1000))
end
