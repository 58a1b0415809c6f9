//! herd's async layer from the outside (`fixtures/axum_cluster.rs`): an axum cluster under
//! every policy, over TCP and unix sockets; no request lost on a rolling restart under
//! keep-alive load; a stop that lets slow requests finish and the application's code after
//! `serve(..).await` run; and the async stream's close tracking.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use herd_tests::hello::Hello;
use herd_tests::http::{self, Client, Response};
use herd_tests::{DEADLINE, TempDir, process_gone, wait_until};

const POLICIES: [&str; 4] = ["none", "rr", "least-conn", "reuseport"];

/// The fixture with these arguments, once listening; with its listening address.
fn start(args: &[&str]) -> (Hello, String) {
    let (cluster, _, address) =
        Hello::start_program(std::path::Path::new(env!("CARGO_BIN_EXE_axum-cluster")), args, &[]);
    (cluster, address)
}

/// The pid in a `hello from worker <id> pid <pid>` answer.
#[track_caller]
fn pid_of(response: &Response) -> u32 {
    assert_eq!(response.status, 200, "{response:?}");
    response.greeting().unwrap_or_else(|| panic!("not a greeting: {response:?}")).1
}

/// `GET /` over a new unix connection at `path`, `Connection: close`; the answering pid.
#[track_caller]
fn get_unix(path: &str) -> u32 {
    let mut stream = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {path}: {e}"));
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let pid = body.trim_end().rsplit_once(" pid ").and_then(|(_, pid)| pid.parse().ok());
    pid.unwrap_or_else(|| panic!("not a greeting: {answer:?}"))
}

/// Asks `get` for answers until `count` distinct pids answered (at most 300 requests).
#[track_caller]
fn every_worker_answers(what: &str, count: usize, mut get: impl FnMut() -> u32) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    for _ in 0..300 {
        pids.insert(get());
        if pids.len() == count {
            return pids;
        }
    }
    panic!("{what}: only {pids:?} answered 300 requests");
}

/// SIGTERM, then a clean exit.
#[track_caller]
fn stop(cluster: Hello, what: &str) {
    cluster.signal("TERM");
    let (status, _, stderr) = cluster.wait();
    assert!(status.success(), "{what}: {status}; stderr:\n{stderr}");
}

#[test]
fn an_axum_cluster_serves_from_every_worker_under_every_policy_over_tcp_and_unix() {
    for policy in POLICIES {
        let (cluster, address) = start(&["--policy", policy]);
        let pids = every_worker_answers(policy, 2, || pid_of(&http::get(&address, "/").unwrap()));
        assert!(pids.iter().all(|&pid| pid != cluster.pid()), "{policy}: {pids:?}");
        stop(cluster, policy);

        let dir = TempDir::new("axum-unix");
        let spec = format!("unix:{}", dir.join("http.sock").display());
        let (cluster, address) = start(&["--policy", policy, "--listen", &spec]);
        let path = address.strip_prefix("unix:").expect("a unix address").to_owned();
        every_worker_answers(&format!("{policy} over unix"), 2, || get_unix(&path));
        stop(cluster, &format!("{policy} over unix"));
    }
}

/// What went wrong with one request of the load, or `None`.
type Failure = String;

