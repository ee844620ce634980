//! Runs one route's call graph: every call starts the moment its own inputs
//! are ready, each gets `min(its timeout, time left before the route
//! deadline)`, and a failed required call cancels the rest (dropping their
//! futures closes their connections).

pub mod eval;
pub mod render;

use crate::cache::policy::CachePolicy;
use crate::cache::{Cache, CacheInfo};
use crate::config::OnItemError;
use crate::plan::expr::CallId;
use crate::plan::{Aggregate, CallPlan, ForEach, Plan, RoutePlan};
use crate::telemetry::trace::TraceContext;
use crate::upstream::{CallError, JsonBody, JsonResponse, UpstreamClient, Upstreams};
use bytes::Bytes;
use eval::{Env, RequestView};
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::{HeaderMap, Request, StatusCode};
use render::Forwarding;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;

/// Where a call ended.
#[derive(Debug)]
pub enum CallState {
    /// Not started (its inputs never became ready).
    NotRun,
    /// Sent and not yet answered.
    Running,
    /// Answered with JSON.
    Done(JsonResponse),
    /// Failed or skipped; only optional calls (and calls depending on them) end here.
    Failed(CallError),
}

/// The end state of every call, and how long each took.
#[derive(Debug)]
pub struct Outcome {
    /// By call id.
    pub states: Vec<CallState>,
    /// By call id; `None` for calls that were never sent.
    pub elapsed: Vec<Option<Duration>>,
    /// By call id: `for_each` items that failed without failing the call
    /// (`keep_null`, `skip`), with their index in the item list.
    pub item_errors: Vec<Vec<(usize, CallError)>>,
    /// By call id: when it was sent; `None` for calls that were never sent.
    pub started: Vec<Option<Instant>>,
    /// By call id; how a cached call was answered (`None`: no cache).
    pub cache: Vec<Option<CacheInfo>>,
}

impl Outcome {
    /// Successful results by call id, as expressions read them.
    pub fn results(&self) -> Vec<Option<&JsonResponse>> {
        self.states
            .iter()
            .map(|s| match s {
                CallState::Done(r) => Some(r),
                _ => None,
            })
            .collect()
    }
}

/// A required call failed: the route fails with this.
#[derive(Debug)]
pub struct RouteFailure {
    /// The call that failed.
    pub call: CallId,
    /// Why.
    pub error: CallError,
    /// The other calls as they stood.
    pub outcome: Outcome,
}

type CallFuture<'a> = Pin<Box<dyn Future<Output = Finished> + Send + 'a>>;

/// The inputs of one route execution.
pub struct Execution<'a> {
    /// The compiled plan.
    pub plan: &'a Plan,
    /// The matched route.
    pub route: &'a RoutePlan,
    /// Its call graph.
    pub agg: &'a Aggregate,
    /// Upstream connection pools.
    pub upstreams: &'a Upstreams,
    /// The client request as expressions see it.
    pub view: &'a RequestView<'a>,
    /// The client's headers (for `forward_headers`).
    pub client_headers: &'a HeaderMap,
    /// `X-Forwarded-*` values.
    pub forwarding: &'a Forwarding,
    /// The request's trace: each call is sent its own `traceparent`. `None`
    /// passes the client's trace headers through unchanged.
    pub trace: Option<&'a TraceContext>,
    /// The caches of cached calls.
    pub cache: &'a Cache,
}

/// Runs the route's calls to completion or to the first required failure.
pub async fn run(r: &Execution<'_>) -> Result<Outcome, Box<RouteFailure>> {
    let calls = &r.agg.calls;
    let deadline = Instant::now() + r.route.timeout;
    let mut outcome = Outcome {
        states: calls.iter().map(|_| CallState::NotRun).collect(),
        elapsed: vec![None; calls.len()],
        item_errors: vec![Vec::new(); calls.len()],
        started: vec![None; calls.len()],
        cache: vec![None; calls.len()],
    };
    let mut waiting_on: Vec<usize> = calls.iter().map(|c| c.deps.len()).collect();
    let mut ready: Vec<CallId> = r.agg.roots.iter().rev().copied().collect();
    let mut inflight: FuturesUnordered<CallFuture<'_>> = FuturesUnordered::new();
    loop {
        while let Some(id) = ready.pop() {
            let call = &calls[id];
            let failed_dep = call
                .deps
                .iter()
                .find(|&&d| matches!(outcome.states[d], CallState::Failed(_)));
            let started = match failed_dep {
                Some(&d) => Err(CallError::DependencyFailed(calls[d].name.clone())),
                None => start(r, id, &outcome, deadline),
            };
            match started {
                Ok(Started::Sent(fut)) => {
                    outcome.states[id] = CallState::Running;
                    outcome.started[id] = Some(Instant::now());
                    inflight.push(fut);
                }
                Ok(Started::Answered(resp)) => finish(
                    r.agg,
                    id,
                    Ok(resp),
                    &mut outcome,
                    &mut waiting_on,
                    &mut ready,
                )?,
                Err(e) => finish(r.agg, id, Err(e), &mut outcome, &mut waiting_on, &mut ready)?,
            }
        }
        match tokio::time::timeout_at(deadline, inflight.next()).await {
            Ok(Some(Finished {
                id,
                result,
                took,
                item_errors,
                cache,
            })) => {
                outcome.elapsed[id] = Some(took);
                outcome.item_errors[id] = item_errors;
                outcome.cache[id] = cache;
                finish(r.agg, id, result, &mut outcome, &mut waiting_on, &mut ready)?;
            }
            Ok(None) => return Ok(outcome),
            Err(_) => {
                // The route deadline passed; whichever call is still running is to blame.
                let call = outcome
                    .states
                    .iter()
                    .position(|s| matches!(s, CallState::Running))
                    .unwrap_or(0);
                return Err(Box::new(RouteFailure {
                    call,
                    error: CallError::Timeout(r.route.timeout),
                    outcome,
                }));
            }
        }
    }
}

