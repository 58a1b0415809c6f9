//! `herd status`, `herd reload`, `herd scale N`, `herd stop`: requests to a running
//! cluster's control socket (`herd::control`), each printing its outcome when it is done.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use herd::control::{self, ClusterStatus, Reply, Request};
use herd::stats::WorkerStats;

/// Prints a line on stdout; a reader gone (`herd status | head`) is no reason to panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// How long `herd status` waits for its answer, unless `--timeout` says: 10 s (the primary
/// answers at its loop's next turn, in milliseconds).
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `herd reload`, `herd scale` and `herd stop` wait for each answer line, unless
/// `--timeout` says: 60 s, past what one step takes with herd run's defaults (a replacement
/// ready within `--ready-timeout` 30 s, a worker gone within `--kill-timeout` 5 s; a scale is
/// answered within their sum). A cluster run with longer timeouts needs a longer `--timeout`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// `--control PATH` and `--name NAME`, shared by every control subcommand.
fn target_args(command: Command) -> Command {
    command
        .arg(
            Arg::new("control")
                .long("control")
                .value_name("PATH")
                .value_parser(clap::value_parser!(PathBuf))
                .help("The cluster's control socket (as given to herd run --control)"),
        )
        .arg(Arg::new("name").long("name").value_name("NAME").conflicts_with("control").help(
            "The cluster herd run --name NAME started (its socket in the default \
                     directory); default: the only cluster there",
        ))
        .arg(Arg::new("timeout").long("timeout").value_name("DUR").help(
            "How long to wait for each answer from the cluster (a stopped or hung primary \
             never answers); default: 10s for status, 60s for reload, scale and stop (each \
             line of a reload, the scale's end, the stop's end)",
        ))
}

/// The control subcommands.
pub fn commands() -> Vec<Command> {
    vec![
        target_args(
            Command::new("status")
                .about("Shows a running cluster's workers: pid, state, uptime, restarts, RSS, CPU")
                .arg(
                    Arg::new("json")
                        .long("json")
                        .action(ArgAction::SetTrue)
                        .help("The status as JSON, as the control socket gives it"),
                ),
        ),
        target_args(Command::new("reload").about(
            "Rolling restart: replaces every worker, one at a time; returns when done \
             (non-zero if it aborted)",
        )),
        target_args(
            Command::new("scale")
                .about("Adds or removes workers until N run; returns when they are online or gone")
                .arg(
                    Arg::new("workers")
                        .value_name("N")
                        .required(true)
                        .value_parser(clap::value_parser!(u64).range(1..=herd::MAX_WORKERS as u64))
                        .help("How many workers, from 1 to 1024 (herd::MAX_WORKERS)"),
                ),
        ),
        target_args(Command::new("stop").about(
            "Graceful stop: returns when every worker has exited; during a stop, kills \
                 the workers left at once (SIGKILL), as a second SIGTERM does",
        )),
    ]
}

/// Runs control subcommand `name`; the outcome's lines are printed on stdout, a failure is
/// returned.
pub fn run(name: &str, matches: &ArgMatches) -> Result<(), String> {
    let path = socket_path(matches)?;
    let timeout = match matches.get_one::<String>("timeout") {
        Some(text) => crate::parse_duration(text).map_err(|e| format!("--timeout: {e}"))?,
        None if name == "status" => STATUS_TIMEOUT,
        None => COMMAND_TIMEOUT,
    };
    if timeout.is_zero() {
        return Err("--timeout: 0 would not wait at all".into());
    }
    match name {
        "status" => status(&path, matches.get_flag("json"), timeout),
        "reload" => reload(&path, timeout),
        "scale" => {
            let workers = matches.get_one::<u64>("workers").copied().unwrap_or(1);
            let workers = usize::try_from(workers).unwrap_or(herd::MAX_WORKERS);
            scale(&path, workers, timeout)
        }
        "stop" => stop(&path, timeout),
        _ => Err(format!("no subcommand {name}")),
    }
}

