//! `switchyard-ratelimit-bench`: rate limiter micro-benchmarks and a tiny
//! upstream, run by `bench/ratelimit.sh` (see the README there).
//!
//! `micro` measures, each over `--runs` runs (medians printed):
//! - **store**: one in-process decision (shard lock, GCRA, write) on a
//!   pre-hashed key, single thread, 10,000 live keys;
//! - **limiter**: `Limiter::check` as a request sees it: key extraction
//!   (`[header:x-api-key, client_ip]`), hashing, the store, header values and
//!   the decision counter, single thread and on 2 threads;
//! - **redis** (with `--redis URL`): `Limiter::check` through the Redis
//!   script, with 1, 16 and 64 decisions in flight on the one multiplexed
//!   connection (in-flight commands are pipelined on it);
//! - **memory**: resident memory for 1,000,000 distinct live keys.
//!
//! `upstream --listen ADDR` serves `{"ok":true}` for the gateway throughput
//! comparison. Every loop is bounded in count.

use clap::{Parser, Subcommand};
use http::{HeaderMap, HeaderValue};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::limit::memory::MemoryStore;
use switchyard::limit::{Limiter, RequestView};
use switchyard::plan::{self, Plan};

#[derive(Parser)]
#[command(name = "switchyard-ratelimit-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// In-process and Redis decision rates, and memory per key.
    Micro {
        /// Runs per figure (medians are printed).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Decisions per in-process run.
        #[arg(long, default_value_t = 2_000_000)]
        decisions: usize,
        /// Decisions per Redis run.
        #[arg(long, default_value_t = 50_000)]
        redis_decisions: usize,
        /// A Redis to measure against (`redis://127.0.0.1:PORT`).
        #[arg(long)]
        redis: Option<String>,
        /// Distinct keys for the memory figure.
        #[arg(long, default_value_t = 1_000_000)]
        memory_keys: usize,
    },
    /// Serve `{"ok":true}` on an address (the throughput benchmark's upstream).
    Upstream {
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
}

fn main() {
    match Cli::parse().command {
        Command::Micro {
            runs,
            decisions,
            redis_decisions,
            redis,
            memory_keys,
        } => micro(runs, decisions, redis_decisions, redis, memory_keys),
        Command::Upstream { listen } => upstream(listen),
    }
}

fn compile(redis: Option<&str>) -> Plan {
    compile_with(redis, "1000000/1s")
}

/// The bench route's policy with `rate` (a slow rate keeps every key live).
fn compile_with(redis: Option<&str>, rate: &str) -> Plan {
    let redis_section = redis.map_or(String::new(), |url| {
        format!("redis: {{ url: \"{url}\", timeout: 1s }}\n")
    });
    let store = if redis.is_some() { "redis" } else { "memory" };
    let yaml = format!(
        r#"
upstreams: {{ u: {{ url: "http://127.0.0.1:9" }} }}
{redis_section}rate_limits:
  bench: {{ key: ["header:x-api-key", client_ip], rate: {rate}, store: {store} }}
routes:
  - get: /a
    rate_limit: bench
    calls: {{ a: {{ get: "u:/a" }} }}
"#
    );
    match plan::compile_str("bench.yaml", &yaml) {
        Ok((p, _)) => p,
        Err(e) => panic!("bench config: {e}"),
    }
}

