//! What `/proc` says about a process: CPU time, parent, resident memory; and the clock tick
//! that CPU times are counted in.

use std::fs;
use std::process::Command;
use std::sync::OnceLock;

/// Clock ticks per second (`getconf CLK_TCK`), asked once; 100 if that fails.
pub(crate) fn clock_tick() -> f64 {
    static TICK: OnceLock<f64> = OnceLock::new();
    *TICK.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output();
        out.ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|&t| t > 0.0)
            .unwrap_or(100.0)
    })
}

/// Ticks as seconds.
pub(crate) fn seconds(ticks: u64) -> f64 {
    ticks as f64 / clock_tick()
}

/// The fields of `/proc/<pid>/stat` after the command name, which may hold spaces and
/// parentheses: field 3 (`state`) is element 0.
fn stat_fields(text: &str) -> Option<Vec<&str>> {
    let after = &text[text.rfind(')')? + 1..];
    Some(after.split_whitespace().collect())
}

/// `(ppid, utime + stime in ticks)` from the text of `/proc/<pid>/stat`.
pub(crate) fn parse_stat(text: &str) -> Option<(u32, u64)> {
    let fields = stat_fields(text)?;
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// CPU time (user + system, all threads) of a process, in ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?).map(|(_, t)| t)
}

/// Whether a process is a zombie (exited, not reaped), and its CPU time in ticks (0 if it
/// cannot be read).
pub(crate) fn zombie_cpu_ticks(pid: u32) -> (bool, u64) {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return (false, 0) };
    let zombie = stat_fields(&text).and_then(|f| f.first().copied()) == Some("Z");
    (zombie, parse_stat(&text).map_or(0, |(_, t)| t))
}

/// This process's CPU time in ticks (every thread, living or exited).
pub(crate) fn self_cpu_ticks() -> u64 {
    fs::read_to_string("/proc/self/stat").ok().and_then(|t| parse_stat(&t)).map_or(0, |(_, t)| t)
}

/// The pids whose parent is `parent`, from `/proc/*/stat`.
pub(crate) fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        if parse_stat(&text).is_some_and(|(ppid, _)| ppid == parent) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// Resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The CPU time of a server's processes at one moment: the primary and each of its children.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sample {
    pub(crate) primary: u64,
    pub(crate) children: Vec<(u32, u64)>,
}

impl Sample {
    pub(crate) fn take(primary: u32) -> Sample {
        let children =
            children(primary).into_iter().filter_map(|p| Some((p, cpu_ticks(p)?))).collect();
        Sample { primary: cpu_ticks(primary).unwrap_or(0), children }
    }

    /// Ticks used between `self` and `later` by the primary, and by every process (children
    /// counted if present in both samples).
    pub(crate) fn delta(&self, later: &Sample) -> (u64, u64) {
        let primary = later.primary.saturating_sub(self.primary);
        let children: u64 = later
            .children
            .iter()
            .filter_map(|(pid, t)| {
                let before = self.children.iter().find(|(p, _)| p == pid)?.1;
                Some(t.saturating_sub(before))
            })
            .sum();
        (primary, primary + children)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_an_awkward_command_name() {
        let text =
            "4242 (my (odd) name) S 17 4242 17 0 -1 4194304 1 0 0 0 250 31 0 0 20 0 3 0 1 1 1";
        assert_eq!(parse_stat(text), Some((17, 281)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_visible() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(rss_kib(me).is_some_and(|kib| kib > 0));
        let sample = Sample::take(me);
        assert_eq!(sample.delta(&sample), (0, 0));
    }
}
