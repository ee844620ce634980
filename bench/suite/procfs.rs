//! What `/proc` says about processes: CPU time, memory, children.

use std::fs;

/// utime + stime (clock ticks) from the text of `/proc/PID/stat`; with
/// `children`, also cutime + cstime (children that were waited for).
pub fn stat_ticks(stat: &str, children: bool) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: count
    // fields after its last `)`. Field 3 (state) is then index 0.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let own = field(11)? + field(12)?;
    Some(if children {
        own + field(13)? + field(14)?
    } else {
        own
    })
}

/// The parent PID from the text of `/proc/PID/stat`.
pub fn stat_ppid(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A `kB` field (`VmRSS`, `VmHWM`) from the text of `/proc/PID/status`.
pub fn status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// The machine's busy ticks (all but idle and iowait) from `/proc/stat`.
pub fn machine_busy(stat: &str) -> Option<u64> {
    let v: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    Some(v.iter().sum::<u64>() - v.get(3)? - v.get(4)?)
}

/// A process's CPU ticks (all its threads).
pub fn process_ticks(pid: u32) -> Option<u64> {
    stat_ticks(
        &fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
        false,
    )
}

/// This process's ticks plus those of the children it has waited for.
pub fn self_and_children_ticks() -> Option<u64> {
    stat_ticks(&fs::read_to_string("/proc/self/stat").ok()?, true)
}

/// The whole machine's busy ticks.
pub fn machine_ticks() -> Option<u64> {
    machine_busy(&fs::read_to_string("/proc/stat").ok()?)
}

/// A `kB` field of a process's status.
pub fn process_kb(pid: u32, key: &str) -> Option<u64> {
    status_kb(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        key,
    )
}

/// A process's proportional set size: its resident pages, shared ones
/// divided among the processes sharing them (so a master and its workers
/// add up without counting shared libraries twice).
pub fn process_pss_kb(pid: u32) -> Option<u64> {
    status_kb(
        &fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?,
        "Pss",
    )
}

/// `pid` and its direct children: nginx's master and workers. (Every server
/// measured here forks at most one level deep.)
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let Ok(dir) = fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat_ppid(&stat) == Some(pid) {
            pids.push(child);
        }
    }
    pids
}

/// Clock ticks per second of the CPU times above.
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (nginx: worker (x)) S 4241 4241 4241 0 -1 4194624 120 0 0 0 \
                        150 30 7 3 20 0 1 0 9000 12345678 900 18446744073709551615";

    #[test]
    fn stat_fields_after_a_tricky_name() {
        assert_eq!(stat_ticks(STAT, false), Some(180));
        assert_eq!(stat_ticks(STAT, true), Some(190));
        assert_eq!(stat_ppid(STAT), Some(4241));
        assert_eq!(stat_ticks("garbage", false), None);
    }

    #[test]
    fn status_and_machine_fields() {
        let status = "Name:\tswitchyard\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kb(status, "VmRSS"), Some(10240));
        assert_eq!(status_kb(status, "VmHWM"), Some(20480));
        assert_eq!(status_kb(status, "VmSwap"), None);
        let stat = "cpu  100 5 50 1000 20 1 2 0 0 0\ncpu0 50 2 25 500 10 0 1 0 0 0\n";
        assert_eq!(machine_busy(stat), Some(158));
    }
}
