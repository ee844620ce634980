//! `switchyard-bench`: a closed-loop load generator for the Switchyard gateway,
//! run by `bench/summary.sh` (see `bench/README.md`).
//!
//! - **Closed loop**: `--concurrency` tasks each send a request, read the whole
//!   answer and send the next, until a shared counter reaches `--requests` (or
//!   `--time-limit` passes). The load adapts to the gateway: no queue builds up
//!   in the generator, and latencies are those of a busy, not an overrun,
//!   gateway. An unrecorded `--warmup` fills the connection pools first.
//! - **Latency**: send to last body byte, p50/p90/p99/max per run. p50 minus
//!   `--critical-path` (the longest chain of dependent upstream calls) is the
//!   gateway's overhead, p50/`--sequential` (all calls one after the other)
//!   what parallelism saves. The demo upstreams' sleeps overshoot (1 ms timer
//!   granularity), so `--probe` times one upstream call directly: p50 minus
//!   `--probe-calls` × its p50 is the overhead against the real critical path.
//! - **CPU**: the gateway's utime+stime from `/proc/PID/stat` before and after,
//!   per request. On small shared cores it is much steadier than req/s, which
//!   moves with everything else running (the generator and upstreams too); the
//!   CPU used by other processes meanwhile is reported to flag a noisy machine.
//!   `--baseline` measures a second path in every run (e.g. a plain proxy), so
//!   both costs are taken under the same conditions.
//!
//! Only a 200 with its body read completely counts; more than 1% errors in a
//! phase aborts (exit code 1). The runtime is tokio's current-thread one: pin
//! the process to one core (`taskset -c 1`).

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Requests sent so far over all phases: `{id}` keeps cycling across them.
static SENT: AtomicUsize = AtomicUsize::new(0);

/// Closed-loop load generator for Switchyard (see bench/README.md).
#[derive(Parser)]
#[command(name = "switchyard-bench")]
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
    /// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// PID of the upstreams process: with it (and --gateway-pid), the CPU
    /// other processes used during a phase is reported, to spot a noisy machine.
    #[arg(long)]
    upstreams_pid: Option<u32>,
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
    /// CPUs kept busy by processes other than the gateway, the upstreams and
    /// this one (a noisy machine makes every other figure suspect).
    others: Option<f64>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency)
        .build(connector);
    // What every run measures, in order: (base URL, path); the probe first.
    let mut targets: Vec<(&str, &str)> = args.probe.iter().map(|p| ("", p.as_str())).collect();
    targets.push((&args.url, &args.path_template));
    targets.extend(
        args.baseline
            .iter()
            .map(|b| (args.url.as_str(), b.as_str())),
    );
    let mut all: Vec<Vec<Figures>> = vec![Vec::new(); targets.len()];
    for run in 1..=args.runs {
        for (i, &(base, path)) in targets.iter().enumerate() {
            phase(&client, &args, base, path, args.warmup, false).await;
            let f = phase(&client, &args, base, path, args.requests, !base.is_empty()).await;
            all[i].push(f);
            let probe = args.probe.as_ref().map(|_| all[0][run - 1].p50);
            println!("run {run} {}", line(&args, path, &f, probe));
        }
    }
    println!("\nsummary: medians of {} runs", args.runs);
    let meds: Vec<Figures> = all.iter().map(|runs| medians(runs)).collect();
    for (&(_, path), m) in targets.iter().zip(&meds) {
        println!(
            "  {}",
            line(&args, path, m, args.probe.as_ref().map(|_| meds[0].p50))
        );
    }
    if let Some(busy) = meds
        .iter()
        .filter_map(|m| m.others)
        .reduce(f64::max)
        .filter(|&b| b > 0.2)
    {
        println!(
            "  WARNING: other processes kept {busy:.2} CPUs busy: these figures are not reliable"
        );
    }
    if let (Some(baseline), [.., main, base]) = (&args.baseline, &all[..]) {
        let ratios = main
            .iter()
            .zip(base)
            .filter_map(|(m, b)| Some(m.cpu_us? / b.cpu_us?));
        let ratio = median(ratios);
        println!(
            "  CPU ratio {} / {baseline}: {ratio:.2} (median of per-run ratios)",
            args.path_template
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
        others: Some(med(|f| f.others)).filter(|c| !c.is_nan()),
    }
}

/// Runs `budget` requests closed-loop and returns their figures; with `cpu`,
/// also the gateway's CPU time per request and the other processes' share.
async fn phase(
    client: &HttpClient,
    args: &Args,
    base: &str,
    template: &str,
    budget: usize,
    cpu: bool,
) -> Figures {
    if budget == 0 {
        return Figures::default();
    }
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + args.time_limit;
    let cpu0 = cpu.then(|| cpu_snapshot(args));
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
                let id = SENT.fetch_add(1, Ordering::Relaxed) % ids + 1;
                let path = template.replace("{id}", &id.to_string());
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
    let cpu1 = cpu.then(|| cpu_snapshot(args));
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
    // CPU seconds spent in the phase by the gateway, the upstreams, us, all.
    let d = |i: usize| Some((cpu1?[i]? - cpu0?[i]?) as f64 / args.clk_tck as f64);
    let others = || Some((d(3)? - d(0)? - d(1)? - d(2)?).max(0.0) / wall.as_secs_f64());
    Figures {
        req_s: done as f64 / wall.as_secs_f64(),
        p50: pct(50),
        p90: pct(90),
        p99: pct(99),
        max: ms(latencies[latencies.len() - 1]),
        cpu_us: d(0).map(|s| s * 1e6 / done as f64),
        others: others(),
    }
}

/// One GET; Ok only for a 200 whose body was read to the end.
async fn get(client: &HttpClient, base: &str, path: &str) -> Result<(), String> {
    let req = Request::get(format!("{base}{path}")).body(Empty::new());
    let resp = client.request(req.map_err(|e| e.to_string())?).await;
    let resp = resp.map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    if status != StatusCode::OK {
        let body = body.to_bytes();
        let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        return Err(format!("status {status}: {shown}"));
    }
    Ok(())
}

/// One line of figures for a run (or of medians).
fn line(args: &Args, path: &str, f: &Figures, probe_p50: Option<f64>) -> String {
    let label = if args.probe.as_deref() == Some(path) {
        "probe "
    } else {
        ""
    };
    let mut s = format!(
        "{label}{path}: {:.0} req/s | p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} ms",
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
        if let Some(p50) = probe_p50 {
            let critical = p50 * args.probe_calls as f64;
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
    if let Some(others) = f.others {
        s += &format!(" | other processes {others:.2} CPUs");
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

/// CPU clock ticks used so far by the gateway, the upstreams, this process
/// and the whole machine.
fn cpu_snapshot(args: &Args) -> [Option<u64>; 4] {
    let pid = |p: Option<u32>| process_ticks(&p?.to_string());
    let (gateway, upstreams) = (pid(args.gateway_pid), pid(args.upstreams_pid));
    [gateway, upstreams, process_ticks("self"), machine_ticks()]
}

/// A process's utime + stime, from `/proc/PID/stat`.
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: count fields after its `)`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The machine's busy time (all but idle and iowait), from `/proc/stat`.
fn machine_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // cpu  user nice system idle iowait irq softirq steal
    let v: Vec<u64> = stat
        .split_whitespace()
        .skip(1)
        .take(8)
        .flat_map(str::parse)
        .collect();
    Some(v.iter().sum::<u64>() - v.get(3)? - v.get(4)?)
}
