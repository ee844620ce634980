//! `report`: the run's records, reduced to medians over runs, compared with
//! the peers and the targets of issue 7, as a markdown table (stdout) and a
//! JSON document (`--json`).

use crate::record::Record;
use crate::stats::{median, slope};
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The run's records (JSON lines).
    #[arg(long)]
    records: PathBuf,
    /// `key=value` lines describing the run (machine, placement, versions).
    #[arg(long)]
    meta: Option<PathBuf>,
    /// Where to write the JSON result.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Machines this busy (CPUs used by other processes) make figures suspect.
const BUSY_CPUS: f64 = 0.2;

/// One line of the table.
#[derive(Debug, Serialize, PartialEq)]
pub struct Row {
    pub scenario: &'static str,
    pub figure: String,
    pub unit: &'static str,
    pub switchyard: Option<f64>,
    pub peer_name: &'static str,
    pub peer: Option<f64>,
    /// Switchyard ÷ peer.
    pub ratio: Option<f64>,
    pub target: String,
    /// `None` when the row has no target or a figure is missing.
    pub met: Option<bool>,
    pub note: String,
}

/// A target on one figure of a row.
enum Target {
    None,
    RatioAtLeast(f64),
    RatioAtMost(f64),
    SwitchyardAtMost(f64),
}

impl Target {
    fn text(&self, unit: &str) -> String {
        match self {
            Target::None => String::new(),
            Target::RatioAtLeast(r) => format!("ratio ≥ {r}"),
            Target::RatioAtMost(r) => format!("ratio ≤ {r}"),
            Target::SwitchyardAtMost(v) => format!("≤ {v} {unit}"),
        }
    }

    fn met(&self, switchyard: Option<f64>, ratio: Option<f64>) -> Option<bool> {
        match *self {
            Target::None => None,
            Target::RatioAtLeast(r) => ratio.map(|x| x >= r),
            Target::RatioAtMost(r) => ratio.map(|x| x <= r),
            Target::SwitchyardAtMost(v) => switchyard.map(|x| x <= v),
        }
    }
}

/// Medians over runs of the records of one series.
pub struct Medians<'a> {
    records: &'a [Record],
}

impl<'a> Medians<'a> {
    pub fn new(records: &'a [Record]) -> Self {
        Medians { records }
    }

    fn series(&self, scenario: &str, case: &str, system: &str) -> impl Iterator<Item = &'a Record> {
        let (scenario, case, system) = (scenario.to_string(), case.to_string(), system.to_string());
        self.records
            .iter()
            .filter(move |r| r.scenario == scenario && r.case == case && r.system == system)
    }

    /// The median of `figure` over the runs of a series (and `x`, if given).
    pub fn get(
        &self,
        scenario: &str,
        case: &str,
        system: &str,
        x: Option<f64>,
        figure: fn(&Record) -> Option<f64>,
    ) -> Option<f64> {
        let v: Vec<f64> = self
            .series(scenario, case, system)
            .filter(|r| x.is_none() || r.x == x)
            .filter_map(figure)
            .collect();
        median(&v)
    }

    /// The distinct `x` of a series, ascending.
    pub fn xs(&self, scenario: &str, case: &str, system: &str) -> Vec<f64> {
        let mut xs: Vec<f64> = self
            .series(scenario, case, system)
            .filter_map(|r| r.x)
            .collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        xs
    }

    /// The highest median of `others_cpus` among a scenario's series.
    pub fn busiest(&self, scenario: &str) -> Option<f64> {
        let mut keys: Vec<(&str, &str, Option<u64>)> = self
            .records
            .iter()
            .filter(|r| r.scenario == scenario)
            .map(|r| (r.case.as_str(), r.system.as_str(), r.x.map(f64::to_bits)))
            .collect();
        keys.dedup();
        keys.iter()
            .filter_map(|&(case, system, x)| {
                self.get(scenario, case, system, x.map(f64::from_bits), |r| {
                    r.others_cpus
                })
            })
            .reduce(f64::max)
    }
}

fn cpu(r: &Record) -> Option<f64> {
    r.cpu_us
}
fn req_s(r: &Record) -> Option<f64> {
    r.req_s
}
fn p50(r: &Record) -> Option<f64> {
    r.p50_ms
}
fn p99(r: &Record) -> Option<f64> {
    r.p99_ms
}
fn rss_mb(r: &Record) -> Option<f64> {
    r.rss_kb.map(|k| k as f64 / 1024.0)
}
fn hwm_mb(r: &Record) -> Option<f64> {
    r.hwm_kb.map(|k| k as f64 / 1024.0)
}
fn pss_mb(r: &Record) -> Option<f64> {
    r.pss_kb.map(|k| k as f64 / 1024.0)
}
fn held(r: &Record) -> Option<f64> {
    r.held.map(|h| h as f64)
}