/// `--control PATH`; `--name NAME` in the default directory; else the only socket there.
fn socket_path(matches: &ArgMatches) -> Result<PathBuf, String> {
    if let Some(path) = matches.get_one::<PathBuf>("control") {
        return Ok(path.clone());
    }
    if let Some(name) = matches.get_one::<String>("name") {
        return Ok(control::default_path(name));
    }
    let dir = control::default_dir();
    let mut sockets: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("no cluster found: {}: {e} (see --control, --name)", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect();
    sockets.sort();
    match sockets.len() {
        1 => Ok(sockets.remove(0)),
        0 => Err(format!("no cluster found in {} (see --control, --name)", dir.display())),
        _ => {
            let names: Vec<String> = sockets
                .iter()
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect();
            Err(format!("clusters {names:?} run: say which with --name"))
        }
    }
}

/// The replies to `request`, each failure in words.
fn replies(
    path: &std::path::Path,
    request: &Request,
    timeout: Duration,
) -> Result<impl Iterator<Item = Result<Reply, String>>, String> {
    control::request(path, request, Some(timeout))
}

fn status(path: &std::path::Path, json: bool, timeout: Duration) -> Result<(), String> {
    let mut answer = replies(path, &Request::Status, timeout)?;
    match answer.next() {
        Some(Ok(Reply::Status(status))) if json => {
            let text = serde_json::to_string_pretty(&status).map_err(|e| e.to_string())?;
            say!("{text}");
            Ok(())
        }
        Some(Ok(Reply::Status(status))) => {
            let _ = std::io::Write::write_all(&mut std::io::stdout(), table(&status).as_bytes());
            Ok(())
        }
        Some(Ok(Reply::Error { message })) => Err(message),
        Some(Ok(other)) => Err(format!("unexpected reply: {other:?}")),
        Some(Err(e)) => Err(e),
        None => Err(format!("{}: closed without an answer", path.display())),
    }
}

/// The status as a table a person reads at a glance, as `pm2 list` shows it. `CONNS` is the
/// connections a worker took under a hand-off policy (`rr`, `least-conn`: the primary sees
/// them), `-` where workers accept from the kernel; `CPU%` is its CPU time over its uptime,
/// as `ps` shows it.
pub fn table(status: &ClusterStatus) -> String {
    let stats = &status.stats;
    let mut text = format!(
        "{} (pid {}): {} workers, policy {}{}{}\n",
        status.name.as_deref().unwrap_or("cluster"),
        stats.primary_pid,
        status.worker_count,
        stats.policy,
        if status.restarting { ", restarting" } else { "" },
        if stats.stopping { ", stopping" } else { "" },
    );
    let handoff = matches!(stats.policy.as_str(), "rr" | "least-conn");
    let header =
        ["ID", "PID", "PLACE", "STATE", "UPTIME", "RESTARTS", "CONNS", "RSS", "CPU%", "FDS"];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for w in &stats.workers {
        rows.push(row(w, handoff));
    }
    let widths: Vec<usize> =
        (0..header.len()).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    for r in rows {
        let cells: Vec<String> =
            r.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

fn row(w: &WorkerStats, handoff: bool) -> Vec<String> {
    let dash = || "-".to_owned();
    let cpu = w
        .cpu_seconds
        .filter(|_| w.uptime_seconds > 0.0)
        .map_or_else(dash, |cpu| format!("{:.1}", 100.0 * cpu / w.uptime_seconds));
    let state = match w.state {
        herd::State::Forked | herd::State::Online | herd::State::Listening if w.disconnecting => {
            "disconnecting".to_owned()
        }
        state => format!("{state:?}").to_lowercase(),
    };
    vec![
        w.id.to_string(),
        w.pid.to_string(),
        w.place.map_or_else(dash, |p| p.to_string()),
        state,
        duration(w.uptime_seconds),
        w.restarts.to_string(),
        if handoff { w.connections_accepted.to_string() } else { dash() },
        w.rss_bytes.map_or_else(dash, bytes),
        cpu,
        w.fds.map_or_else(dash, |n| n.to_string()),
    ]
}

/// `42s`, `5m12s`, `2h03m`, `3d04h`.
fn duration(seconds: f64) -> String {
    let s = seconds as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `812 KiB`, `12.3 MiB`, `1.2 GiB`.
fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let n = n as f64;
    if n < KIB * KIB {
        format!("{:.0} KiB", n / KIB)
    } else if n < KIB * KIB * KIB {
        format!("{:.1} MiB", n / KIB / KIB)
    } else {
        format!("{:.1} GiB", n / KIB / KIB / KIB)
    }
}

fn reload(path: &std::path::Path, timeout: Duration) -> Result<(), String> {
    for reply in replies(path, &Request::Reload, timeout)? {
        match reply? {
            Reply::Restarting { workers } => say!("herd: rolling restart of {workers} workers"),
            Reply::Replaced { place, old, new, pid, ready_seconds } => say!(
                "herd: place {place}: worker {old} replaced by worker {new} (pid {pid}), ready in \
                 {ready_seconds:.2}s"
            ),
            Reply::Restarted { replaced, seconds } => {
                say!("herd: restarted: {replaced} workers replaced in {seconds:.2}s");
                return Ok(());
            }
            Reply::Error { message } => return Err(message),
            other => return Err(format!("unexpected reply: {other:?}")),
        }
    }
    Err(format!("{}: closed before the restart ended", path.display()))
}

fn scale(path: &std::path::Path, workers: usize, timeout: Duration) -> Result<(), String> {
    match replies(path, &Request::Scale { workers }, timeout)?.next() {
        Some(Ok(Reply::Scaled { from, to })) => {
            say!("herd: scaled from {from} to {to} workers");
            Ok(())
        }
        Some(Ok(Reply::Error { message })) => Err(message),
        Some(Ok(other)) => Err(format!("unexpected reply: {other:?}")),
        Some(Err(e)) => Err(e),
        None => Err(format!("{}: closed before the scale was done", path.display())),
    }
}

fn stop(path: &std::path::Path, timeout: Duration) -> Result<(), String> {
    let mut stopping = false;
    for reply in replies(path, &Request::Stop, timeout)? {
        match reply {
            Ok(Reply::Stopping { workers, now: false }) => {
                stopping = true;
                say!("herd: stopping {workers} workers");
            }
            Ok(Reply::Stopping { workers, now: true }) => {
                stopping = true;
                say!(
                    "herd: a stop was under way: killing the {workers} workers left at once \
                     (SIGKILL), as a second SIGTERM does"
                );
            }
            Ok(Reply::Drained) => break,
            Ok(Reply::Error { message }) => return Err(message),
            Ok(other) => return Err(format!("unexpected reply: {other:?}")),
            // A primary that exits at the end of its stop closes the connection: that is the
            // end too (a reset, if it exited with the reply unread).
            // A timeout is no end, though: the stop may still be going on.
            Err(e) if stopping && !e.starts_with(control::NO_ANSWER) => break,
            Err(e) => return Err(e),
        }
    }
    if !stopping {
        return Err(format!("{}: closed before the stop began", path.display()));
    }
    say!("herd: stopped: every worker exited");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_at_a_glance() {
        assert_eq!(duration(42.9), "42s");
        assert_eq!(duration(312.0), "5m12s");
        assert_eq!(duration(7380.0), "2h03m");
        assert_eq!(duration(273_600.0), "3d04h");
        assert_eq!(bytes(812 * 1024), "812 KiB");
        assert_eq!(bytes(12_897_485), "12.3 MiB");
    }
}
