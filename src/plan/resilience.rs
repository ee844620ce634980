//! Compiled resilience settings: retries, circuit breaker, bulkhead, hedging
//! and listener limits, with their defaults and the checks that report
//! mistakes at the line they are on.

use super::Compiler;
use crate::config::{Pos, RawBreaker, RawRetry, RawServer, RetryCondition, Sp};
use http::{Method, StatusCode};
use std::time::Duration;

/// Default first retry delay: long enough for a restarting instance to be
/// replaced behind a load balancer, short next to typical timeouts.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);
/// Default longest delay between attempts: a route deadline is usually a few seconds.
pub const DEFAULT_RETRY_MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Default retry budget: retries add at most 20% to an upstream's load, so a
/// failing upstream never sees a retry storm (Finagle and Envoy use the same order).
pub const DEFAULT_RETRY_BUDGET_PERCENT: f64 = 20.0;
/// Default retries per second allowed outside the budget: a quiet upstream
/// (a request a minute) can still have one retried.
pub const DEFAULT_RETRY_BUDGET_MIN_PER_SECOND: u32 = 1;
/// Default share of failed calls that opens a breaker.
pub const DEFAULT_BREAKER_FAILURE_PERCENT: f64 = 50.0;
/// Default fewest calls in the window before the ratio counts: a couple of
/// failures at low traffic do not open it.
pub const DEFAULT_BREAKER_MIN_CALLS: u32 = 10;
/// Default breaker window.
pub const DEFAULT_BREAKER_WINDOW: Duration = Duration::from_secs(10);
/// Default time a breaker stays open before a probe.
pub const DEFAULT_BREAKER_OPEN_FOR: Duration = Duration::from_secs(5);
/// Default in-flight cap per upstream: far above what a healthy upstream
/// needs, low enough that a stalled one cannot take every socket (Envoy's
/// default `max_requests` is the same).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default header-read timeout: slow-header (slowloris) clients are cut off.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest request head: browsers send a few KiB; 64 KiB leaves room
/// for large cookies and tokens.
pub const DEFAULT_MAX_HEADER_SIZE: u64 = 64 << 10;
/// Default most client connections: well under common `ulimit -n` settings.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default request time limit (head to head): above the default route deadline.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default drain timeout on shutdown: within Kubernetes' 30 s grace period.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Which failures a retry is for.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryOn {
    /// No connection could be made (the request was never sent).
    pub connect: bool,
    /// The connection failed after it was made.
    pub transport: bool,
    /// The attempt's timeout passed.
    pub timeout: bool,
    /// These statuses.
    pub statuses: Vec<StatusCode>,
}

impl Default for RetryOn {
    fn default() -> Self {
        RetryOn {
            connect: true,
            transport: false,
            timeout: false,
            statuses: vec![
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::GATEWAY_TIMEOUT,
            ],
        }
    }
}

/// How a call is retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Extra attempts after the first; 0 is off.
    pub retries: u32,
    /// Which failures are retried.
    pub on: RetryOn,
    /// The first delay; doubled each retry.
    pub backoff: Duration,
    /// The longest delay.
    pub max_backoff: Duration,
    /// Also retry POST and PATCH.
    pub unsafe_methods: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 0,
            on: RetryOn::default(),
            backoff: DEFAULT_RETRY_BACKOFF,
            max_backoff: DEFAULT_RETRY_MAX_BACKOFF,
            unsafe_methods: false,
        }
    }
}

/// The retry budget of an upstream (shared by all its calls).
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetPolicy {
    /// Retries per first attempt, over the budget window (0.2 = 20%).
    pub ratio: f64,
    /// Retries per second always allowed.
    pub min_per_second: u32,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        BudgetPolicy {
            ratio: DEFAULT_RETRY_BUDGET_PERCENT / 100.0,
            min_per_second: DEFAULT_RETRY_BUDGET_MIN_PER_SECOND,
        }
    }
}

