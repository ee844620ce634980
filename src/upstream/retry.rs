//! Retries: which failures are retried, the backoff between attempts, and the
//! per-upstream retry budget that keeps a failing upstream from a retry storm.
//!
//! The budget works like tower's `TpsBudget` and Finagle's `RetryBudget`:
//! every first attempt deposits `ratio` of a retry, every retry withdraws one,
//! over a 10 s sliding window; on top of that `min_per_second` retries are
//! always allowed so that a quiet upstream can still be retried.

use super::CallError;
use super::window::Window;
use crate::plan::{BudgetPolicy, RetryPolicy};
use backon::BackoffBuilder;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The window the budget is measured over: long enough to smooth bursts,
/// short enough that a recovered upstream soon has its budget back.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// Whether a failure is one the policy retries.
pub fn is_retryable(policy: &RetryPolicy, e: &CallError) -> bool {
    match e {
        CallError::Connect(_) => policy.on.connect,
        CallError::Transport(_) => policy.on.transport,
        CallError::Timeout(_) => policy.on.timeout,
        CallError::Status(s) => policy.on.statuses.contains(s),
        _ => false,
    }
}

/// The delays between attempts: exponential from `backoff`, capped at
/// `max_backoff`, each with random jitter (up to the delay again) so that
/// clients that failed together do not retry together.
pub fn delays(policy: &RetryPolicy) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(policy.backoff)
        .with_max_delay(policy.max_backoff)
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(policy.retries as usize)
        .build()
        .map(|d| d.min(policy.max_backoff))
}

/// How many retries an upstream may still make.
#[derive(Debug)]
pub struct RetryBudget {
    policy: BudgetPolicy,
    /// (first attempts, retries) per slot.
    window: Mutex<Window>,
}

impl RetryBudget {
    /// A full budget.
    pub fn new(policy: BudgetPolicy) -> Self {
        RetryBudget {
            policy,
            window: Mutex::new(Window::new(BUDGET_WINDOW)),
        }
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        if let Ok(mut w) = self.window.lock() {
            w.add(Instant::now(), 1, 0);
        }
    }

    /// Takes one retry from the budget, if it has one.
    pub fn try_withdraw(&self) -> bool {
        let Ok(mut w) = self.window.lock() else {
            return false;
        };
        let now = Instant::now();
        let (requests, retries) = w.sums(now);
        let (_, this_second) = w.current(now);
        let by_ratio = (retries as f64) < self.policy.ratio * requests as f64;
        // The current slot is a tenth of the window, i.e. one second.
        let by_minimum = this_second < u64::from(self.policy.min_per_second);
        if by_ratio || by_minimum {
            w.add(now, 0, 1);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(percent: f64, min: u32) -> RetryBudget {
        RetryBudget::new(BudgetPolicy {
            ratio: percent / 100.0,
            min_per_second: min,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_share_of_first_attempts() {
        let b = budget(20.0, 0);
        for _ in 0..100 {
            b.deposit();
        }
        let granted = (0..300).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 20);
        // Once the window has passed, the deposits are gone too.
        tokio::time::advance(BUDGET_WINDOW + Duration::from_secs(1)).await;
        assert!(!b.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_upstream_still_gets_its_minimum() {
        let b = budget(20.0, 1);
        b.deposit();
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.try_withdraw());
    }

    #[test]
    fn delays_grow_and_stay_capped() {
        let policy = RetryPolicy {
            retries: 6,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            ..RetryPolicy::default()
        };
        let d: Vec<Duration> = delays(&policy).collect();
        assert_eq!(d.len(), 6);
        assert!(
            d[0] >= Duration::from_millis(10) && d[0] <= Duration::from_millis(20),
            "{d:?}"
        );
        assert!(d.iter().all(|x| *x <= Duration::from_millis(100)), "{d:?}");
    }

    #[test]
    fn only_configured_failures_are_retried() {
        let p = RetryPolicy::default();
        assert!(is_retryable(&p, &CallError::Connect("refused".into())));
        assert!(is_retryable(
            &p,
            &CallError::Status(http::StatusCode::SERVICE_UNAVAILABLE)
        ));
        assert!(!is_retryable(
            &p,
            &CallError::Status(http::StatusCode::INTERNAL_SERVER_ERROR)
        ));
        assert!(!is_retryable(
            &p,
            &CallError::Status(http::StatusCode::NOT_FOUND)
        ));
        assert!(!is_retryable(
            &p,
            &CallError::Timeout(Duration::from_secs(1))
        ));
        assert!(!is_retryable(&p, &CallError::Decode("x".into())));
    }
}
