-- wrk script for bench/gateway_bench.py.
--
-- Always: at the end, print one line "BENCH_JSON {...}" with requests, rate,
-- latency percentiles (µs) and error counts, so the runner reads exact figures
-- rather than parsing wrk's rounded text.
--
-- With BENCH_RATE set (requests per second for the whole run) and BENCH_THREADS
-- (wrk's -t): pace the load. Plain wrk has no fixed-rate mode (wrk2's -R), so
-- each thread keeps a schedule of send times spaced 1/(rate per thread) apart and
-- `delay()` holds each connection until its slot. Latency is then measured from
-- the moment the request is written, as wrk always does. With enough connections
-- (far more than rate × latency) a connection is always free at its slot, so the
-- offered rate is the target rate. If the server falls behind, the schedule
-- catches up for at most one second rather than bursting without bound.

local ffi = require("ffi")
ffi.cdef [[
  typedef long time_t;
  typedef struct { time_t tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local rate = tonumber(os.getenv("BENCH_RATE") or "")
local threads = tonumber(os.getenv("BENCH_THREADS") or "1")

if rate and rate > 0 then
  local interval = 1000.0 * threads / rate -- ms between two sends of one thread
  local next_send = nil

  function delay()
    local now = now_ms()
    if next_send == nil or next_send < now - 1000 then
      next_send = now
    end
    local wait = next_send - now
    next_send = next_send + interval
    if wait < 0 then
      return 0
    end
    return math.floor(wait)
  end
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "p999_us": %d, "max_us": %d, "mean_us": %.1f, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "non_2xx": %d}\n',
    summary.requests, seconds, summary.requests / seconds, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean, e.connect, e.read, e.write,
    e.timeout, e.status))
end