/// When an upstream's circuit opens and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    /// Failed share of the window's calls that opens it (0.5 = 50%).
    pub failure_ratio: f64,
    /// Fewest calls in the window for the ratio to count.
    pub min_calls: u32,
    /// The sliding window.
    pub window: Duration,
    /// Open period before a half-open probe.
    pub open_for: Duration,
}

/// Client-side limits of the listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerLimits {
    /// Longest a client may take to send its request head.
    pub header_read_timeout: Duration,
    /// Largest request head in bytes.
    pub max_header_size: usize,
    /// Most open client connections.
    pub max_connections: usize,
    /// Longest from request head to response head.
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_header_size: DEFAULT_MAX_HEADER_SIZE as usize,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// GET, HEAD, PUT, DELETE, OPTIONS: sending them twice does no more than
/// once (RFC 9110 §9.2.2), so they may be retried and hedged.
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

impl Compiler {
    /// Listener limits of `server`.
    pub(super) fn listener_limits(&mut self, s: &RawServer) -> ListenerLimits {
        let d = ListenerLimits::default();
        let max_header_size = self.size(
            &s.max_header_size,
            "max_header_size",
            d.max_header_size as u64,
        );
        // hyper needs room for at least one read buffer (8 KiB).
        let max_header_size = match &s.max_header_size {
            Some(raw) if max_header_size < 8192 => {
                self.error(raw.pos, "`max_header_size` must be at least 8KiB");
                d.max_header_size
            }
            _ => usize::try_from(max_header_size).unwrap_or(usize::MAX),
        };
        let max_connections = match &s.max_connections {
            Some(n) if n.value == 0 => {
                self.error(n.pos, "`max_connections` must be at least 1");
                d.max_connections
            }
            Some(n) => n.value,
            None => d.max_connections,
        };
        ListenerLimits {
            header_read_timeout: self.duration(
                &s.header_read_timeout,
                "header_read_timeout",
                d.header_read_timeout,
            ),
            max_header_size,
            max_connections,
            request_timeout: self.duration(
                &s.request_timeout,
                "request_timeout",
                d.request_timeout,
            ),
            drain_timeout: self.duration(&s.drain_timeout, "drain_timeout", d.drain_timeout),
        }
    }

    /// An upstream's retry policy and budget.
    pub(super) fn upstream_retry(
        &mut self,
        raw: &Option<Sp<RawRetry>>,
    ) -> (RetryPolicy, BudgetPolicy) {
        let Some(raw) = raw else {
            return (RetryPolicy::default(), BudgetPolicy::default());
        };
        let policy = self.retry(&raw.value, &RetryPolicy::default());
        let mut budget = BudgetPolicy::default();
        if let Some(p) = &raw.value.budget_percent {
            if p.value.is_finite() && (0.0..=1000.0).contains(&p.value) {
                budget.ratio = p.value / 100.0;
            } else {
                self.error(p.pos, "`budget_percent` must be between 0 and 1000");
            }
        }
        if let Some(m) = &raw.value.budget_min_per_second {
            budget.min_per_second = m.value;
        }
        (policy, budget)
    }

    /// A call's retry policy: its own fields over the upstream's.
    pub(super) fn call_retry(
        &mut self,
        raw: &Option<Sp<RawRetry>>,
        upstream: &RetryPolicy,
        method: &Method,
    ) -> RetryPolicy {
        match raw {
            None => upstream.clone(),
            Some(raw) => {
                for (field, pos) in [
                    (
                        "budget_percent",
                        raw.value.budget_percent.as_ref().map(|b| b.pos),
                    ),
                    (
                        "budget_min_per_second",
                        raw.value.budget_min_per_second.as_ref().map(|b| b.pos),
                    ),
                ] {
                    if let Some(pos) = pos {
                        self.error(
                            pos,
                            format!("`{field}` is shared by every call of an upstream; set it on the upstream's `retry`"),
                        );
                    }
                }
                let policy = self.retry(&raw.value, upstream);
                if policy.retries > 0 && !policy.unsafe_methods && !is_idempotent(method) {
                    self.error(
                        raw.pos,
                        format!("a {method} call is not idempotent and is never retried; add `unsafe_methods: true` if sending it twice is safe"),
                    );
                }
                policy
            }
        }
    }