/// Client threads, each on a keep-alive connection doing `GET /` one after another, opening a
/// new connection only when the server says `Connection: close`, until stopped.
struct KeepAliveLoad {
    stop: Arc<AtomicBool>,
    answered: Arc<Mutex<Vec<u32>>>,
    failures: Arc<Mutex<Vec<Failure>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl KeepAliveLoad {
    fn start(address: &str, connections: usize) -> KeepAliveLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..connections)
            .map(|_| {
                let (address, stop) = (address.to_owned(), Arc::clone(&stop));
                let (answered, failures) = (Arc::clone(&answered), Arc::clone(&failures));
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let mut client: Option<Client> = None;
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < 3 * DEADLINE {
                        let connected = match client.take() {
                            Some(client) => Ok(client),
                            None => Client::connect(&address),
                        };
                        let outcome = connected.and_then(|mut c| c.get("/", false).map(|r| (c, r)));
                        match outcome {
                            Ok((c, response)) => {
                                if response.status != 200 || response.greeting().is_none() {
                                    failures.lock().unwrap().push(format!("{response:?}"));
                                    continue;
                                }
                                answered.lock().unwrap().push(response.greeting().unwrap().1);
                                let close = response
                                    .header("connection")
                                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                                if !close {
                                    client = Some(c);
                                }
                            }
                            Err(e) => failures.lock().unwrap().push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        KeepAliveLoad { stop, answered, failures, threads }
    }

    fn answered(&self) -> usize {
        self.answered.lock().unwrap().len()
    }

    /// Stops the clients: the pids that answered, in order, and the failures.
    fn stop(self) -> (Vec<u32>, Vec<Failure>) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("load client");
        }
        let answered = std::mem::take(&mut *self.answered.lock().unwrap());
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (answered, failures)
    }
}

#[test]
fn sighup_under_keep_alive_load_loses_no_request() {
    const CONNECTIONS: usize = 32;
    let (cluster, address) = start(&["--policy", "rr"]);
    let original = every_worker_answers("before", 2, || pid_of(&http::get(&address, "/").unwrap()));
    let load = KeepAliveLoad::start(&address, CONNECTIONS);
    // A few seconds of load in all: a second before the restart, its time, a second after.
    let started = Instant::now();
    let second = std::time::Duration::from_secs(1);
    wait_until("the load runs", || load.answered() >= 200 && started.elapsed() >= second);
    cluster.signal("HUP");
    cluster.wait_for_log("rolling restart done", 1);
    let (after, restarted) = (load.answered(), Instant::now());
    wait_until("the new workers answer the load", || {
        load.answered() >= after + 200 && restarted.elapsed() >= second
    });
    let (answered, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        answered.len() + failures.len()
    );
    assert!(original.iter().all(|&pid| process_gone(pid)), "the old workers exited");
    let last: BTreeSet<u32> = answered.iter().rev().take(100).copied().collect();
    assert!(last.is_disjoint(&original), "new workers serve at the end: {last:?}");
    stop(cluster, "after the restart");
}

#[test]
fn sigterm_lets_slow_requests_finish_and_the_code_after_serve_run() {
    const CLIENTS: usize = 4;
    let markers = TempDir::new("axum-markers");
    let dir = markers.path().display().to_string();
    let (cluster, address) = start(&["--policy", "rr", "--marker-dir", &dir]);
    let mut pids = BTreeSet::new();
    // A first request on each keep-alive connection: each is surely taken by a worker before
    // the slow one goes out on it.
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| {
            let mut client = Client::connect(&address).unwrap();
            pids.insert(pid_of(&client.get("/", false).unwrap()));
            client
        })
        .collect();
    for client in &mut clients {
        client.send("/sleep/1500", false).unwrap();
    }
    cluster.signal("TERM");
    let waiting: Vec<_> = clients
        .into_iter()
        .map(|mut client| std::thread::spawn(move || client.read_response()))
        .collect();
    for (i, answer) in waiting.into_iter().enumerate() {
        let answer = answer.join().unwrap();
        let answer = answer.unwrap_or_else(|e| panic!("client {i}: slow request lost: {e}"));
        pids.insert(pid_of(&answer));
        assert_eq!(answer.header("connection"), Some("close"), "draining: {answer:?}");
    }
    let (status, _, stderr) = cluster.wait();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    let exits: Vec<&str> = stderr.lines().filter(|l| l.contains(" exited: ")).collect();
    assert_eq!(exits.len(), 2, "{stderr}");
    assert!(exits.iter().all(|l| l.ends_with("exited: exit status: 0")), "{stderr}");
    for pid in &pids {
        let marker = markers.join(&format!("after-serve-{pid}"));
        assert!(marker.exists(), "worker {pid} did not run its code after serve; {stderr}");
    }
}

/// A line-protocol client of the fixture's `--mode hold`.
struct Line {
    reader: BufReader<std::net::TcpStream>,
}

impl Line {
    fn connect(address: &str) -> Line {
        let stream = std::net::TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        Line { reader: BufReader::new(stream) }
    }

    /// Sends `command`; the answer line (empty at end of stream).
    fn ask(&mut self, command: &str) -> String {
        self.reader.get_mut().write_all(format!("{command}\n").as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }

    /// Whether the server closed the connection (end of stream, or a reset).
    fn closed(&mut self) -> bool {
        let mut rest = String::new();
        match self.reader.read_line(&mut rest) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn a_stream_the_app_holds_keeps_a_disconnecting_worker_and_a_dropped_one_does_not() {
    for policy in ["rr", "none"] {
        let (cluster, address) = start(&["--policy", policy, "--workers", "1", "--mode", "hold"]);
        let worker = cluster.worker_pids();
        assert_eq!(worker.len(), 1, "{policy}: {worker:?}");
        let mut held = Line::connect(&address);
        assert_eq!(held.ask("hold"), "held", "{policy}");
        let mut dropped = Line::connect(&address);
        assert_eq!(dropped.ask("drop"), "dropped", "{policy}");
        assert!(dropped.closed(), "{policy}: the app dropped the stream: it is closed");
        // The socket closes first, then the count comes down: not at the same instant.
        wait_until("the dropped stream no longer counts", || {
            held.ask("status") == "disconnecting=false open=1"
        });

        // A stop: the worker disconnects, and waits for the connection the app holds.
        cluster.signal("TERM");
        wait_until("the worker sees the disconnect", || {
            held.ask("status").starts_with("disconnecting=true")
        });
        assert_eq!(held.ask("status"), "disconnecting=true open=1", "{policy}");
        assert!(!process_gone(worker[0]), "{policy}: the worker left with a connection held");

        // Dropped by the app: nothing is open any more, and the worker exits by itself.
        held.reader.get_mut().write_all(b"release\n").unwrap();
        let (status, _, stderr) = cluster.wait();
        assert!(status.success(), "{policy}: {status}; stderr:\n{stderr}");
        assert!(stderr.contains("exited: exit status: 0"), "{policy}: {stderr}");
    }
}
