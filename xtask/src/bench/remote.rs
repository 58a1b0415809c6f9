//! A second load generator in another process: the xtask binary itself, run as the hidden
//! `bench-load` subcommand. Both generators share one window, fixed in wall-clock time, and
//! the child prints what it measured as text lines that the parent merges.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::args::Mode;
use super::load::{self, Outcome, Plan};
use super::server::{command, wait_deadline};

/// A running child generator.
pub(crate) struct Remote {
    child: Child,
    output: mpsc::Receiver<String>,
}

/// An instant as nanoseconds since the Unix epoch, which another process can read back.
fn to_unix_ns(when: Instant) -> u128 {
    let (now, sys) = (Instant::now(), SystemTime::now());
    let since_epoch = sys.duration_since(UNIX_EPOCH).unwrap_or_default();
    (since_epoch + when.saturating_duration_since(now)).as_nanos()
}

fn from_unix_ns(ns: u128) -> Instant {
    let (now, sys) = (Instant::now(), SystemTime::now());
    let since_epoch = sys.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    now + Duration::from_nanos(ns.saturating_sub(since_epoch).min(u128::from(u64::MAX)) as u64)
}

/// Starts `xtask bench-load` for `plan` (its concurrency is the child's share).
pub(crate) fn spawn(plan: &Plan, core: Option<usize>) -> Result<Remote, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the xtask binary: {e}"))?;
    let args = [
        "bench-load".to_string(),
        "--addr".into(),
        plan.addr.to_string(),
        "--mode".into(),
        plan.mode.name().into(),
        "--concurrency".into(),
        plan.concurrency.to_string(),
        "--start".into(),
        to_unix_ns(plan.start).to_string(),
        "--measure-from".into(),
        to_unix_ns(plan.measure_from).to_string(),
        "--end".into(),
        to_unix_ns(plan.end).to_string(),
    ];
    let mut cmd = command(&exe, &args, core);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().map_err(|e| format!("second generator: cannot start: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let (tx, output) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    Ok(Remote { child, output })
}

impl Remote {
    /// Waits for the child (killing it at `deadline`) and parses what it measured.
    pub(crate) fn collect(mut self, deadline: Instant) -> Result<Outcome, String> {
        let Some(status) = wait_deadline(&mut self.child, deadline) else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return Err("second generator overran its deadline, killed".into());
        };
        if !status.success() {
            return Err(format!("second generator failed ({status})"));
        }
        let text = self
            .output
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| "second generator: no output".to_string())?;
        decode(&text)
    }
}

/// The child's side: `xtask bench-load --addr A --mode M --concurrency N --start T
/// --measure-from T --end T` (times in ns since the Unix epoch); prints the outcome.
pub(crate) fn main(args: &[String]) -> Result<(), String> {
    let mut addr: Option<SocketAddr> = None;
    let (mut mode, mut concurrency) = (Mode::Close, 1);
    let (mut start, mut measure_from, mut end) = (0u128, 0u128, 0u128);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |_| format!("{flag} {value:?}: bad value");
        match flag.as_str() {
            "--addr" => addr = Some(value.parse().map_err(|_| format!("bad address {value:?}"))?),
            "--mode" => mode = Mode::parse(value)?,
            "--concurrency" => concurrency = value.parse().map_err(bad)?,
            "--start" => start = value.parse().map_err(bad)?,
            "--measure-from" => measure_from = value.parse().map_err(bad)?,
            "--end" => end = value.parse().map_err(bad)?,
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    let addr = addr.ok_or("--addr is required")?;
    let plan = Plan {
        addr,
        mode,
        concurrency,
        start: from_unix_ns(start),
        measure_from: from_unix_ns(measure_from),
        end: from_unix_ns(end),
    };
    let outcome = load::run(&plan, &mut |_| {})?;
    print!("{}", encode(&outcome));
    Ok(())
}

/// An outcome as `key value` lines.
fn encode(o: &Outcome) -> String {
    let mut text = format!(
        "requests {}\nerrors {}\nconnections {}\ncpu_s {}\nwindow_s {}\n",
        o.requests, o.errors, o.connections, o.cpu_s, o.window_s
    );
    for (id, n) in &o.per_worker {
        text.push_str(&format!("worker {id} {n}\n"));
    }
    for (index, n) in o.latency.buckets() {
        text.push_str(&format!("bucket {index} {n}\n"));
    }
    if let Some(e) = &o.first_error {
        text.push_str(&format!("error {}\n", e.replace('\n', " ")));
    }
    text
}

fn decode(text: &str) -> Result<Outcome, String> {
    let mut o = Outcome::empty(0.0);
    for line in text.lines() {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        let bad = || format!("second generator: bad line {line:?}");
        let int = |s: &str| s.parse::<u64>().map_err(|_| bad());
        let pair = || -> Result<(u64, u64), String> {
            let (a, b) = rest.split_once(' ').ok_or_else(bad)?;
            Ok((int(a)?, int(b)?))
        };
        match key {
            "requests" => o.requests = int(rest)?,
            "errors" => o.errors = int(rest)?,
            "connections" => o.connections = int(rest)?,
            "cpu_s" => o.cpu_s = rest.parse().map_err(|_| bad())?,
            "window_s" => o.window_s = rest.parse().map_err(|_| bad())?,
            "worker" => {
                let (id, n) = pair()?;
                o.per_worker.insert(id, n);
            }
            "bucket" => {
                let (index, n) = pair()?;
                o.latency.add_bucket(index as usize, n)?;
            }
            "error" => o.first_error = Some(rest.to_string()),
            _ => return Err(bad()),
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_travel_as_text() {
        let mut o = Outcome::empty(2.0);
        o.requests = 3;
        o.errors = 1;
        o.connections = 4;
        o.cpu_s = 0.25;
        o.per_worker.insert(1, 2);
        o.per_worker.insert(2, 1);
        for us in [100, 100, 5000] {
            o.latency.record(us);
        }
        o.first_error = Some("connect: refused\nagain".into());
        let back = decode(&encode(&o)).unwrap();
        assert_eq!((back.requests, back.errors, back.connections), (3, 1, 4));
        assert_eq!((back.cpu_s, back.window_s), (0.25, 2.0));
        assert_eq!(back.per_worker, o.per_worker);
        assert_eq!(back.latency.total(), 3);
        assert_eq!(back.latency.quantile(0.5), o.latency.quantile(0.5));
        assert_eq!(back.first_error.as_deref(), Some("connect: refused again"));
        assert!(decode("nonsense 1").is_err());
    }

    #[test]
    fn instants_survive_the_trip_through_the_epoch() {
        let when = Instant::now() + Duration::from_millis(300);
        let back = from_unix_ns(to_unix_ns(when));
        let diff = if back > when { back - when } else { when - back };
        assert!(diff < Duration::from_millis(5), "{diff:?}");
    }
}