/// Builds rows; a row whose figures are all missing (scenario not run) is left out.
struct Rows(Vec<Row>);

impl Rows {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        scenario: &'static str,
        figure: String,
        unit: &'static str,
        sy: Option<f64>,
        peer_name: &'static str,
        peer: Option<f64>,
        target: Target,
        note: String,
    ) {
        if sy.is_none() && peer.is_none() {
            return;
        }
        let ratio = sy.zip(peer).map(|(s, p)| s / p);
        self.0.push(Row {
            scenario,
            figure,
            unit,
            switchyard: sy,
            peer_name,
            peer,
            ratio,
            target: target.text(unit),
            met: target.met(sy, ratio),
            note,
        });
    }
}

/// Every row of the report, from the medians.
pub fn rows(m: &Medians) -> Vec<Row> {
    let mut rows = Rows(Vec::new());
    let get = |s, c, sys, f| m.get(s, c, sys, None, f);
    let rate = |s, c| {
        m.xs(s, c, "switchyard")
            .first()
            .copied()
            .map_or(String::from("?"), |r| format!("{r:.0}"))
    };

    // (1) pass-through
    let s = "passthrough";
    rows.push(
        s,
        "closed loop: throughput".into(),
        "req/s",
        get(s, "closed", "switchyard", req_s),
        "nginx",
        get(s, "closed", "nginx", req_s),
        Target::RatioAtLeast(1.2),
        String::new(),
    );
    rows.push(
        s,
        "closed loop: server CPU per request".into(),
        "µs",
        get(s, "closed", "switchyard", cpu),
        "nginx",
        get(s, "closed", "nginx", cpu),
        Target::None,
        String::new(),
    );
    rows.push(
        s,
        format!("open loop {} req/s: p50", rate(s, "open")),
        "ms",
        get(s, "open", "switchyard", p50),
        "nginx",
        get(s, "open", "nginx", p50),
        Target::None,
        String::new(),
    );
    rows.push(
        s,
        format!("open loop {} req/s: p99", rate(s, "open")),
        "ms",
        get(s, "open", "switchyard", p99),
        "nginx",
        get(s, "open", "nginx", p99),
        Target::RatioAtMost(1.0),
        String::new(),
    );

    // (2) the summary route
    let s = "summary";
    rows.push(
        s,
        "0 ms: closed-loop throughput".into(),
        "req/s",
        get(s, "closed", "switchyard", req_s),
        "express",
        get(s, "closed", "express", req_s),
        Target::RatioAtLeast(20.0),
        String::new(),
    );
    rows.push(
        s,
        "0 ms: server CPU per request".into(),
        "µs",
        get(s, "closed", "switchyard", cpu),
        "express",
        get(s, "closed", "express", cpu),
        Target::SwitchyardAtMost(60.0),
        String::new(),
    );
    rows.push(
        s,
        format!("20 ms, open loop {} req/s: p50", rate(s, "open")),
        "ms",
        get(s, "open", "switchyard", p50),
        "express",
        get(s, "open", "express", p50),
        Target::None,
        String::new(),
    );
    rows.push(
        s,
        format!("20 ms, open loop {} req/s: p99", rate(s, "open")),
        "ms",
        get(s, "open", "switchyard", p99),
        "express",
        get(s, "open", "express", p99),
        Target::None,
        String::new(),
    );
    if let Some(probe) = get(s, "open", "probe", p50) {
        let critical = 2.0 * probe;
        let over = |sys| get(s, "open", sys, p50).map(|p| p - critical);
        let note = format!("critical path = 2 × probe p50 = {critical:.2} ms");
        rows.push(
            s,
            "20 ms: p50 − critical path".into(),
            "ms",
            over("switchyard"),
            "express",
            over("express"),
            Target::SwitchyardAtMost(0.5),
            note,
        );
    }

    // (3) cache hits
    let s = "cache";
    rows.push(
        s,
        "hit: throughput".into(),
        "req/s",
        get(s, "closed", "switchyard", req_s),
        "floor",
        get(s, "closed", "floor", req_s),
        Target::None,
        String::new(),
    );
    rows.push(
        s,
        "hit: server CPU per request".into(),
        "µs",
        get(s, "closed", "switchyard", cpu),
        "floor",
        get(s, "closed", "floor", cpu),
        Target::RatioAtMost(1.5),
        String::new(),
    );

    // (4) scaling: Switchyard alone
    let s = "scaling";
    let calls = m.xs(s, "calls", "switchyard");
    let mut points = Vec::new();
    for &n in &calls {
        let c = m.get(s, "calls", "switchyard", Some(n), cpu);
        let t = m.get(s, "calls", "switchyard", Some(n), req_s);
        points.extend(c.map(|c| (n, c)));
        rows.push(
            s,
            format!("{n:.0} parallel calls: CPU per request"),
            "µs",
            c,
            "",
            None,
            Target::None,
            t.map(|t| format!("{t:.0} req/s")).unwrap_or_default(),
        );
    }
    let note = "least squares over the call counts above".to_string();
    rows.push(
        s,
        "CPU per extra call".into(),
        "µs",
        slope(&points),
        "",
        None,
        Target::SwitchyardAtMost(12.0),
        note,
    );
    let mut points = Vec::new();
    for &bytes in &m.xs(s, "body", "switchyard") {
        let c = m.get(s, "body", "switchyard", Some(bytes), cpu);
        let t = m.get(s, "body", "switchyard", Some(bytes), req_s);
        points.extend(c.map(|c| (bytes / 1024.0, c)));
        let mb_s = t
            .map(|t| format!("{t:.0} req/s, {:.1} MB/s", t * bytes / 1e6))
            .unwrap_or_default();
        rows.push(
            s,
            format!("body {}: CPU per request", size(bytes)),
            "µs",
            c,
            "",
            None,
            Target::None,
            mb_s,
        );
    }
    let note = "least squares over the body sizes above".to_string();
    rows.push(
        s,
        "CPU per KiB of body".into(),
        "µs",
        slope(&points),
        "",
        None,
        Target::None,
        note,
    );

    // (5) memory
    let s = "memory";
    let pss = |case| {
        let f = |sys| fmt(get(s, case, sys, pss_mb));
        format!(
            "PSS: Switchyard {} MB, nginx {} MB",
            f("switchyard"),
            f("nginx")
        )
    };
    rows.push(
        s,
        "RSS idle after start".into(),
        "MB",
        get(s, "idle", "switchyard", rss_mb),
        "nginx",
        get(s, "idle", "nginx", rss_mb),
        Target::SwitchyardAtMost(20.0),
        pss("idle"),
    );
    let note =
        "peak (VmHWM) after load: Switchyard the summary route, nginx pass-through".to_string();
    rows.push(
        s,
        "RSS peak under load".into(),
        "MB",
        get(s, "load", "switchyard", hwm_mb),
        "nginx",
        get(s, "load", "nginx", hwm_mb),
        Target::None,
        note,
    );
    let held_of =
        |sys| get(s, "connections", sys, held).map_or("?".to_string(), |h| format!("{h:.0}"));
    let note = format!(
        "connections held: Switchyard {}, nginx {}; {}",
        held_of("switchyard"),
        held_of("nginx"),
        pss("connections")
    );
    rows.push(
        s,
        "RSS with 10,000 idle keep-alive connections".into(),
        "MB",
        get(s, "connections", "switchyard", rss_mb),
        "nginx",
        get(s, "connections", "nginx", rss_mb),
        Target::RatioAtMost(1.5),
        note,
    );
    rows.0
}