/// Records a call's end and readies the calls waiting for it. A required call's
/// failure ends the route (except skips caused by a failed optional call).
fn finish(
    agg: &Aggregate,
    id: CallId,
    result: Result<JsonResponse, CallError>,
    outcome: &mut Outcome,
    waiting_on: &mut [usize],
    ready: &mut Vec<CallId>,
) -> Result<(), Box<RouteFailure>> {
    let call = &agg.calls[id];
    outcome.states[id] = match result {
        Ok(mut resp) => {
            // Parse the body (when something looks inside) only as far as the route reads it.
            if let Some(reads) = agg.reads.get(id) {
                resp.body = resp.body.reading(reads);
            }
            CallState::Done(resp)
        }
        Err(e) if call.optional || matches!(e, CallError::DependencyFailed(_)) => {
            CallState::Failed(e)
        }
        Err(error) => {
            outcome.states[id] = CallState::Failed(error.clone());
            return Err(Box::new(RouteFailure {
                call: id,
                error,
                outcome: std::mem::replace(
                    outcome,
                    Outcome {
                        states: Vec::new(),
                        elapsed: Vec::new(),
                        item_errors: Vec::new(),
                        started: Vec::new(),
                        cache: Vec::new(),
                    },
                ),
            }));
        }
    };
    for &d in &call.dependents {
        waiting_on[d] -= 1;
        if waiting_on[d] == 0 {
            ready.push(d);
        }
    }
    Ok(())
}

enum Started<'a> {
    /// The request is on its way.
    Sent(CallFuture<'a>),
    /// Nothing needed sending (an empty list input): this is the answer.
    Answered(JsonResponse),
}

fn empty_list_answer() -> JsonResponse {
    JsonResponse {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: JsonBody::list(&[]),
    }
}

fn start<'a>(
    r: &Execution<'a>,
    id: CallId,
    outcome: &Outcome,
    deadline: Instant,
) -> Result<Started<'a>, CallError> {
    let call: &'a CallPlan = &r.agg.calls[id];
    let up = &r.plan.upstreams[call.upstream];
    let client = r.upstreams.get(call.upstream);
    let results = outcome.results();
    let env = Env {
        request: r.view,
        results: &results,
        item: None,
        errors: None,
    };
    let trace = r.trace.map(|t| render::CallTrace::of(t, id));
    let trace = trace.as_ref();
    let Some(for_each) = &call.for_each else {
        let Some(req) = render::request(call, up, &env, r.client_headers, r.forwarding, trace)?
        else {
            return Ok(Started::Answered(empty_list_answer()));
        };
        if let Some(policy) = &call.cache {
            let cached = cached_fetch(r, call, policy, &env, client, req, deadline);
            return Ok(Started::Sent(Box::pin(async move {
                let t0 = Instant::now();
                let (result, info) = cached.await;
                Finished {
                    cache: Some(info),
                    ..finished(id, result, t0, Vec::new())
                }
            })));
        }
        return Ok(Started::Sent(Box::pin(async move {
            let t0 = Instant::now();
            let result = client.call(req, call, deadline).await;
            finished(id, result, t0, Vec::new())
        })));
    };
    let list = eval::eval(&for_each.list, &env)
        .filter(|v| !v.is_null())
        .ok_or_else(|| CallError::MissingDependency(for_each.list.text.clone()))?;
    let Some(items) = list.as_array() else {
        return Err(CallError::BadInput(format!(
            "`for_each: {}` is not a list",
            for_each.list.text
        )));
    };
    let items = eval::distinct(items);
    if items.is_empty() {
        return Ok(Started::Answered(empty_list_answer()));
    }
    let requests: Vec<Result<Option<ItemFetch<'a>>, CallError>> = items
        .iter()
        .map(|item| {
            let env = Env {
                item: Some(item),
                ..env
            };
            let req = render::request(call, up, &env, r.client_headers, r.forwarding, trace)?;
            Ok(req.map(|req| match &call.cache {
                Some(policy) => {
                    ItemFetch::Cached(cached_fetch(r, call, policy, &env, client, req, deadline))
                }
                None => ItemFetch::Plain(Box::new(req)),
            }))
        })
        .collect();
    Ok(Started::Sent(Box::pin(fan_out(
        id, call, for_each, client, requests, deadline,
    ))))
}

