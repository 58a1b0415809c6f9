//! `herd`: clusters any program, in any language, through socket activation.
//!
//! `herd run -w 4 --listen 127.0.0.1:8080 -- python3 app.py` binds `127.0.0.1:8080` once and
//! starts four copies of `python3 app.py`, each finding the socket at descriptor 3 with
//! `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID` set as systemd sets them (`sd_listen_fds(3)`),
//! and runs their lives: respawn per place, rolling restart (SIGHUP), scaling (SIGTTIN,
//! SIGTTOU), graceful stop (SIGTERM, SIGINT). Built on the `herd` facade only:
//! [`herd::Cluster::socket_activation`] does the work.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, Command};
use tracing::info;

mod control;
mod log;

const AFTER_HELP: &str = "\
Examples:
  herd run -w 4 --listen 127.0.0.1:8080 -- python3 app.py
  herd run -w max --policy reuseport --listen web=0.0.0.0:80 -- ./server
  herd run --ready notify --listen unix:///run/app.sock -- node app.js
  herd run --ready notify --listen systemd:web -- python3 app.py   (under app.socket)
  herd status                  the workers of the cluster running here, as a table
  herd status --name app --json
  herd reload                  rolling restart; a line per replaced worker, returns when done
  herd scale 8                 returns when the new workers are online
  herd stop                    graceful stop; returns when every worker has exited
                               (a second one: KILL at once, as a second TERM)

herd run listens for these on a control socket: --control PATH, by default
$XDG_RUNTIME_DIR/herd/NAME.sock (root: /run/herd/NAME.sock, others: /tmp/herd-UID/NAME.sock),
mode 0600, served only to the same uid and root. Log lines go to stderr: HERD_LOG=warn (or
--quiet) keeps warnings and errors, HERD_LOG=herd::primary=debug shows every worker step.

Each worker finds the sockets at descriptors 3, 4, ... with LISTEN_FDS, LISTEN_FDNAMES and
LISTEN_PID (its own pid), as systemd passes them (sd_listen_fds(3)), and HERD_WORKER_ID.
Signals to herd:
  HUP        rolling restart, one worker at a time, each replacement ready first
  TERM, INT  graceful stop: TERM to each worker, KILL after --kill-timeout, exit 0
             (a second one: KILL at once)
  TTIN/TTOU  one worker more/fewer (never fewer than one)
  QUIT, USR1, USR2, WINCH
             forwarded to every worker, as tini forwards them (what they mean is CMD's)
  CHLD       reaps the orphans CMD leaves behind (herd is their subreaper, as PID 1 is)
Others keep their default action (which, as PID 1, the kernel ignores): TSTP stops herd
alone (the workers run in their own process group), CONT resumes it; PIPE, ALRM and the like
are not forwarded.";

fn cli() -> Command {
    let run = Command::new("run")
        .about("Runs N copies of CMD, sharing the listening sockets bound once here")
        .arg(
            Arg::new("workers")
                .short('w')
                .short_alias('i')
                .long("workers")
                .value_name("N|max")
                .default_value("max")
                .help("How many workers: a number from 1 to 1024, or max (one per CPU)"),
        )
        .arg(
            Arg::new("listen")
                .long("listen")
                .value_name("[NAME=]SPEC")
                .action(ArgAction::Append)
                .help(
                    "A socket to bind and hand to every worker, in order from descriptor 3: \
                     tcp://HOST:PORT, HOST:PORT, unix:///PATH, unix:@NAME, fd://N, or \
                     systemd:NAME (the socket systemd passed herd under that name; \
                     systemd:NAME:1 the second of that name); NAME= names it in the \
                     workers' LISTEN_FDNAMES (default: unknown, or systemd's name)",
                ),
        )
        .arg(
            Arg::new("policy")
                .long("policy")
                .value_name("none|reuseport")
                .default_value("none")
                .help(
                    "none: one socket shared by every worker; reuseport: one SO_REUSEPORT \
                     socket per worker place, kept across its replacements",
                ),
        )
        .arg(
            Arg::new("name")
                .long("name")
                .value_name("NAME")
                .help("Prefix of the workers' output lines, [NAME worker 3] (default: CMD's name)"),
        )
        .arg(
            Arg::new("ready")
                .long("ready")
                .value_name("notify|delay:DUR")
                .default_value("delay:1s")
                .help(
                    "When a worker is ready: when it sends READY=1 to its NOTIFY_SOCKET \
                     (sd_notify(3)), or DUR after its start",
                ),
        )
        .arg(
            Arg::new("ready-timeout")
                .long("ready-timeout")
                .value_name("DUR")
                .default_value("30s")
                .help("A replacement not ready by then aborts a rolling restart"),
        )
        .arg(
            Arg::new("kill-timeout")
                .long("kill-timeout")
                .value_name("DUR")
                .default_value("5s")
                .help("How long a worker has to exit after SIGTERM before SIGKILL"),
        )
        .arg(Arg::new("metrics").long("metrics").value_name("HOST:PORT").help(
            "Serve Prometheus metrics (/metrics) and the probes /readyz and /livez over \
                     HTTP there (bind loopback or a private address: nothing is authenticated)",
        ))
        .arg(
            Arg::new("control")
                .long("control")
                .value_name("PATH")
                .value_parser(clap::value_parser!(PathBuf))
                .help(
                    "The control socket for herd status/reload/scale/stop (default: \
                     $XDG_RUNTIME_DIR/herd/NAME.sock, /run/herd/NAME.sock for root, else \
                     /tmp/herd-UID/NAME.sock; taken already by another cluster: herd run \
                     stops, asking for --name or --no-control)",
                ),
        )
        .arg(
            Arg::new("no-control")
                .long("no-control")
                .action(ArgAction::SetTrue)
                .conflicts_with("control")
                .help("No control socket"),
        )
        .arg(
            Arg::new("quiet")
                .short('q')
                .long("quiet")
                .action(ArgAction::SetTrue)
                .help("Log warnings and errors only (HERD_LOG filters as RUST_LOG does)"),
        )
        .arg(
            Arg::new("cmd")
                .value_name("CMD")
                .required(true)
                .num_args(1..)
                .last(true)
                .value_parser(clap::value_parser!(OsString))
                .help("The program and its arguments, after --"),
        )
        .after_help(AFTER_HELP);
    Command::new("herd")
        .about("Clusters any program: binds once, starts N workers, runs their lives")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .subcommand(run)
        .subcommands(control::commands())
        .after_help(AFTER_HELP)
}

/// A duration as `1500ms`, `2s`, `1m`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 =
        number.parse().map_err(|_| format!("{text:?} is no duration (500ms, 2s, 1m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?} is no duration (500ms, 2s, 1m)")),
    };
    // Longer than 100 years is "never": taken as that, so every deadline stays a clock time.
    Duration::try_from_secs_f64(seconds)
        .map(|d| d.min(herd::MAX_DURATION))
        .map_err(|e| format!("{text:?}: {e}"))
}