/// Request headers for `n` distinct API keys.
fn header_sets(n: usize) -> Vec<HeaderMap> {
    (0..n)
        .map(|i| {
            let mut h = HeaderMap::new();
            h.insert(
                "x-api-key",
                HeaderValue::from_str(&format!("key-{i:08}"))
                    .unwrap_or(HeaderValue::from_static("k")),
            );
            h
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn report(name: &str, per_run: Vec<f64>, unit: &str) -> f64 {
    let shown: Vec<String> = per_run.iter().map(|v| format!("{v:.1}")).collect();
    let m = median(per_run);
    println!("{name}: median {m:.1} {unit}  (runs: {})", shown.join(", "));
    m
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn micro(
    runs: usize,
    decisions: usize,
    redis_decisions: usize,
    redis: Option<String>,
    memory_keys: usize,
) {
    // Decision counters go to the real recorder, as in the gateway.
    switchyard::telemetry::prometheus();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("== in-process ({decisions} decisions per run, 10,000 live keys)");

    // 1. The store alone: lock, GCRA, write.
    let gcra = switchyard::limit::gcra::Gcra::new(
        plan::limit::Rate {
            count: 1_000_000,
            period: Duration::from_secs(1),
        },
        1_000_000,
        1_000_000_000,
    );
    let store_ns = (0..runs)
        .map(|_| {
            let store = MemoryStore::new();
            let keys: Vec<u64> = (0..10_000u64)
                .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555)
                .collect();
            let start = Instant::now();
            let mut admitted = 0usize;
            for i in 0..decisions {
                let now = start.elapsed().as_nanos() as u64 + 1;
                let (mut b, _) = store.lock(keys[i % keys.len()], now);
                let occ = switchyard::limit::gcra::Gcra::occupancy(b.tat(), now);
                if gcra.admits(occ) {
                    b.set(gcra.next_tat(occ, now));
                    admitted += 1;
                }
            }
            std::hint::black_box(admitted);
            start.elapsed().as_nanos() as f64 / decisions as f64
        })
        .collect();
    let store_ns = report("store decision (1 thread)", store_ns, "ns/decision");

    // 2. Limiter::check, as a request sees it.
    let plan = compile(None);
    let limits = plan.routes[0].rate_limits.as_ref().expect("limited route");
    let headers = header_sets(10_000);
    let client: std::net::IpAddr = "192.0.2.1"
        .parse()
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    let check_ns = (0..runs)
        .map(|_| {
            let limiter = Limiter::new(&plan.limits);
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..decisions {
                    let view = RequestView {
                        headers: &headers[i % headers.len()],
                        params: &[],
                        client,
                    };
                    std::hint::black_box(limiter.check(limits, &view).await);
                }
                start.elapsed().as_nanos() as f64 / decisions as f64
            })
        })
        .collect();
    let check_ns = report("limiter check (1 thread)", check_ns, "ns/decision");

    let plan = Arc::new(plan);
    let headers = Arc::new(headers);
    let two = (0..runs)
        .map(|_| {
            let limiter = Arc::new(Limiter::new(&plan.limits));
            let start = Instant::now();
            let threads: Vec<_> = (0..2)
                .map(|t| {
                    let (limiter, plan, headers) = (limiter.clone(), plan.clone(), headers.clone());
                    std::thread::spawn(move || {
                        let limits = plan.routes[0].rate_limits.as_ref().expect("limited route");
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .build()
                            .expect("runtime");
                        rt.block_on(async {
                            for i in 0..decisions / 2 {
                                let view = RequestView {
                                    headers: &headers[(i * 2 + t) % headers.len()],
                                    params: &[],
                                    client,
                                };
                                std::hint::black_box(limiter.check(limits, &view).await);
                            }
                        });
                    })
                })
                .collect();
            for t in threads {
                let _ = t.join();
            }
            decisions as f64 / start.elapsed().as_secs_f64() / 1e6
        })
        .collect();
    report("limiter check (2 threads)", two, "M decisions/s");
    println!(
        "  → {:.1} M decisions/s per core in the store, {:.1} M with key extraction and headers",
        1e3 / store_ns,
        1e3 / check_ns
    );

    // 3. Redis.
    if let Some(url) = redis {
        println!(
            "\n== through Redis ({redis_decisions} decisions per run; one multiplexed connection)"
        );
        let plan = Arc::new(compile(Some(&url)));
        for in_flight in [1usize, 16, 64] {
            let per_run = (0..runs)
                .map(|_| {
                    let limiter = Arc::new(Limiter::new(&plan.limits));
                    rt.block_on(async {
                        // Connect (and load the script) outside the measurement.
                        let limits = plan.routes[0].rate_limits.as_ref().expect("limited route");
                        let h = HeaderMap::new();
                        let view = RequestView {
                            headers: &h,
                            params: &[],
                            client,
                        };
                        limiter.check(limits, &view).await;
                        let start = Instant::now();
                        let mut tasks = Vec::new();
                        for t in 0..in_flight {
                            let (limiter, plan, headers) =
                                (limiter.clone(), plan.clone(), headers.clone());
                            tasks.push(tokio::spawn(async move {
                                let limits =
                                    plan.routes[0].rate_limits.as_ref().expect("limited route");
                                let mut fallbacks = 0;
                                for i in 0..redis_decisions / in_flight {
                                    let view = RequestView {
                                        headers: &headers[(i * in_flight + t) % headers.len()],
                                        params: &[],
                                        client,
                                    };
                                    let d = limiter.check(limits, &view).await;
                                    fallbacks +=
                                        usize::from(d.redis_time.is_some_and(|r| !r.answered));
                                }
                                fallbacks
                            }));
                        }
                        let mut fallbacks = 0;
                        for t in tasks {
                            fallbacks += t.await.unwrap_or(0);
                        }
                        assert_eq!(fallbacks, 0, "redis failed during the benchmark");
                        redis_decisions as f64 / start.elapsed().as_secs_f64()
                    })
                })
                .collect();
            report(
                &format!("redis check, {in_flight:>2} in flight"),
                per_run,
                "decisions/s",
            );
        }
    }

    // 4. Memory for distinct live keys.
    println!("\n== memory: {memory_keys} distinct live keys in one in-process store");
    let plan = compile_with(None, "1/1h");
    let limits = plan.routes[0].rate_limits.as_ref().expect("limited route");
    let limiter = Limiter::new(&plan.limits);
    let before = rss_bytes();
    rt.block_on(async {
        let mut h = HeaderMap::new();
        for i in 0..memory_keys {
            h.insert(
                "x-api-key",
                HeaderValue::from_str(&format!("distinct-{i}"))
                    .unwrap_or(HeaderValue::from_static("k")),
            );
            let view = RequestView {
                headers: &h,
                params: &[],
                client,
            };
            limiter.check(limits, &view).await;
        }
    });
    let after = rss_bytes();
    let held = limiter.local_buckets("bench").unwrap_or(0);
    println!(
        "keys held {held}; RSS +{:.1} MiB ({:.1} bytes/key); map allocation {:.1} MiB",
        (after.saturating_sub(before)) as f64 / (1 << 20) as f64,
        after.saturating_sub(before) as f64 / held.max(1) as f64,
        limiter_allocated(&limiter) as f64 / (1 << 20) as f64
    );
}

fn limiter_allocated(limiter: &Limiter) -> usize {
    limiter.local_allocated_bytes("bench").unwrap_or(0)
}

fn upstream(listen: std::net::SocketAddr) {
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    let mut resp =
                        http::Response::new(Full::new(bytes::Bytes::from_static(b"{\"ok\":true}")));
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
