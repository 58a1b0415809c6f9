//! The `hello-axum` example keeps `hello`'s contract, from the outside: the listening line,
//! `GET /` and `/sleep/<ms>` with keep-alive, a killed worker replaced (the primary's timers
//! run under `next_event_async`), SIGHUP, and SIGTERM letting a slow request finish before
//! the per-place summary and exit 0.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use herd_tests::hello::{Hello, example_binary};
use herd_tests::http::{self, Client, Response};
use herd_tests::{process_gone, send_signal, wait_until};

/// `hello-axum --workers 2 --listen 127.0.0.1:0 --policy <policy>`, once listening.
fn start(policy: &str) -> (Hello, String, String) {
    let program = example_binary("hello-axum", &["axum"]);
    let args = ["--workers", "2", "--listen", "127.0.0.1:0", "--policy", policy];
    Hello::start_program(&program, &args, &[])
}

/// Requests answered, per pid.
#[derive(Default)]
struct Answered(BTreeMap<u32, u64>);

impl Answered {
    /// The pid of a greeting, counted.
    #[track_caller]
    fn count(&mut self, response: &Response) -> u32 {
        assert_eq!(response.status, 200, "{response:?}");
        let (_, pid) = response.greeting().unwrap_or_else(|| panic!("{response:?}"));
        *self.0.entry(pid).or_default() += 1;
        pid
    }

    /// `GET /` on new connections until a pid not in `old` answers (at most 300).
    #[track_caller]
    fn until_new(&mut self, address: &str, old: &[u32]) -> u32 {
        for _ in 0..300 {
            let pid = self.count(&http::get(address, "/").unwrap());
            if !old.contains(&pid) {
                return pid;
            }
        }
        panic!("no worker but {old:?} answered 300 requests");
    }

    fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// SIGTERM; the exit status and the summary's counts, which must be one line per place.
#[track_caller]
fn stop(hello: Hello) -> Vec<u64> {
    hello.signal("TERM");
    let (status, rest, stderr) = hello.wait();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    let counts: Vec<u64> = rest
        .iter()
        .map(|line| {
            let n = line.strip_prefix("worker ").and_then(|r| r.strip_suffix(" requests"));
            let n = n.and_then(|r| r.split_once(": ")).and_then(|(_, n)| n.parse().ok());
            n.unwrap_or_else(|| panic!("not a summary line: {line:?}"))
        })
        .collect();
    assert_eq!(counts.len(), 2, "one line per place: {rest:?}");
    counts
}

#[test]
fn hello_axum_keeps_hellos_contract() {
    let (hello, line, address) = start("rr");
    let port = address.strip_prefix("127.0.0.1:").and_then(|p| p.parse::<u16>().ok()).unwrap();
    assert_eq!(line, format!("listening on http://127.0.0.1:{port} (2 workers, policy rr)"));
    let mut answered = Answered::default();

    let mut client = Client::connect(&address).unwrap();
    let pid = answered.count(&client.get("/", false).unwrap());
    assert_eq!(answered.count(&client.get("/", false).unwrap()), pid, "keep-alive");
    let asked = Instant::now();
    assert_eq!(answered.count(&client.get("/sleep/200", true).unwrap()), pid);
    assert!(asked.elapsed() >= Duration::from_millis(200), "/sleep/200: {:?}", asked.elapsed());
    let other = answered.until_new(&address, &[pid]);

    // A worker killed: replaced after its backoff, a timer of the async primary.
    send_signal(other, "KILL");
    hello.wait_for_log("respawning in", 1);
    let replacement = answered.until_new(&address, &[pid, other]);

    // A rolling restart: every worker replaced.
    hello.signal("HUP");
    hello.wait_for_log("rolling restart done", 1);
    wait_until("the old workers exited", || process_gone(pid) && process_gone(replacement));
    answered.until_new(&address, &[pid, other, replacement]);

    // A slow request in flight when the stop comes is answered.
    let mut slow = Client::connect(&address).unwrap();
    answered.count(&slow.get("/", false).unwrap());
    slow.send("/sleep/1000", false).unwrap();
    let reading = std::thread::spawn(move || slow.read_response());
    hello.signal("TERM");
    answered.count(&reading.join().unwrap().expect("the slow request is answered"));
    let (status, rest, stderr) = hello.wait();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert_eq!(rest.len(), 2, "one line per place: {rest:?}");
    let summed: u64 = rest
        .iter()
        .filter_map(|l| l.split_once(": ")?.1.strip_suffix(" requests")?.parse::<u64>().ok())
        .sum();
    // The killed worker never said its count.
    let lost = answered.0.get(&other).copied().unwrap_or(0);
    assert_eq!(summed, answered.total() - lost, "{rest:?}");
}

#[test]
fn hello_axum_serves_and_stops_under_the_other_policies() {
    for policy in ["none", "least-conn", "reuseport"] {
        let (hello, line, address) = start(policy);
        assert!(line.ends_with(&format!("(2 workers, policy {policy})")), "{line}");
        let mut answered = Answered::default();
        let first = answered.count(&http::get(&address, "/").unwrap());
        answered.until_new(&address, &[first]);
        let counts = stop(hello);
        assert_eq!(counts.iter().sum::<u64>(), answered.total(), "{policy}: {counts:?}");
    }
}
