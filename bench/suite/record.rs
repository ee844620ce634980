//! One measurement as a line of the run's records file (JSON lines), which
//! `report` reads back.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// What was measured, on whom, and the figures. Figures not taken are absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// `passthrough`, `summary`, `cache`, `scaling`, `memory`.
    pub scenario: String,
    /// The measurement within the scenario, e.g. `closed`, `open`, `calls`.
    pub case: String,
    /// `switchyard` or the peer: `nginx`, `express`, `floor`, `probe`.
    pub system: String,
    pub run: u32,
    /// The case's parameter (calls per route, body bytes), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    /// CPU time of the measured server (all its processes and threads) per
    /// successful request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_us: Option<f64>,
    /// CPUs kept busy by everything else on the machine during the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub others_cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_kb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hwm_kb: Option<u64>,
    /// Proportional set size (shared pages split among their processes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pss_kb: Option<u64>,
    /// Connections still open when the RSS was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<u64>,
}

impl Record {
    /// Appends the record as one line to `path`.
    pub fn append(&self, path: &Path) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(
            f,
            "{}",
            serde_json::to_string(self).map_err(std::io::Error::other)?
        )
    }

    /// Every record of a records file.
    pub fn read_all(path: &Path) -> Result<Vec<Record>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
            })
            .collect()
    }
}

/// Identifies a record's series: the same measurement over runs.
#[derive(Clone, Debug, clap::Args)]
pub struct Label {
    #[arg(long)]
    pub scenario: String,
    #[arg(long)]
    pub case: String,
    #[arg(long)]
    pub system: String,
    #[arg(long, default_value_t = 1)]
    pub run: u32,
    #[arg(long)]
    pub x: Option<f64>,
}

impl Label {
    /// An empty record with this label.
    pub fn record(&self) -> Record {
        Record {
            scenario: self.scenario.clone(),
            case: self.case.clone(),
            system: self.system.clone(),
            run: self.run,
            x: self.x,
            ..Record::default()
        }
    }
}
