//! `switchyard-bench`: a closed-loop load generator for the Switchyard gateway,
//! run by `bench/summary.sh` (see `bench/README.md`).
//!
//! What it measures, and why this way:
//!
//! - **Closed loop.** `--concurrency` tasks each send a request, read the whole
//!   answer and send the next, until a shared counter reaches `--requests` (or
//!   `--time-limit` passes). The load adapts to the gateway, so no queue builds
//!   up in the generator and the latencies are those of a busy gateway, not of
//!   an overrun one. A `--warmup` phase (not recorded) fills the connection
//!   pools first.
//! - **Latency.** Each request's time from send to the last body byte; p50,
//!   p90, p99 and max per run. With `--critical-path` (the route's longest chain
//!   of dependent upstream calls) p50 minus it is the gateway's own overhead;
//!   with `--sequential` (the sum of all its calls) p50/sequential shows what
//!   running the calls in parallel saves. The demo upstreams' sleeps overshoot
//!   (tokio timers have 1 ms granularity), so `--probe` also measures one
//!   upstream directly: p50 minus `--probe-calls` × its p50 is the overhead
//!   against the critical path the upstreams really deliver.
//! - **CPU.** With `--gateway-pid`, the gateway's utime+stime from
//!   `/proc/PID/stat` before and after the measured requests, per request. On a
//!   small shared machine this is much steadier than req/s, which moves with
//!   whatever else runs (this generator and the upstreams included).
//! - `--baseline` measures a second path (e.g. a plain proxy route) in every
//!   run right after the first, so both costs are taken under the same
//!   conditions and their ratio is meaningful.
//!
//! A response counts only if it is a 200 whose body was read completely; more
//! than 1% errors in a phase aborts with exit code 1. The runtime is tokio's
//! current-thread one: pin the process to one core (`taskset -c 1`).

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

#[derive(Parser)]
#[command(
    name = "switchyard-bench",
    about = "Closed-loop load generator for Switchyard"
)]
struct Args {
    /// Gateway base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Request path; `{id}` cycles through 1..=--ids.
    #[arg(long, default_value = "/customers/{id}/summary")]
    path_template: String,
    /// A second path measured in every run after the first (CPU comparison).
    #[arg(long)]
    baseline: Option<String>,
    /// How many distinct ids `{id}` cycles through.
    #[arg(long, default_value_t = 10_000)]
    ids: usize,
    /// Measured requests per run (and per path).
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Requests in flight at once (also the connection pool size).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Unrecorded requests before each measured phase.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Number of runs; the summary shows medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Per-request timeout (a timeout counts as an error).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Longest duration of one phase; it stops early when this passes.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    time_limit: Duration,
    /// PID of the gateway process, to measure its CPU time per request.
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// An upstream URL (`{id}` allowed) measured directly before the route in
    /// every run: what one upstream call really takes.
    #[arg(long)]
    probe: Option<String>,
    /// Calls on the route's critical path: their number × the probe's p50 is
    /// the critical path as the upstreams really deliver it.
    #[arg(long, default_value_t = 2)]
    probe_calls: usize,
    /// The route's critical path (e.g. 2 × upstream latency).
    #[arg(long, value_parser = humantime::parse_duration)]
    critical_path: Option<Duration>,
    /// The sum of all the route's upstream calls (e.g. 4 × upstream latency).
    #[arg(long, value_parser = humantime::parse_duration)]
    sequential: Option<Duration>,
}

/// The figures of one measured phase.
#[derive(Clone, Copy, Default)]
struct Figures {
    req_s: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    /// Gateway CPU µs per request.
    cpu_us: Option<f64>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency)
        .build(connector);
    let tck = clock_ticks();
    let mut paths = vec![args.path_template.clone()];
    paths.extend(args.baseline.clone());
    let (mut probes, mut all) = (Vec::new(), vec![Vec::new(); paths.len()]);
    for run in 1..=args.runs {
        if let Some(url) = &args.probe {
            phase(&client, &args, "", url, args.warmup, None).await;
            let f = phase(&client, &args, "", url, args.requests, None).await;
            println!("run {run} probe {}", line(&args, url, &f, None));
            probes.push(f);
        }
        for (path, figures) in paths.iter().zip(&mut all) {
            phase(&client, &args, &args.url, path, args.warmup, None).await;
            let f = phase(&client, &args, &args.url, path, args.requests, Some(tck)).await;
            println!("run {run} {}", line(&args, path, &f, probes.last()));
            figures.push(f);
        }
    }
    println!("\nsummary: medians of {} runs", args.runs);
    let probe = (!probes.is_empty()).then(|| medians(&probes));
    if let (Some(url), Some(p)) = (&args.probe, &probe) {
        println!("  probe {}", line(&args, url, p, None));
    }
    for (path, runs) in paths.iter().zip(&all) {
        println!("  {}", line(&args, path, &medians(runs), probe.as_ref()));
    }
    if let [main, base] = &all[..] {
        let ratios = main
            .iter()
            .zip(base)
            .filter_map(|(m, b)| Some(m.cpu_us? / b.cpu_us?));
        println!(
            "  CPU ratio {} / {}: {:.2} (median of per-run ratios)",
            paths[0],
            paths[1],
            median(ratios)
        );
    }
}