    fn retry(&mut self, raw: &RawRetry, base: &RetryPolicy) -> RetryPolicy {
        let mut p = base.clone();
        if let Some(n) = &raw.retries {
            if n.value > 10 {
                self.error(n.pos, "`retries` is at most 10");
            }
            p.retries = n.value.min(10);
        }
        if let Some(list) = &raw.on {
            p.on = RetryOn {
                connect: false,
                transport: false,
                timeout: false,
                statuses: Vec::new(),
            };
            for c in list {
                match &c.value {
                    RetryCondition::Kind(k) if k == "connect" => p.on.connect = true,
                    RetryCondition::Kind(k) if k == "transport" => p.on.transport = true,
                    RetryCondition::Kind(k) if k == "timeout" => p.on.timeout = true,
                    RetryCondition::Kind(k) => self.error(
                        c.pos,
                        format!("`{k}` is not a retry condition: use `connect`, `transport`, `timeout` or a 5xx status"),
                    ),
                    RetryCondition::Status(s) => {
                        match u16::try_from(*s).ok().and_then(|s| StatusCode::from_u16(s).ok()) {
                            Some(st) if st.is_server_error() => p.on.statuses.push(st),
                            _ => self.error(
                                c.pos,
                                format!("`{s}`: only 5xx statuses are retried (a 4xx is the caller's mistake)"),
                            ),
                        }
                    }
                }
            }
        }
        p.backoff = self.duration(&raw.backoff, "backoff", p.backoff);
        p.max_backoff = self.duration(&raw.max_backoff, "max_backoff", p.max_backoff);
        if p.max_backoff < p.backoff {
            let pos = raw
                .max_backoff
                .as_ref()
                .or(raw.backoff.as_ref())
                .map_or(Pos::default(), |b| b.pos);
            self.error(pos, "`max_backoff` is shorter than `backoff`");
        }
        if let Some(u) = &raw.unsafe_methods {
            p.unsafe_methods = u.value;
        }
        p
    }

    /// An upstream's breaker, when it has one.
    pub(super) fn breaker(&mut self, raw: &Option<Sp<RawBreaker>>) -> Option<BreakerPolicy> {
        let b = &raw.as_ref()?.value;
        let failure_ratio = match &b.failure_percent {
            None => DEFAULT_BREAKER_FAILURE_PERCENT / 100.0,
            Some(p) if p.value.is_finite() && p.value > 0.0 && p.value <= 100.0 => p.value / 100.0,
            Some(p) => {
                self.error(p.pos, "`failure_percent` must be above 0 and at most 100");
                DEFAULT_BREAKER_FAILURE_PERCENT / 100.0
            }
        };
        let min_calls = match &b.min_calls {
            None => DEFAULT_BREAKER_MIN_CALLS,
            Some(n) if n.value == 0 => {
                self.error(n.pos, "`min_calls` must be at least 1");
                1
            }
            Some(n) => n.value,
        };
        Some(BreakerPolicy {
            failure_ratio,
            min_calls,
            window: self.duration(&b.window, "window", DEFAULT_BREAKER_WINDOW),
            open_for: self.duration(&b.open_for, "open_for", DEFAULT_BREAKER_OPEN_FOR),
        })
    }

    /// A hedging delay: a duration, or `off`.
    pub(super) fn hedge_after(
        &mut self,
        raw: &Option<Sp<String>>,
        base: Option<Duration>,
    ) -> Option<Duration> {
        match raw {
            None => base,
            Some(r) if r.value.trim() == "off" => None,
            Some(_) => Some(self.duration(raw, "hedge_after", Duration::from_millis(1))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
