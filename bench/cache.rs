//! `switchyard-cache-bench`: the cache benchmark's two helpers, run by
//! `bench/cache.sh`.
//!
//! - `serve-bytes`: a minimal hyper HTTP/1.1 server answering every request
//!   with the same bytes (the baseline a cache hit is compared with).
//! - `load`: a closed-loop load generator that measures, for each target,
//!   the CPU time its server process spent per request (utime + stime from
//!   `/proc/PID/stat` around the measured requests), over several runs, and
//!   prints medians and the ratios asked for.
//!
//! CPU per request, not req/s: on a small shared machine it is the steadier
//! figure. Every phase is bounded in requests and time; traffic is loopback.

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "switchyard-cache-bench", about = "Cache benchmark helpers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve one fixed body (application/json) to every request.
    ServeBytes {
        /// Address to listen on (loopback).
        #[arg(long)]
        listen: SocketAddr,
        /// File whose bytes are the body.
        #[arg(long)]
        body: std::path::PathBuf,
    },
    /// Measure server CPU per request for each target.
    Load {
        /// `NAME=URL@PID`: a URL to request and the PID of the process serving it.
        #[arg(long = "target", required = true)]
        targets: Vec<String>,
        /// `A/B`: print the ratio of target A's CPU per request to B's.
        #[arg(long = "ratio")]
        ratios: Vec<String>,
        /// Measured requests per target and run.
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// Unrecorded requests before each measured phase.
        #[arg(long, default_value_t = 1_000)]
        warmup: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Runs; the summary shows medians.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Each run's requests are sent in this many blocks, the targets
        /// taking turns, so that every target sees the same machine (other
        /// work on a shared machine moves the figures more than anything).
        #[arg(long, default_value_t = 6)]
        blocks: usize,
        /// Longest duration of one phase.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        time_limit: Duration,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match cli.command {
        Command::ServeBytes { listen, body } => {
            let body = Bytes::from(std::fs::read(&body).expect("the body file is readable"));
            // The server gets a multi-threaded runtime like the gateway's
            // (one worker per CPU it is pinned to), so the two compare fairly.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(serve_bytes(listen, body));
            std::process::ExitCode::SUCCESS
        }
        Command::Load {
            targets,
            ratios,
            requests,
            warmup,
            concurrency,
            runs,
            blocks,
            time_limit,
        } => {
            let opts = LoadOptions {
                requests,
                warmup,
                concurrency,
                time_limit,
                blocks: blocks.max(1),
            };
            rt.block_on(load(&targets, &ratios, runs, &opts))
        }
    }
}

