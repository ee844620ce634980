//! The Redis store: every gateway instance keeps its buckets in one Redis, so
//! a limit is exact across instances and survives their restarts.
//!
//! One decision is one script invocation (one round trip, atomic in Redis):
//! the script reads Redis `TIME` (one clock for every instance), reads every
//! bucket of the request's Redis policies, and writes them back only if all
//! of them admit, so one policy's rejection never spends another's quota.
//! Each key expires when its bucket would be full again, which bounds
//! Redis's memory by the live clients too.
//!
//! Keys look like `{switchyard}:rl:POLICY:KEY`: the whole prefix is the hash
//! tag, so in a Redis Cluster every key of a decision is in one slot (which a
//! multi-key script needs) at the price of all limiter keys sharing a shard.
//!
//! Health: after a failure the store is *degraded*: decisions skip Redis (the
//! policies' `on_redis_error` applies) and one request per `PROBE_INTERVAL`
//! tries Redis again; the first success ends the degraded state.

use super::gcra::Gcra;
use crate::plan::limit::RedisPlan;
use crate::telemetry;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// While degraded, how often one request tries Redis again: short enough to
/// recover within a second, long enough not to pile timeouts onto requests.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Microseconds: Redis `TIME` resolution, and exact in Lua's doubles.
pub const UNITS_PER_SEC: u64 = 1_000_000;

/// KEYS[i]: the bucket of policy i. ARGV[2i-1], ARGV[2i]: its emission
/// interval and span in microseconds. Returns `{admitted, occupancy_1, …}`,
/// each occupancy (TAT - now, at least 0) as it was *before* this request.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local occ = {}
local admitted = 1
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local span = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key))
  local o = 0
  if tat and tat > now then o = tat - now end
  occ[i] = o
  if o + interval > span then admitted = 0 end
end
if admitted == 1 then
  for i, key in ipairs(KEYS) do
    local after = occ[i] + tonumber(ARGV[2 * i - 1])
    redis.call('SET', key, string.format('%.0f', now + after), 'PX', math.ceil(after / 1000) + 1)
  end
end
local out = { admitted }
for i = 1, #occ do out[i + 1] = occ[i] end
return out
";

/// Why Redis gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    /// Degraded and not this request's turn to probe: Redis was not asked.
    #[error("redis is degraded; not asked")]
    Skipped,
    /// No answer within the configured timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Connection or command error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The script answered something else than it returns.
    #[error("redis script answered {0} values for {1} keys")]
    Malformed(usize, usize),
}

/// One bucket to decide in a script call.
pub struct ScriptBucket {
    /// The full Redis key.
    pub key: String,
    /// The policy's parameters in microseconds.
    pub gcra: Gcra,
}

/// What the script said.
#[derive(Debug)]
pub struct ScriptAnswer {
    /// Whether every bucket admitted (and so was written).
    pub admitted: bool,
    /// Each bucket's occupancy before the request, in microseconds.
    pub occupancy: Vec<u64>,
}

/// A shared Redis with its health.
pub struct RedisStore {
    client: redis::Client,
    connection: OnceLock<ConnectionManager>,
    script: redis::Script,
    timeout: Duration,
    prefix: String,
    degraded: AtomicBool,
    /// Nanoseconds since `epoch` before which a degraded store is not probed.
    probe_after: AtomicU64,
    epoch: Instant,
}

impl RedisStore {
    /// A store for the plan's Redis; connects on first use.
    pub fn new(plan: &RedisPlan) -> Result<RedisStore, redis::RedisError> {
        Ok(RedisStore {
            client: redis::Client::open(plan.url.as_str())?,
            connection: OnceLock::new(),
            script: redis::Script::new(SCRIPT),
            timeout: plan.timeout,
            prefix: format!("{{{}}}:rl:", plan.key_prefix),
            degraded: AtomicBool::new(false),
            probe_after: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// The Redis key of a policy's bucket.
    pub fn key(&self, policy: &str, suffix: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + policy.len() + suffix.len() + 1);
        k.push_str(&self.prefix);
        k.push_str(policy);
        k.push(':');
        k.push_str(suffix);
        k
    }

    /// Whether decisions currently skip Redis.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    fn connection(&self) -> Result<ConnectionManager, redis::RedisError> {
        if let Some(c) = self.connection.get() {
            return Ok(c.clone());
        }
        // Our own timeout bounds every decision; the manager's retries only
        // need to cover a quick reconnect.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(100));
        let made = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        // Two first requests may both make one; the first stored wins.
        Ok(self.connection.get_or_init(|| made).clone())
    }

    /// Decides every bucket in one script call (Redis is asked only when
    /// healthy, or when it is this request's turn to probe).
    pub async fn decide(&self, buckets: &[ScriptBucket]) -> Result<ScriptAnswer, RedisFailure> {
        if self.degraded.load(Ordering::Relaxed) {
            let now = self.epoch.elapsed().as_nanos() as u64;
            let due = self.probe_after.load(Ordering::Relaxed);
            let next = now + PROBE_INTERVAL.as_nanos() as u64;
            if now < due
                || self
                    .probe_after
                    .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                return Err(RedisFailure::Skipped);
            }
        }
        let result = self.invoke(buckets).await;
        match &result {
            Ok(_) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    telemetry::ratelimit_backend_recovered();
                }
            }
            Err(e) => {
                let now = self.epoch.elapsed().as_nanos() as u64;
                self.probe_after
                    .store(now + PROBE_INTERVAL.as_nanos() as u64, Ordering::Relaxed);
                let was = self.degraded.swap(true, Ordering::Relaxed);
                telemetry::ratelimit_backend_error(&e.to_string(), !was);
            }
        }
        result
    }

    async fn invoke(&self, buckets: &[ScriptBucket]) -> Result<ScriptAnswer, RedisFailure> {
        let mut call = self.script.prepare_invoke();
        for b in buckets {
            call.key(&b.key);
        }
        for b in buckets {
            call.arg(b.gcra.interval).arg(b.gcra.span);
        }
        let mut conn = self.connection()?;
        let answer: Vec<i64> = tokio::time::timeout(self.timeout, call.invoke_async(&mut conn))
            .await
            .map_err(|_| RedisFailure::Timeout(self.timeout))??;
        if answer.len() != buckets.len() + 1 {
            return Err(RedisFailure::Malformed(answer.len(), buckets.len()));
        }
        Ok(ScriptAnswer {
            admitted: answer[0] == 1,
            occupancy: answer[1..].iter().map(|&o| o.max(0) as u64).collect(),
        })
    }
}
