//! The machine a run happened on, and the optional tools it has (`node`, `taskset`).

use std::path::PathBuf;
use std::process::Command;

pub(crate) struct Machine {
    pub(crate) cpu: String,
    pub(crate) cores: usize,
    pub(crate) kernel: String,
    pub(crate) clock_tick: f64,
    /// `node --version`, if `node` runs.
    pub(crate) node: Option<String>,
    pub(crate) taskset: bool,
    pub(crate) rustc: String,
    /// `nginx -v`, if nginx is on the PATH.
    pub(crate) nginx: Option<String>,
    /// `wrk --version`'s first words, if wrk is on the PATH.
    pub(crate) wrk: Option<String>,
}

/// The first line a command prints on either stream, whatever its exit status (`nginx -v`
/// prints to stderr; `wrk --version` exits with 1).
fn any_first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = [out.stdout, out.stderr].concat();
    let line = String::from_utf8_lossy(&text).lines().next()?.trim().to_string();
    (!line.is_empty()).then_some(line)
}

/// The first line a command prints, if it runs and succeeds.
fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).lines().next()?.trim().to_string())
}

/// Whether an executable of that name is in a `PATH` directory.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

impl Machine {
    pub(crate) fn probe() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let node = on_path("node").and_then(|_| first_line("node", &["--version"]));
        let nginx = on_path("nginx").and_then(|_| any_first_line("nginx", &["-v"]));
        let nginx = nginx.map(|v| v.trim_start_matches("nginx version: ").to_string());
        let wrk = on_path("wrk").and_then(|_| any_first_line("wrk", &["--version"]));
        let wrk = wrk.map(|v| v.split(" Copyright").next().unwrap_or(&v).trim().to_string());
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: first_line("uname", &["-r"]).unwrap_or_else(|| "unknown".into()),
            clock_tick: super::procstat::clock_tick(),
            node,
            taskset: on_path("taskset").is_some(),
            rustc: first_line("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
            nginx,
            wrk,
        }
    }
}