/// The program `cmd` names: a path if it holds a `/` (made absolute), else the first
/// executable file of that name on `PATH`, as `execvp(3)` looks.
fn resolve(cmd: &OsStr) -> Result<PathBuf, String> {
    let shown = Path::new(cmd).display();
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if cmd.as_encoded_bytes().contains(&b'/') {
        let path = std::env::current_dir().map(|d| d.join(cmd)).map_err(|e| e.to_string())?;
        return match std::fs::metadata(&path) {
            Err(e) => Err(format!("CMD {shown}: {e}")),
            Ok(m) if m.is_dir() => Err(format!("CMD {shown}: is a directory")),
            Ok(_) if !executable(&path) => Err(format!("CMD {shown}: not executable")),
            Ok(_) => Ok(path),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(cmd))
        .find(|p| executable(p))
        .map(
            |p| {
                if p.is_absolute() {
                    p
                } else {
                    std::env::current_dir().unwrap_or_default().join(p)
                }
            },
        )
        .ok_or_else(|| format!("CMD {shown}: no executable of that name on PATH"))
}

/// `[NAME=]SPEC`: a name before `=` only if it looks like one (no `/`, `:` or `@`). Without
/// one, the name is `unknown` (`sd_listen_fds_with_names(3)`'s), or for `systemd:NAME` the
/// name systemd gave the socket. A `systemd:` spec is looked up by the library's primary,
/// which took the sockets systemd passed (`sd_listen_fds(3)`) when it started.
fn parse_listen(text: &str) -> Result<(String, herd::Spec), String> {
    let (name, spec) = match text.split_once('=') {
        Some((name, spec)) if !name.is_empty() && !name.contains(['/', ':', '@', '[']) => {
            (Some(name.to_owned()), spec)
        }
        _ => (None, text),
    };
    let spec = spec.parse::<herd::Spec>().map_err(|e| format!("--listen {text}: {e}"))?;
    let name = name.unwrap_or_else(|| match &spec {
        herd::Spec::Systemd { name, .. } => name.clone(),
        _ => "unknown".to_owned(),
    });
    Ok((name, spec))
}

/// The most workers `-w` starts (SIGTTIN may add more later): far beyond any machine's
/// cores, and short of a typo (`-w 99999999999`) forking until the process limit. The same
/// bound as `herd scale`'s, the facade's.
const MAX_WORKERS: usize = herd::MAX_WORKERS;

struct Run {
    cluster: herd::Cluster,
    workers: usize,
    ready_timeout: Duration,
    /// The control socket's path, and whether it was asked for (else it is the default).
    control: Option<(PathBuf, bool)>,
}

fn settings(matches: &clap::ArgMatches) -> Result<Run, String> {
    let workers = match matches.get_one::<String>("workers").map(String::as_str) {
        Some("max") | None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(n) => match n.parse::<usize>() {
            Ok(n) if (1..=MAX_WORKERS).contains(&n) => n,
            _ => {
                return Err(format!("-w {n}: a number of workers from 1 to {MAX_WORKERS}, or max"));
            }
        },
    };
    let policy = match matches.get_one::<String>("policy").map(String::as_str) {
        Some("none" | "shared") | None => herd::Policy::Shared,
        Some("reuseport") => herd::Policy::ReusePort,
        Some(other) => {
            return Err(format!(
                "--policy {other}: none or reuseport (the hand-off policies need herd's worker \
                 protocol, which CMD does not speak)"
            ));
        }
    };
    let duration = |name: &str| -> Result<Duration, String> {
        let text = matches.get_one::<String>(name).map(String::as_str).unwrap_or_default();
        parse_duration(text).map_err(|e| format!("--{name}: {e}"))
    };
    let ready = match matches.get_one::<String>("ready").map(String::as_str) {
        Some("notify") => herd::Readiness::Notify,
        Some(other) => match other.strip_prefix("delay:") {
            Some(dur) => {
                herd::Readiness::Delay(parse_duration(dur).map_err(|e| format!("--ready: {e}"))?)
            }
            None => return Err(format!("--ready {other}: notify or delay:DUR")),
        },
        None => herd::Readiness::Delay(Duration::from_secs(1)),
    };
    let ready_timeout = duration("ready-timeout")?;
    let mut cmd = matches.get_many::<OsString>("cmd").into_iter().flatten();
    let program = cmd.next().ok_or("no CMD after --")?;
    let exec = resolve(program)?;
    let name = match matches.get_one::<String>("name") {
        Some(name) => name.clone(),
        None => Path::new(program).file_name().unwrap_or(program).to_string_lossy().into_owned(),
    };
    let mut cluster = herd::Cluster::new()
        .workers(workers)
        .policy(policy)
        .exec(exec)
        .args(cmd.cloned())
        .name(name.clone())
        .stdio(herd::Stdio::Prefixed)
        // What a worker leaves behind is reaped here, as tini would (and as PID 1 must).
        .subreaper(true)
        // And the signals herd does not act on go to every worker, as tini forwards them.
        .forward_signals(true)
        // systemd's notifications (sd_notify(3)), when NOTIFY_SOCKET is set.
        .notify_systemd(true)
        .socket_activation(ready)
        .ready_timeout(ready_timeout)
        .kill_timeout(duration("kill-timeout")?);
    if let Some(text) = matches.get_one::<String>("metrics") {
        let address = text.parse().map_err(|e| format!("--metrics {text}: {e} (HOST:PORT)"))?;
        cluster = cluster.metrics_listen(address);
    }
    for listen in matches.get_many::<String>("listen").into_iter().flatten() {
        let (name, spec) = parse_listen(listen)?;
        cluster = cluster.activation_listen(name, spec);
    }
    let control = match matches.get_one::<PathBuf>("control") {
        Some(path) => Some((path.clone(), true)),
        None if matches.get_flag("no-control") => None,
        None => Some((herd::control::default_path(&name), false)),
    };
    Ok(Run { cluster, workers, ready_timeout, control })
}

/// Runs the cluster until it is stopped; the exit status.
fn run(run: Run) -> Result<(), String> {
    let Run { cluster, workers, ready_timeout, control } = run;
    let started = Instant::now();
    // The primary first, without workers: its signal handlers are installed before the first
    // fork, so a signal during the start (SIGTERM as PID 1, SIGTTOU) is heard, not lost or
    // acted on by its default.
    let mut primary = match control {
        Some((path, asked)) => match cluster.clone().control_socket(&path).primary() {
            Ok(primary) => primary,
            // The default path is taken (another cluster of this name runs here): running
            // without would leave `herd status`/`stop` reaching the other one, so refuse,
            // saying how to tell the two apart.
            Err(e @ herd::Error::Control { .. }) if !asked => {
                return Err(format!(
                    "{e} (the default control socket for this name: pass --name NAME to run \
                     another cluster of it, or --no-control)"
                ));
            }
            Err(e) => return Err(e.to_string()),
        },
        None => cluster.primary().map_err(|e| e.to_string())?,
    };
    primary.handle_signals().map_err(|e| e.to_string())?;
    for _ in 0..workers {
        primary.fork().map_err(|e| e.to_string())?;
    }
    if let Some(address) = primary.metrics_address() {
        log::say(format_args!("herd: metrics on http://{address}/metrics (and /readyz, /livez)"));
    }
    // Until every first worker is ready, a worker's exit is a failed start, not a crash to
    // respawn: the command is wrong.
    let mut starting = true;
    let mut failure: Option<String> = None;
    loop {
        let start_deadline = starting.then(|| started.checked_add(ready_timeout)).flatten();
        let wait = start_deadline.map(|at| at.saturating_duration_since(Instant::now()));
        let event = match primary.next_event(wait) {
            Ok(Some(event)) => event,
            Ok(None) if start_deadline.is_none_or(|at| at > Instant::now()) => continue,
            Ok(None) => {
                if starting && failure.is_none() {
                    let (ready, wanted) = (ready_count(&primary), primary.worker_count());
                    failure = Some(format!(
                        "{ready} of {wanted} workers ready within the ready timeout ({ready_timeout:?})"
                    ));
                    starting = false;
                    log::discard();
                    primary.stop_now();
                }
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        // The facade logs each event where it happens (`log.rs` prints it); herd's own lines
        // are the readiness of the start. Once the start failed, only its one line is said
        // (at the end): `log::discard` drops every other.
        use herd::Event;
        match event {
            Event::Online(id) => {
                let pid = primary.worker(id).map_or(0, |w| w.pid);
                info!("worker {id} (pid {pid}) ready");
            }
            // A worker that exits during the start, unless asked to (a stop), is a failed start.
            Event::Exit { worker, status, info, .. }
                if starting && failure.is_none() && !info.disconnecting =>
            {
                failure =
                    Some(format!("worker {worker} (pid {}) exited at once: {status}", info.pid));
                starting = false;
                log::discard();
                primary.stop_now();
            }
            Event::Signal(herd::Signal::Term | herd::Signal::Int) if starting => {
                // A stop asked for during the start is no failed start.
                starting = false;
                log::release();
            }
            Event::Drained => break,
            _ => {}
        }
        // The start is done when every worker the cluster counts now is ready: SIGTTIN and
        // SIGTTOU during the start change how many that is (a worker removed by SIGTTOU is no
        // failed start, and the others may all be ready already).
        let wanted = primary.worker_count();
        if starting && failure.is_none() && wanted > 0 && ready_count(&primary) >= wanted {
            starting = false;
            info!("ready: {wanted} workers");
            log::release();
        }
    }
    match failure {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

/// How many workers are ready (online, and so listening: their sockets are theirs from the
/// fork).
fn ready_count(primary: &herd::Primary) -> usize {
    primary
        .workers()
        .filter(|w| matches!(w.state, herd::State::Online | herd::State::Listening))
        .count()
}

fn main() -> ExitCode {
    let matches = cli().get_matches();
    let Some((name, matches)) = matches.subcommand() else { return ExitCode::FAILURE };
    let done = match name {
        "run" => {
            log::init(matches.get_flag("quiet")).and_then(|()| settings(matches)).and_then(run)
        }
        _ => control::run(name, matches),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::say(format_args!("herd: {name}: {e}"));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("2h").is_err());
    }

    #[test]
    fn listen_names() {
        let (name, spec) = parse_listen("web=127.0.0.1:8080").unwrap();
        assert_eq!((name.as_str(), spec.to_string().contains("8080")), ("web", true));
        assert_eq!(parse_listen("127.0.0.1:8080").unwrap().0, "unknown");
        assert_eq!(parse_listen("unix:@a=b").unwrap().0, "unknown");
        let (name, spec) = parse_listen("systemd:web").unwrap();
        assert_eq!((name.as_str(), spec.to_string()), ("web", "systemd:web".to_owned()));
        assert_eq!(parse_listen("api=systemd:web:1").unwrap().0, "api");
        assert!(parse_listen("web=nowhere").is_err());
    }
}
