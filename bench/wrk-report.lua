-- wrk's done() hook: one JSON line with what bench/suite parses (µs).
-- Non-2xx/3xx answers and socket errors both count as errors.
done = function(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format(
    '{"tool":"wrk","requests":%d,"errors":%d,"duration_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, errors, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
