//! `memory`: a server's resident memory (VmRSS, and the VmHWM peak) summed
//! over its processes, optionally while `--connections` idle keep-alive
//! connections are held open against it, each having made one request.

use crate::procfs;
use crate::record::{Label, Record};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    label: Label,
    /// The server measured: this PID and its direct children.
    #[arg(long = "pid", required = true)]
    pids: Vec<u32>,
    /// Records file to append to.
    #[arg(long)]
    out: PathBuf,
    /// URL each held connection GETs once (`http://127.0.0.1:PORT/path`).
    #[arg(long)]
    url: Option<String>,
    /// Connections to open and hold while the memory is read.
    #[arg(long, default_value_t = 0)]
    connections: u64,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    parallel: usize,
    /// Wait this long after the last connection is up before reading.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Opening all the connections must not take longer than this.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    time_limit: Duration,
}

pub fn run(args: Args) -> Result<(), String> {
    let pids: Vec<u32> = args
        .pids
        .iter()
        .flat_map(|&p| procfs::with_children(p))
        .collect();
    let mut record = args.label.record();
    if args.connections > 0 {
        let url = args.url.as_deref().ok_or("--connections needs --url")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let held = rt.block_on(async {
            let open =
                tokio::time::timeout(args.time_limit, hold(url, args.connections, args.parallel));
            let (alive, senders) = open.await.map_err(|_| {
                format!(
                    "opening {} connections took over {:?}",
                    args.connections, args.time_limit
                )
            })??;
            tokio::time::sleep(args.settle).await;
            read_memory(&pids, &mut record);
            let held = alive.load(Ordering::Relaxed);
            drop(senders);
            Ok::<_, String>(held)
        })?;
        record.held = Some(held);
        if held < args.connections {
            eprintln!(
                "warning: only {held} of {} connections were still open",
                args.connections
            );
        }
    } else {
        read_memory(&pids, &mut record);
    }
    println!(
        "  {:<10} {:<12} run {}: RSS {:.1} MB  peak {:.1} MB  PSS {:.1} MB{}",
        record.system,
        record.case,
        record.run,
        record.rss_kb.unwrap_or(0) as f64 / 1024.0,
        record.hwm_kb.unwrap_or(0) as f64 / 1024.0,
        record.pss_kb.unwrap_or(0) as f64 / 1024.0,
        record
            .held
            .map(|h| format!("  ({h} connections held)"))
            .unwrap_or_default()
    );
    record
        .append(&args.out)
        .map_err(|e| format!("{}: {e}", args.out.display()))
}

fn read_memory(pids: &[u32], record: &mut Record) {
    let sum = |key| {
        pids.iter()
            .filter_map(|&p| procfs::process_kb(p, key))
            .sum::<u64>()
    };
    record.rss_kb = Some(sum("VmRSS"));
    record.hwm_kb = Some(sum("VmHWM"));
    record.pss_kb = Some(pids.iter().filter_map(|&p| procfs::process_pss_kb(p)).sum());
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// Opens `n` connections to `url`, one GET each (its body read to the end),
/// and keeps them. Returns the count of connections still open (it drops as
/// the server closes any) and their senders, which hold them open.
async fn hold(url: &str, n: u64, parallel: usize) -> Result<(Arc<AtomicU64>, Vec<Sender>), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let authority = uri
        .authority()
        .ok_or("the URL needs a host:port")?
        .to_string();
    let alive = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (uri, authority, alive, gate) =
            (uri.clone(), authority.clone(), alive.clone(), gate.clone());
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            open_one(&uri, &authority, &alive).await
        });
    }
    let mut senders = Vec::with_capacity(n as usize);
    while let Some(done) = opening.join_next().await {
        senders.push(done.map_err(|e| e.to_string())??);
    }
    Ok((alive, senders))
}

async fn open_one(
    uri: &hyper::Uri,
    authority: &str,
    alive: &Arc<AtomicU64>,
) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e} (open-file limit? `ulimit -n`)"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    alive.fetch_add(1, Ordering::Relaxed);
    let still_alive = alive.clone();
    tokio::spawn(async move {
        let _ = conn.await;
        still_alive.fetch_sub(1, Ordering::Relaxed);
    });
    let req = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("GET {uri} answered {status}"));
    }
    Ok(sender)
}