async fn serve_bytes(listen: SocketAddr, body: Bytes) {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .expect("the listen address is free");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        let mut resp = Response::new(Full::new(body));
                        resp.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(resp)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

struct LoadOptions {
    requests: usize,
    warmup: usize,
    concurrency: usize,
    time_limit: Duration,
    blocks: usize,
}

struct Target {
    name: String,
    url: Uri,
    pid: u32,
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

async fn load(
    targets: &[String],
    ratios: &[String],
    runs: usize,
    opts: &LoadOptions,
) -> std::process::ExitCode {
    let mut parsed = Vec::new();
    for t in targets {
        let Some((name, rest)) = t.split_once('=') else {
            eprintln!("--target {t}: expected NAME=URL@PID");
            return std::process::ExitCode::FAILURE;
        };
        let Some((url, pid)) = rest.rsplit_once('@') else {
            eprintln!("--target {t}: expected NAME=URL@PID");
            return std::process::ExitCode::FAILURE;
        };
        let (Ok(url), Ok(pid)) = (url.parse::<Uri>(), pid.parse::<u32>()) else {
            eprintln!("--target {t}: bad URL or PID");
            return std::process::ExitCode::FAILURE;
        };
        parsed.push(Target {
            name: name.to_string(),
            url,
            pid,
        });
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(opts.concurrency)
        .build(connector);
    let tck = clock_ticks();
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); parsed.len()];
    for t in &parsed {
        if phase(&client, &t.url, opts.warmup, opts).await.is_none() {
            return std::process::ExitCode::FAILURE;
        }
    }
    let per_block = opts.requests.div_ceil(opts.blocks);
    for run in 1..=runs {
        // (requests, CPU, wall time) per target, summed over the blocks.
        let mut sums = vec![(0usize, Duration::ZERO, Duration::ZERO); parsed.len()];
        for _ in 0..opts.blocks {
            for (t, sum) in parsed.iter().zip(&mut sums) {
                let before = cpu_time(t.pid, tck);
                let started = Instant::now();
                let Some(done) = phase(&client, &t.url, per_block, opts).await else {
                    return std::process::ExitCode::FAILURE;
                };
                let took = started.elapsed();
                let Some((b, a)) = before.zip(cpu_time(t.pid, tck)) else {
                    eprintln!("cannot read /proc/{}/stat", t.pid);
                    return std::process::ExitCode::FAILURE;
                };
                sum.0 += done;
                sum.1 += a.saturating_sub(b);
                sum.2 += took;
            }
        }
        for ((t, cpus), (done, used, took)) in parsed.iter().zip(&mut cpu).zip(sums) {
            let us = used.as_secs_f64() * 1e6 / done.max(1) as f64;
            println!(
                "run {run} {:<10} {done} requests in {:.2}s ({:.0} req/s) | server CPU {us:.1} µs/req",
                t.name,
                took.as_secs_f64(),
                done as f64 / took.as_secs_f64()
            );
            cpus.push(us);
        }
    }
    println!("\nsummary: medians of {runs} runs (server CPU per request)");
    let med: Vec<f64> = cpu.iter().map(|c| median(c)).collect();
    for (t, m) in parsed.iter().zip(&med) {
        println!("  {:<10} {m:.1} µs/req   {}", t.name, t.url);
    }
    for r in ratios {
        let Some((a, b)) = r.split_once('/') else {
            continue;
        };
        let find = |n: &str| parsed.iter().position(|t| t.name == n);
        if let (Some(a_i), Some(b_i)) = (find(a), find(b)) {
            // The median of the per-run ratios: each run's pair was measured
            // under the same conditions.
            let per_run: Vec<f64> = cpu[a_i].iter().zip(&cpu[b_i]).map(|(x, y)| x / y).collect();
            println!(
                "  ratio {a}/{b} = {:.2} (median of per-run ratios; medians give {:.2})",
                median(&per_run),
                med[a_i] / med[b_i]
            );
        }
    }
    std::process::ExitCode::SUCCESS
}

/// Sends `n` requests with `concurrency` in flight; the number that got a
/// whole 200, or `None` when more than 1% failed.
async fn phase(client: &HttpClient, url: &Uri, n: usize, opts: &LoadOptions) -> Option<usize> {
    let next = Arc::new(AtomicUsize::new(0));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let deadline = Instant::now() + opts.time_limit;
    let workers: Vec<_> = (0..opts.concurrency)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            let (next, ok, failed) = (next.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n && Instant::now() < deadline {
                    let req = Request::get(url.clone())
                        .body(Empty::new())
                        .expect("a request");
                    let good =
                        match tokio::time::timeout(Duration::from_secs(5), client.request(req))
                            .await
                        {
                            Ok(Ok(resp)) if resp.status() == StatusCode::OK => {
                                resp.into_body().collect().await.is_ok()
                            }
                            _ => false,
                        };
                    if good { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    if failed * 100 > (ok + failed).max(1) {
        eprintln!(
            "{url}: {failed} of {} requests failed; aborting",
            ok + failed
        );
        return None;
    }
    Some(ok)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100)
}

/// utime + stime of a process.
fn cpu_time(pid: u32, tck: u64) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / tck as f64))
}