fn size(bytes: f64) -> String {
    match bytes {
        b if b >= 1024.0 * 1024.0 => format!("{:.0} MiB", b / 1024.0 / 1024.0),
        b if b >= 1024.0 => format!("{:.0} KiB", b / 1024.0),
        b => format!("{b:.0} B"),
    }
}

/// A figure as the table shows it: more digits for small numbers.
fn fmt(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// The markdown table of `rows`.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| scenario | figure | Switchyard | peer | ratio | target | status | notes |\n|---|---|---:|---:|---:|---|---|---|\n",
    );
    for r in rows {
        let peer = match r.peer {
            Some(_) => format!("{} ({})", fmt(r.peer), r.peer_name),
            None => "—".into(),
        };
        let status = match r.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "",
        };
        let ratio = r.ratio.map_or("—".into(), |x| format!("{x:.2}×"));
        s += &format!(
            "| {} | {} | {} {} | {peer} | {ratio} | {} | {status} | {} |\n",
            r.scenario,
            r.figure,
            fmt(r.switchyard),
            r.unit,
            r.target,
            r.note
        );
    }
    s
}

/// The `key=value` lines of the meta file, in order.
fn meta(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

pub fn run(args: Args) -> Result<(), String> {
    let records = Record::read_all(&args.records)?;
    let meta = match &args.meta {
        Some(p) => meta(&std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => Vec::new(),
    };
    let medians = Medians::new(&records);
    let rows = rows(&medians);
    for (k, v) in &meta {
        println!("- {k}: {v}");
    }
    println!(
        "\nMedians over runs; ratio = Switchyard ÷ peer. CPU is the server's own (utime+stime from /proc, all processes and threads) per request.\n"
    );
    print!("{}", markdown(&rows));
    for r in records.iter().filter(|r| r.errors.unwrap_or(0) > 0) {
        println!(
            "\nnote: {} {} {} run {}: {} failed requests of {}",
            r.scenario,
            r.case,
            r.system,
            r.run,
            r.errors.unwrap_or(0),
            r.errors.unwrap_or(0) + r.requests.unwrap_or(0)
        );
    }
    let mut scenarios: Vec<&str> = records.iter().map(|r| r.scenario.as_str()).collect();
    scenarios.dedup();
    let mut busy = serde_json::Map::new();
    for s in scenarios {
        if let Some(b) = medians.busiest(s) {
            busy.insert(s.to_string(), json!(b));
            if b > BUSY_CPUS {
                println!(
                    "\nWARNING: during {s}, other processes kept {b:.2} CPUs busy: its figures are not reliable."
                );
            }
        }
    }
    if let Some(path) = &args.json {
        let doc = json!({
            "meta": meta.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "rows": rows,
            "other_cpus_busiest": busy,
            "records": records,
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        println!("\nresults: {}", path.display());
    }
    Ok(())
}

/// `rate`: a fixed arrival rate for an open-loop phase, `fraction` of the
/// slower system's median closed-loop throughput.
pub fn open_rate(
    records: &[Record],
    scenario: &str,
    systems: &[&str],
    fraction: f64,
) -> Option<f64> {
    let m = Medians::new(records);
    systems
        .iter()
        .map(|s| m.get(scenario, "closed", s, None, req_s))
        .collect::<Option<Vec<f64>>>()?
        .into_iter()
        .reduce(f64::min)
        .map(|r| (r * fraction / 100.0).floor().max(1.0) * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(scenario: &str, case: &str, system: &str, run: u32, req_s: f64, cpu_us: f64) -> Record {
        Record {
            scenario: scenario.into(),
            case: case.into(),
            system: system.into(),
            run,
            req_s: Some(req_s),
            cpu_us: Some(cpu_us),
            others_cpus: Some(0.05),
            ..Record::default()
        }
    }

    #[test]
    fn medians_ratios_and_targets() {
        let records = vec![
            rec("passthrough", "closed", "switchyard", 1, 12000.0, 20.0),
            rec("passthrough", "closed", "switchyard", 2, 13000.0, 19.0),
            rec("passthrough", "closed", "switchyard", 3, 11000.0, 21.0),
            rec("passthrough", "closed", "nginx", 1, 10000.0, 22.0),
        ];
        let rows = rows(&Medians::new(&records));
        assert_eq!(rows.len(), 2, "rows without figures are left out");
        let thr = &rows[0];
        assert_eq!((thr.switchyard, thr.peer), (Some(12000.0), Some(10000.0)));
        assert!((thr.ratio.unwrap() - 1.2).abs() < 1e-9);
        assert_eq!(thr.met, Some(true));
        assert_eq!(rows[1].met, None);
        assert_eq!(
            open_rate(&records, "passthrough", &["switchyard", "nginx"], 0.6),
            Some(6000.0)
        );
    }

    #[test]
    fn slope_row_from_scaling_records() {
        let records: Vec<Record> = [(1.0, 60.0), (4.0, 90.0), (16.0, 210.0), (64.0, 690.0)]
            .iter()
            .map(|&(x, c)| Record {
                x: Some(x),
                ..rec("scaling", "calls", "switchyard", 1, 1000.0, c)
            })
            .collect();
        let rows = rows(&Medians::new(&records));
        let slope = rows
            .iter()
            .find(|r| r.figure == "CPU per extra call")
            .unwrap();
        assert!((slope.switchyard.unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(slope.met, Some(true));
    }

    #[test]
    fn markdown_cells() {
        let row = Row {
            scenario: "memory",
            figure: "RSS idle after start".into(),
            unit: "MB",
            switchyard: Some(12.345),
            peer_name: "nginx",
            peer: Some(4.0),
            ratio: Some(3.08625),
            target: "≤ 20 MB".into(),
            met: Some(true),
            note: String::new(),
        };
        let md = markdown(&[row]);
        assert!(md.ends_with("| memory | RSS idle after start | 12.3 MB | 4.00 (nginx) | 3.09× | ≤ 20 MB | met |  |\n"), "{md}");
        assert_eq!(fmt(None), "—");
        assert_eq!(fmt(Some(12345.6)), "12346");
        assert_eq!(size(1024.0 * 1024.0), "1 MiB");
        assert_eq!(
            meta("a = 1\nbad\nb=x=y\n"),
            vec![("a".into(), "1".into()), ("b".into(), "x=y".into())]
        );
    }
}
