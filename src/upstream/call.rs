//! One call's resilience stack, in the order a call passes through it:
//!
//! 1. **retry** — only idempotent methods (or `unsafe_methods`), only the
//!    configured failures, with exponential backoff and jitter, only while
//!    the upstream's retry budget allows, and only while the route deadline
//!    leaves time for the backoff;
//! 2. **hedge** — an idempotent attempt that is slow gets a second one
//!    (drawn from the same budget); the first success wins;
//! 3. **bulkhead** — at most `max_in_flight` attempts at once, the rest fail fast;
//! 4. **breaker** — fail fast while the upstream's circuit is open;
//! 5. **deadline** — each attempt gets `min(call timeout, time left)`;
//! 6. **send and read** — pooled connection, body decoded and capped, JSON parsed.

use super::{CallError, JsonResponse, UpstreamClient, breaker, full, hedge, retry};
use crate::plan::CallPlan;
use crate::plan::resilience::{RetryPolicy, is_idempotent};
use crate::telemetry;
use bytes::Bytes;
use http::Request;
use std::time::Duration;
use tokio::time::Instant;

impl UpstreamClient {
    /// Makes one call (or one `for_each` item) with every policy applied.
    pub async fn call(
        &self,
        req: Request<Bytes>,
        call: &CallPlan,
        deadline: Instant,
    ) -> Result<JsonResponse, CallError> {
        self.call_with(req, &call.retry, call.hedge_after, call.timeout, deadline)
            .await
    }

    /// `call` with the policy spelled out, for callers that must own it
    /// (a cache flight may outlive the request that started it).
    pub async fn call_with(
        &self,
        req: Request<Bytes>,
        policy: &RetryPolicy,
        hedge_after: Option<Duration>,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<JsonResponse, CallError> {
        self.budget.deposit();
        let may_retry =
            policy.retries > 0 && (policy.unsafe_methods || is_idempotent(req.method()));
        let mut delays = retry::delays(policy);
        loop {
            let may_hedge = || {
                let granted = self.budget.try_withdraw();
                if granted {
                    telemetry::retry_hedged(&self.name);
                }
                granted
            };
            let result = hedge::hedged(hedge_after, may_hedge, || {
                self.attempt(&req, timeout, deadline)
            })
            .await;
            let error = match result {
                Ok(answer) => return Ok(answer),
                Err(e) => e,
            };
            if !may_retry || !retry::is_retryable(policy, &error) {
                return Err(error);
            }
            let Some(delay) = delays.next() else {
                return Err(error);
            };
            // A retry that cannot finish before the deadline only adds load.
            if Instant::now() + delay >= deadline {
                return Err(error);
            }
            if !self.budget.try_withdraw() {
                telemetry::retry_budget_exhausted(&self.name);
                return Err(error);
            }
            telemetry::retry_attempt(&self.name, error.kind());
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt: bulkhead, breaker, then the request within its time.
    async fn attempt(
        &self,
        req: &Request<Bytes>,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<JsonResponse, CallError> {
        // The bulkhead comes first so that a shed call never uses up the
        // breaker's single half-open probe.
        let _slot = self.bulkhead.try_enter()?;
        let permit = self.breaker_permit()?;
        let budget = timeout.min(deadline.saturating_duration_since(Instant::now()));
        let req = req.clone().map(full);
        let result = match tokio::time::timeout(budget, self.fetch_json(req)).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout(budget)),
        };
        permit.record(result.as_ref().err().is_some_and(breaker::is_failure));
        result
    }
}