/// The median of each figure over runs.
fn medians(runs: &[Figures]) -> Figures {
    let med = |f: fn(&Figures) -> Option<f64>| median(runs.iter().filter_map(f));
    Figures {
        req_s: med(|f| Some(f.req_s)),
        p50: med(|f| Some(f.p50)),
        p90: med(|f| Some(f.p90)),
        p99: med(|f| Some(f.p99)),
        max: med(|f| Some(f.max)),
        cpu_us: Some(med(|f| f.cpu_us)).filter(|c| !c.is_nan()),
    }
}

/// Runs `budget` requests closed-loop and returns their figures; with `tck`
/// (clock ticks per second), also the gateway's CPU time per request.
async fn phase(
    client: &HttpClient,
    args: &Args,
    base: &str,
    template: &str,
    budget: usize,
    tck: Option<u64>,
) -> Figures {
    if budget == 0 {
        return Figures::default();
    }
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + args.time_limit;
    let cpu0 = tck.and_then(|t| cpu_time(args.gateway_pid?, t));
    let t0 = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, next, timeout) = (client.clone(), next.clone(), args.timeout);
        let (base, template, ids) = (base.to_string(), template.to_string(), args.ids.max(1));
        workers.spawn(async move {
            let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0, None);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= budget || Instant::now() >= deadline {
                    break (latencies, errors, first_error);
                }
                let path = template.replace("{id}", &(n % ids + 1).to_string());
                let sent = Instant::now();
                let answer = tokio::time::timeout(timeout, get(&client, &base, &path)).await;
                match answer.unwrap_or_else(|_| Err(format!("no answer within {timeout:?}"))) {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(format!("GET {path}: {e}"));
                    }
                }
            }
        });
    }
    let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0usize, None);
    while let Some(joined) = workers.join_next().await {
        let (l, e, f) = joined.expect("a worker panicked");
        latencies.extend(l);
        errors += e;
        first_error = first_error.or(f);
    }
    let wall = t0.elapsed();
    let cpu1 = tck.and_then(|t| cpu_time(args.gateway_pid?, t));
    let done = latencies.len() + errors;
    if errors * 100 > done || latencies.is_empty() {
        eprintln!("{template}: {errors} errors in {done} requests (more than 1%); aborting");
        eprintln!("first error: {}", first_error.unwrap_or_default());
        std::process::exit(1);
    }
    if done < budget {
        eprintln!("{template}: time limit reached after {done} of {budget} requests");
    }
    if let Some(first) = first_error.filter(|_| errors > 0) {
        eprintln!("{template}: {errors} errors; first: {first}");
    }
    latencies.sort_unstable();
    let pct = |p: usize| ms(latencies[(latencies.len() * p).div_ceil(100).max(1) - 1]);
    let cpu_us = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some((b - a).as_secs_f64() * 1e6 / done as f64),
        _ => None,
    };
    Figures {
        req_s: done as f64 / wall.as_secs_f64(),
        p50: pct(50),
        p90: pct(90),
        p99: pct(99),
        max: ms(latencies[latencies.len() - 1]),
        cpu_us,
    }
}

/// One GET; Ok only for a 200 whose body was read to the end.
async fn get(client: &HttpClient, base: &str, path: &str) -> Result<(), String> {
    let uri: Uri = format!("{base}{path}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let req = Request::get(uri)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| chain(&e))?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| chain(&e))?;
    if status != StatusCode::OK {
        let body = body.to_bytes();
        let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        return Err(format!("status {status}: {shown}"));
    }
    Ok(())
}

/// An error with its causes, `outer: inner: root`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s = format!("{s}: {cause}");
        source = cause.source();
    }
    s
}

/// One line of figures for a run (or of medians).
fn line(args: &Args, path: &str, f: &Figures, probe: Option<&Figures>) -> String {
    let mut s = format!(
        "{path}: {:.0} req/s | p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} ms",
        f.req_s, f.p50, f.p90, f.p99, f.max
    );
    if path == args.path_template {
        if let Some(cp) = args.critical_path.map(ms) {
            s += &format!(
                " | p50-critical {:+.2} ms, p50/critical {:.3}",
                f.p50 - cp,
                f.p50 / cp
            );
        }
        if let Some(seq) = args.sequential.map(ms) {
            s += &format!(", p50/sequential {:.3}", f.p50 / seq);
        }
        if let Some(p) = probe {
            let critical = p.p50 * args.probe_calls as f64;
            s += &format!(
                " | p50-measured critical ({} x probe p50 = {critical:.2} ms) {:+.2} ms",
                args.probe_calls,
                f.p50 - critical
            );
        }
    }
    if let Some(cpu) = f.cpu_us {
        s += &format!(" | gateway CPU {cpu:.1} µs/req");
    }
    s
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median (NaN when empty).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Clock ticks per second for `/proc` times (`getconf CLK_TCK`, else 100).
fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// The process's user + system CPU time so far, from `/proc/PID/stat`.
fn cpu_time(pid: u32, tck: u64) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: count fields after its `)`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_micros(ticks * 1_000_000 / tck))
}
