//! `measure`: runs one load phase (wrk or oha) and records the server's CPU
//! time per request from `/proc` along with the tool's figures.
//!
//! CPU per request is the headline figure: on two shared cores it is much
//! steadier than req/s. Whatever else kept the machine busy meanwhile is
//! recorded as `others_cpus` so a noisy run can be spotted.

use crate::procfs;
use crate::record::{Label, Record};
use crate::tools::{self, LoadResult};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    label: Label,
    /// The server measured: this PID and its direct children (nginx's workers).
    #[arg(long = "pid", required = true)]
    pids: Vec<u32>,
    /// Other processes of the bench (upstreams, other servers): their CPU is
    /// not counted as "other activity" on the machine.
    #[arg(long = "known")]
    known: Vec<u32>,
    /// Which tool's output to parse: `wrk` or `oha`.
    #[arg(long)]
    tool: String,
    /// Records file to append to.
    #[arg(long)]
    out: PathBuf,
    /// More than this share of failed requests fails the phase (fewer are
    /// recorded and the report lists them). On two shared cores an
    /// overloaded moment can push a few calls past their 300 ms timeout.
    #[arg(long, default_value_t = 0.05)]
    max_error_rate: f64,
    /// The tool is killed (and the phase fails) after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The load generator and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Ticks of everything the phase is about: the server, the bench's other
/// processes, this process with its reaped children, and the machine.
struct Ticks {
    server: u64,
    known: u64,
    us: u64,
    machine: u64,
}

fn ticks(server: &[u32], known: &[u32]) -> Ticks {
    let sum = |pids: &[u32]| pids.iter().filter_map(|&p| procfs::process_ticks(p)).sum();
    Ticks {
        server: sum(server),
        known: sum(known),
        us: procfs::self_and_children_ticks().unwrap_or(0),
        machine: procfs::machine_ticks().unwrap_or(0),
    }
}

pub fn run(args: Args) -> Result<(), String> {
    let expand = |pids: &[u32]| -> Vec<u32> {
        pids.iter()
            .flat_map(|&p| procfs::with_children(p))
            .collect()
    };
    let (server, known) = (expand(&args.pids), expand(&args.known));
    let before = ticks(&server, &known);
    let started = Instant::now();
    let stdout = run_tool(&args.command, args.timeout)?;
    let wall = started.elapsed().as_secs_f64();
    let after = ticks(&server, &known);
    let result = match args.tool.as_str() {
        "wrk" => tools::parse_wrk(&stdout),
        "oha" => tools::parse_oha(&stdout),
        other => Err(format!("unknown tool {other}")),
    }?;
    check_errors(&args, &result)?;
    let tck = procfs::clock_ticks() as f64;
    let d = |f: fn(&Ticks) -> u64| f(&after).saturating_sub(f(&before)) as f64 / tck;
    let server_s = d(|t| t.server);
    let others = (d(|t| t.machine) - server_s - d(|t| t.known) - d(|t| t.us)).max(0.0) / wall;
    let record = Record {
        req_s: Some(result.req_s()),
        p50_ms: Some(result.p50_ms),
        p90_ms: Some(result.p90_ms),
        p99_ms: Some(result.p99_ms),
        max_ms: Some(result.max_ms),
        requests: Some(result.ok),
        errors: Some(result.errors),
        cpu_us: (result.ok > 0).then(|| server_s * 1e6 / result.ok as f64),
        others_cpus: Some(others),
        ..args.label.record()
    };
    println!(
        "  {:<10} {:<12} run {}: {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  CPU {:>7.1} µs/req  (others {:.2} CPUs)",
        record.system,
        record.case,
        record.run,
        result.req_s(),
        result.p50_ms,
        result.p99_ms,
        record.cpu_us.unwrap_or(f64::NAN),
        others
    );
    record
        .append(&args.out)
        .map_err(|e| format!("{}: {e}", args.out.display()))
}

fn check_errors(args: &Args, r: &LoadResult) -> Result<(), String> {
    let total = (r.ok + r.errors).max(1) as f64;
    if r.ok + r.errors == 0 {
        return Err(format!(
            "{} {} {}: no request finished within the phase (machine too busy, or the server stalled)",
            args.label.scenario, args.label.case, args.label.system
        ));
    }
    if r.ok == 0 || r.errors as f64 / total > args.max_error_rate {
        return Err(format!(
            "{} {} {}: {} of {} requests failed (more than {:.0}%)",
            args.label.scenario,
            args.label.case,
            args.label.system,
            r.errors,
            r.ok + r.errors,
            args.max_error_rate * 100.0
        ));
    }
    Ok(())
}

/// Runs the tool to completion (or kills it at `timeout`); its stdout.
fn run_tool(command: &[String], timeout: Duration) -> Result<String, String> {
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", command[0]))?;
    // Read stdout on a thread so a chatty tool never blocks on a full pipe.
    let mut pipe = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut pipe, &mut s).map(|_| s)
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{} did not finish within {timeout:?}", command[0]));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = reader
        .join()
        .map_err(|_| "reader panicked")?
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!(
            "{} failed ({status}); output:\n{stdout}",
            command[0]
        ));
    }
    Ok(stdout)
}
