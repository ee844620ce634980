//! `switchyard-suite`: the measuring half of the benchmark suite that
//! `bench/run.sh` drives (see `bench/README.md`). The script starts and stops
//! the processes; this binary measures and reports:
//!
//! - `measure`: one load phase of wrk or oha, with the server's CPU per
//!   request from `/proc`, appended to the run's records;
//! - `memory`: a server's RSS, optionally while holding many idle keep-alive
//!   connections open against it;
//! - `rate`: the arrival rate for an open-loop phase, from closed-loop records;
//! - `report`: medians, ratios and targets as a markdown table and JSON.

mod measure;
mod memory;
mod procfs;
mod record;
mod report;
mod stats;
mod tools;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "switchyard-suite",
    about = "Benchmark suite helpers (bench/run.sh)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one load phase and record its figures.
    Measure(measure::Args),
    /// Record a server's memory, optionally while holding connections.
    Memory(memory::Args),
    /// Print an open-loop arrival rate: FRACTION of the slower system's
    /// closed-loop throughput, rounded down to a hundred.
    Rate {
        #[arg(long)]
        records: PathBuf,
        #[arg(long)]
        scenario: String,
        /// Comma-separated systems compared.
        #[arg(long)]
        systems: String,
        #[arg(long, default_value_t = 0.6)]
        fraction: f64,
    },
    /// Print the markdown report and write the JSON result.
    Report(report::Args),
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Measure(args) => measure::run(args),
        Command::Memory(args) => memory::run(args),
        Command::Rate {
            records,
            scenario,
            systems,
            fraction,
        } => record::Record::read_all(&records).and_then(|r| {
            let systems: Vec<&str> = systems.split(',').collect();
            let rate = report::open_rate(&r, &scenario, &systems, fraction).ok_or(format!(
                "no closed-loop figures of {scenario} for {systems:?}"
            ))?;
            println!("{rate:.0}");
            Ok(())
        }),
        Command::Report(args) => report::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-suite: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