async fn fan_out(
    id: CallId,
    call: &CallPlan,
    for_each: &ForEach,
    client: &UpstreamClient,
    requests: Vec<Result<Option<ItemFetch<'_>>, CallError>>,
    deadline: Instant,
) -> Finished {
    let t0 = Instant::now();
    // Futures are lazy: collecting them sends nothing.
    let items: Vec<_> = requests
        .into_iter()
        .enumerate()
        .map(|(i, req)| fetch_item(i, client, req, call, deadline))
        .collect();
    // `buffer_unordered` refills a slot the moment any item finishes (no
    // head-of-line blocking); the index puts answers back in input order.
    let mut slots: Vec<Option<JsonBody>> = vec![None; items.len()];
    let mut answers = futures_util::stream::iter(items).buffer_unordered(for_each.concurrency);
    let mut item_errors = Vec::new();
    while let Some((i, answer)) = answers.next().await {
        match (answer, for_each.on_item_error) {
            (Ok(body), _) => slots[i] = Some(body),
            (Err(e), OnItemError::Fail) => return finished(id, Err(e), t0, Vec::new()),
            (Err(e), OnItemError::KeepNull) => {
                slots[i] = Some(JsonBody::null());
                item_errors.push((i, e));
            }
            (Err(e), OnItemError::Skip) => item_errors.push((i, e)),
        }
    }
    item_errors.sort_by_key(|(i, _)| *i);
    let resp = JsonResponse {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: JsonBody::list(&slots.into_iter().flatten().collect::<Vec<_>>()),
    };
    finished(id, Ok(resp), t0, item_errors)
}

fn finished(
    id: CallId,
    result: Result<JsonResponse, CallError>,
    started: Instant,
    item_errors: Vec<(usize, CallError)>,
) -> Finished {
    Finished {
        id,
        result,
        took: started.elapsed(),
        item_errors,
        cache: None,
    }
}

/// What a call's future yields.
struct Finished {
    id: CallId,
    result: Result<JsonResponse, CallError>,
    took: Duration,
    /// `for_each` items that failed but did not fail the call.
    item_errors: Vec<(usize, CallError)>,
    /// How its cache answered, for a cached call.
    cache: Option<CacheInfo>,
}

/// One item of a `for_each` call, tagged with its index.
async fn fetch_item(
    index: usize,
    client: &UpstreamClient,
    req: Result<Option<ItemFetch<'_>>, CallError>,
    call: &CallPlan,
    deadline: Instant,
) -> (usize, Result<JsonBody, CallError>) {
    let answer = match req {
        Ok(Some(ItemFetch::Plain(req))) => client.call(*req, call, deadline).await.map(|r| r.body),
        Ok(Some(ItemFetch::Cached(cached))) => cached.await.0.map(|r| r.body),
        Ok(None) => Ok(JsonBody::list(&[])),
        Err(e) => Err(e),
    };
    (index, answer)
}

/// One item request of a `for_each` call: sent as is, or through the cache.
enum ItemFetch<'a> {
    Plain(Box<Request<Bytes>>),
    Cached(CachedFetch<'a>),
}

type CachedFetch<'a> =
    Pin<Box<dyn Future<Output = (Result<JsonResponse, CallError>, CacheInfo)> + Send + 'a>>;

/// A call's request through its cache: the key covers what the request
/// sends; the fetch itself owns everything it needs, so that a flight can
/// outlive the request that started it (other requests wait for it).
fn cached_fetch<'a>(
    r: &Execution<'a>,
    call: &'a CallPlan,
    policy: &'a CachePolicy,
    env: &Env<'_>,
    client: &UpstreamClient,
    req: Request<Bytes>,
    deadline: Instant,
) -> CachedFetch<'a> {
    let up = &r.plan.upstreams[call.upstream];
    let key = crate::cache::key::call_key(
        &up.name,
        req.method(),
        req.uri(),
        req.headers(),
        r.client_headers,
        policy,
    );
    let tags = crate::cache::render_tags(&policy.tags, env);
    let client = client.clone();
    let (retry, hedge_after, timeout) = (call.retry.clone(), call.hedge_after, call.timeout);
    let upstream_fetch = Box::pin(async move {
        client
            .call_with(req, &retry, hedge_after, timeout, deadline)
            .await
    });
    let cache = r.cache;
    let no_store = crate::cache::freshness::request_forbids_store(r.client_headers);
    Box::pin(async move {
        cache
            .call(policy, key, tags, no_store, upstream_fetch)
            .await
    })
}
