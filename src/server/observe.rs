//! Turning how a route's calls ended into `CallRecord`s for telemetry.

use crate::exec::{CallState, Outcome, RouteFailure};
use crate::plan::{Aggregate, Plan};
use crate::telemetry::{CacheLookup, CallRecord};
use crate::upstream::CallError;
use tokio::time::Instant;

/// What a call still running when the route ended counts as: `timeout` if
/// the route deadline ended it, `cancelled` if another call's failure did.
pub fn running_outcome(failure: &RouteFailure) -> &'static str {
    match failure.outcome.states.get(failure.call) {
        Some(CallState::Running) => "timeout",
        _ => "cancelled",
    }
}

/// One record per call of the route, in call id order.
pub fn aggregate_calls<'g>(
    plan: &'g Plan,
    agg: &'g Aggregate,
    outcome: &Outcome,
    running: &'static str,
    request_started: Instant,
    out: &mut Vec<CallRecord<'g>>,
) {
    out.reserve(agg.calls.len());
    for (i, call) in agg.calls.iter().enumerate() {
        let cached = outcome.cache.get(i).copied().flatten();
        // An answer from the cache did not go out: not an upstream call.
        let from_cache = cached.is_some_and(|c| c.lookup != CacheLookup::Miss);
        let sent = outcome
            .started
            .get(i)
            .copied()
            .flatten()
            .filter(|_| !from_cache);
        let duration = outcome
            .elapsed
            .get(i)
            .copied()
            .flatten()
            .or_else(|| sent.map(|s| s.elapsed()));
        let (kind, status) = match outcome.states.get(i) {
            Some(CallState::Done(r)) if sent.is_some() => {
                ("ok", call.for_each.is_none().then(|| r.status.as_u16()))
            }
            Some(CallState::Done(r)) if from_cache => ("ok", Some(r.status.as_u16())),
            Some(CallState::Done(_)) => ("empty_list", None),
            Some(CallState::Failed(CallError::Status(s))) => ("status", Some(s.as_u16())),
            Some(CallState::Failed(e)) => (e.kind(), None),
            Some(CallState::Running) => (running, None),
            Some(CallState::NotRun) | None => ("not_run", None),
        };
        out.push(CallRecord {
            name: &call.name,
            upstream: &plan.upstreams[call.upstream].name,
            method: call.method.as_str(),
            index: i,
            start: sent.map(|s| s.saturating_duration_since(request_started)),
            duration: sent.and(duration),
            outcome: kind,
            status,
            waited_for: &call.deps,
            cache: cached.map(|c| c.desc()),
        });
    }
}
