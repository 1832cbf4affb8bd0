-- Heartbeats as Eureka's client sends them, cycling through the registered instances.
local count = tonumber(os.getenv("INSTANCES") or "10000")
local n = 0
request = function()
  n = (n + 1) % count
  return wrk.format("PUT", "/eureka/apps/BENCH/bench-" .. n .. "?status=UP&lastDirtyTimestamp=1")
end
