//! `wrk` as a second, optional load generator: its command line and its output, parsed into
//! the same [`Outcome`](super::load::Outcome) the built-in generator gives, so a row can be checked against the
//! same server under the built-in one (the figures must not depend on the generator).
//!
//! wrk runs one thread per core (at most one per connection).
//! wrk measures its whole run and has no warm-up: after the built-in generator's warm-up
//! time (with no load) it runs for the duration (rounded up to whole seconds), and the server
//! is sampled from just after wrk starts to just after it exits, so the server's CPU and
//! wrk's request count cover the same time (keep-alive connections are opened inside it). Latency quantiles are wrk's
//! (`--latency`: 50, 75, 90 and 99%); wrk does not read bodies, so there are no per-worker
//! counts. In `close` mode every request is a connection (`Connection: close`, which wrk
//! follows by reconnecting).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use super::args::Mode;

/// The `wrk` command for one run: `threads` threads (the bench gives one per core, at most
/// one per connection: on a shared machine a one-thread wrk would get less CPU than the
/// built-in generator's thread per connection), `concurrency` connections, `run` rounded up
/// to whole seconds (wrk takes nothing finer).
pub(crate) fn command(
    addr: SocketAddr,
    mode: Mode,
    threads: usize,
    concurrency: usize,
    run: Duration,
) -> Command {
    let mut cmd = Command::new("wrk");
    let seconds = run.as_millis().div_ceil(1000).max(1);
    let threads = threads.clamp(1, concurrency.max(1));
    cmd.args(["-t", &threads.to_string(), "-c", &concurrency.to_string()])
        .arg("-d")
        .arg(format!("{seconds}s"))
        .args(["--timeout", "2s", "--latency"]);
    if mode == Mode::Close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(format!("http://{addr}/"));
    cmd
}

/// What wrk printed, as far as the report needs it.
#[derive(Debug, PartialEq)]
pub(crate) struct Report {
    pub(crate) requests_per_s: f64,
    pub(crate) requests: u64,
    /// `(quantile, µs)` from the latency distribution.
    pub(crate) latency_us: Vec<(f64, f64)>,
    /// Socket errors (connect, read, write, timeout) plus non-2xx/3xx answers.
    pub(crate) errors: u64,
}

/// A duration as wrk prints it (`812.00us`, `1.23ms`, `2.00s`, `1.00m`), in µs.
fn micros(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(n * scale)
}

/// Parses wrk's standard output; `Err` says what is missing.
pub(crate) fn parse(text: &str) -> Result<Report, String> {
    let mut requests_per_s = None;
    let mut requests = None;
    let mut latency_us = Vec::new();
    let mut errors = 0;
    let mut in_distribution = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            requests_per_s = rate.trim().parse().ok();
        } else if line.contains("requests in") {
            requests = line.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if line.starts_with("Latency Distribution") {
            in_distribution = true;
            continue;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors += rest
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>().unwrap_or(0);
        }
        if in_distribution {
            let mut parts = line.split_whitespace();
            match (parts.next().and_then(|p| p.strip_suffix('%')), parts.next()) {
                (Some(p), Some(value)) => match (p.parse::<f64>(), micros(value)) {
                    (Ok(p), Some(us)) => latency_us.push((p / 100.0, us)),
                    _ => in_distribution = false,
                },
                _ => in_distribution = false,
            }
        }
    }
    Ok(Report {
        requests_per_s: requests_per_s.ok_or("wrk printed no Requests/sec line")?,
        requests: requests.ok_or("wrk printed no request count")?,
        latency_us,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
Running 2s test @ http://127.0.0.1:41000/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   280.41us  101.33us   4.00ms   87.11%
    Req/Sec   110.21k     5.12k  118.00k    80.00%
  Latency Distribution
     50%  260.00us
     75%  311.00us
     90%  380.00us
     99%    1.02ms
  219318 requests in 2.00s, 25.73MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec: 109659.00
Transfer/sec:     12.86MB
";

    #[test]
    fn parses_wrk_output() {
        let report = parse(OUTPUT).unwrap();
        assert_eq!(report.requests_per_s, 109_659.0);
        assert_eq!(report.requests, 219_318);
        assert_eq!(report.errors, 9);
        assert_eq!(report.latency_us, [(0.5, 260.0), (0.75, 311.0), (0.9, 380.0), (0.99, 1020.0)]);
    }

    #[test]
    fn missing_lines_and_units() {
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused\n").is_err());
        assert_eq!(micros("2.00s"), Some(2e6));
        assert_eq!(micros("1.5m"), Some(90e6));
        assert_eq!(micros("12"), None);
    }

    #[test]
    fn close_mode_asks_for_close() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let cmd = command(addr, Mode::Close, 1, 32, Duration::from_millis(2500));
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "-t",
                "1",
                "-c",
                "32",
                "-d",
                "3s",
                "--timeout",
                "2s",
                "--latency",
                "-H",
                "Connection: close",
                "http://127.0.0.1:8080/"
            ]
        );
        let cmd = command(addr, Mode::KeepAlive, 4, 2, Duration::from_secs(1));
        assert!(!cmd.get_args().any(|a| a == "-H"));
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args[..6],
            ["-t", "2", "-c", "2", "-d", "1s"],
            "no more threads than connections"
        );
    }
}
