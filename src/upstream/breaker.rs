//! The circuit breaker of one upstream.
//!
//! Closed: calls go through and their outcomes are counted over a sliding
//! window; when the window holds at least `min_calls` calls and the failed
//! share reaches `failure_ratio`, it opens. Open: calls fail at once (no
//! upstream request) until `open_for` has passed; then the next call becomes
//! the one probe (half-open) while every other call still fails fast. The
//! probe's success closes the breaker; its failure — including its timeout,
//! or its future being dropped unfinished — opens it again.

use super::CallError;
use super::window::Window;
use crate::plan::BreakerPolicy;
use crate::telemetry;
use std::sync::Mutex;
use tokio::time::Instant;

/// The breaker's state, as the `switchyard_circuit_state` gauge shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls flow (gauge 0).
    Closed,
    /// Calls fail fast until the instant (gauge 1).
    Open(Instant),
    /// One probe is out (gauge 2).
    HalfOpen,
}

/// One upstream's breaker.
#[derive(Debug)]
pub struct Breaker {
    upstream: String,
    policy: BreakerPolicy,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// (calls, failures).
    window: Window,
}

/// Leave to make one call; say how it went with `record`.
#[must_use]
pub struct Permit<'a> {
    breaker: Option<&'a Breaker>,
    probe: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(upstream: &str, policy: BreakerPolicy) -> Self {
        telemetry::circuit_state(upstream, 0);
        Breaker {
            upstream: upstream.to_string(),
            inner: Mutex::new(Inner {
                state: State::Closed,
                window: Window::new(policy.window),
            }),
            policy,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.inner.lock().map(|i| i.state).unwrap_or(State::Closed)
    }

    /// Leave to call, or `CircuitOpen` while open (or while a probe is out).
    pub fn acquire(&self) -> Result<Permit<'_>, CallError> {
        let mut inner = self.inner.lock().map_err(|_| CallError::CircuitOpen)?;
        let probe = match inner.state {
            State::Closed => false,
            State::Open(until) if Instant::now() >= until => {
                inner.state = State::HalfOpen;
                telemetry::circuit_state(&self.upstream, 2);
                tracing::info!(upstream = %self.upstream, "circuit half-open: sending one probe");
                true
            }
            State::Open(_) | State::HalfOpen => return Err(CallError::CircuitOpen),
        };
        Ok(Permit {
            breaker: Some(self),
            probe,
        })
    }
}

/// Whether an outcome says the upstream is unhealthy. A 4xx, a body we could
/// not use or a bad input are answers from a healthy upstream.
pub fn is_failure(e: &CallError) -> bool {
    matches!(
        e,
        CallError::Connect(_) | CallError::Transport(_) | CallError::Timeout(_)
    ) || matches!(e, CallError::Status(s) if s.is_server_error())
}

impl Permit<'_> {
    /// A permit that records nothing (upstreams without a breaker).
    pub fn unlimited() -> Self {
        Permit {
            breaker: None,
            probe: false,
        }
    }

    /// Records how the call went.
    pub fn record(mut self, failed: bool) {
        self.settle(failed);
    }

    fn settle(&mut self, failed: bool) {
        let Some(breaker) = self.breaker.take() else {
            return;
        };
        let (policy, upstream) = (&breaker.policy, &breaker.upstream);
        let Ok(mut inner) = breaker.inner.lock() else {
            return;
        };
        let now = Instant::now();
        if self.probe {
            if failed {
                inner.state = State::Open(now + policy.open_for);
                telemetry::circuit_state(upstream, 1);
                tracing::warn!(%upstream, "circuit probe failed: open again");
            } else {
                inner.state = State::Closed;
                inner.window.clear();
                telemetry::circuit_state(upstream, 0);
                tracing::info!(%upstream, "circuit closed");
            }
            return;
        }
        // Outcomes of calls that started before the circuit opened do not count.
        if inner.state != State::Closed {
            return;
        }
        inner.window.add(now, 1, u64::from(failed));
        let (calls, failures) = inner.window.sums(now);
        if calls >= u64::from(policy.min_calls)
            && failures as f64 >= policy.failure_ratio * calls as f64
        {
            inner.state = State::Open(now + policy.open_for);
            inner.window.clear();
            telemetry::circuit_state(upstream, 1);
            tracing::warn!(%upstream, calls, failures, "circuit open");
        }
    }
}

impl Drop for Permit<'_> {
    /// A probe abandoned unfinished (its route's deadline passed, its client
    /// left) counts as failed: the breaker must never stay half-open.
    fn drop(&mut self) {
        if self.probe {
            self.settle(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn breaker() -> Breaker {
        Breaker::new(
            "test",
            BreakerPolicy {
                failure_ratio: 0.5,
                min_calls: 4,
                window: Duration::from_secs(10),
                open_for: Duration::from_secs(5),
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_the_failure_ratio_after_min_calls() {
        let b = breaker();
        for _ in 0..3 {
            b.acquire().unwrap().record(true);
        }
        // Three failures, but fewer than `min_calls` calls: still closed.
        assert_eq!(b.state(), State::Closed);
        b.acquire().unwrap().record(false);
        // 3 of 4 failed.
        assert!(matches!(b.state(), State::Open(_)));
        assert_eq!(b.acquire().err(), Some(CallError::CircuitOpen));
    }

    #[tokio::test(start_paused = true)]
    async fn stays_closed_under_the_ratio() {
        let b = breaker();
        for i in 0..20 {
            b.acquire().unwrap().record(i % 4 == 3);
        }
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_after_the_open_period_then_closed() {
        let b = breaker();
        for _ in 0..4 {
            b.acquire().unwrap().record(true);
        }
        tokio::time::advance(Duration::from_millis(4_900)).await;
        assert!(b.acquire().is_err());
        tokio::time::advance(Duration::from_millis(200)).await;
        let probe = b.acquire().unwrap();
        assert_eq!(b.state(), State::HalfOpen);
        // Only one probe at a time.
        assert!(b.acquire().is_err());
        probe.record(false);
        assert_eq!(b.state(), State::Closed);
        assert!(b.acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_or_abandoned_probe_opens_it_again() {
        let b = breaker();
        for _ in 0..4 {
            b.acquire().unwrap().record(true);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        b.acquire().unwrap().record(true);
        assert!(matches!(b.state(), State::Open(_)));
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(b.acquire().unwrap());
        assert!(matches!(b.state(), State::Open(_)));
        tokio::time::advance(Duration::from_secs(5)).await;
        b.acquire().unwrap().record(false);
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn late_results_of_calls_from_before_it_opened_are_ignored() {
        let b = breaker();
        let late = b.acquire().unwrap();
        for _ in 0..4 {
            b.acquire().unwrap().record(true);
        }
        late.record(false);
        assert!(matches!(b.state(), State::Open(_)));
    }
}
