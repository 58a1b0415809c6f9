//! `hello`: an HTTP/1.1 cluster, the README's main job.
//!
//! ```text
//! hello [--workers N] [--policy rr|none|least-conn|reuseport] [--listen ADDR:PORT]
//!       [--hang-timeout SECS]
//! ```
//!
//! The primary forks N workers (default: the number of cores) that share ADDR:PORT (default
//! `127.0.0.1:8080`) under the policy (default: `HERD_SCHED_POLICY`, else `rr`), and prints
//! `listening on http://ADDR:PORT (N workers, policy P)` once every worker listens. Each worker
//! answers `GET /` with `hello from worker <id> pid <pid>`, and `GET /sleep/<ms>` the same
//! after that many milliseconds; keep-alive and `Connection: close` are honoured.
//!
//! Signals to the primary: SIGINT or SIGTERM stop gracefully (requests in flight complete;
//! then one line per worker place, `worker <id>: <n> requests`, and exit 0; a second one stops
//! at once); SIGHUP restarts every worker, one at a time, refusing no request; SIGTTIN and
//! SIGTTOU add or remove a worker. A worker that dies is replaced, with a line on stderr; one
//! that hangs (stops answering, or stops taking connections) for `--hang-timeout` seconds
//! (default 30; `0` turns detection off) is reported on stderr, killed and replaced.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use herd::{Cluster, Event, Policy, Role, Stream, Worker, WorkerId};

struct Args {
    workers: Option<usize>,
    policy: Option<Policy>,
    listen: String,
    hang_timeout: Option<Option<Duration>>,
}

fn parse_args() -> Result<Args, String> {
    let mut args =
        Args { workers: None, policy: None, listen: "127.0.0.1:8080".into(), hang_timeout: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--workers" => {
                let v = value()?;
                let n: usize = v.parse().map_err(|_| format!("--workers {v:?}: not a number"))?;
                if n == 0 {
                    return Err("--workers must be at least 1".into());
                }
                args.workers = Some(n);
            }
            "--policy" => args.policy = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            "--listen" => args.listen = value()?,
            "--hang-timeout" => {
                let v = value()?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| format!("--hang-timeout {v:?}: not a number of seconds"))?;
                args.hang_timeout = Some((secs > 0.0).then(|| Duration::from_secs_f64(secs)));
            }
            "-h" | "--help" => {
                return Err("usage: hello [--workers N] [--policy rr|none|least-conn|reuseport] [--listen ADDR:PORT] [--hang-timeout SECS]".into());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("hello: {message}");
            return ExitCode::from(2);
        }
    };
    let result = match herd::role() {
        Role::Primary => primary(&args),
        Role::Worker(id) => {
            // A worker's failures are the primary's to report (it prints them once); a worker
            // whose primary is already gone has nobody to tell.
            if worker(id, &args).is_err() {
                return ExitCode::FAILURE;
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hello: {message}");
            ExitCode::FAILURE
        }
    }
}

fn primary(args: &Args) -> Result<(), String> {
    let mut cluster = Cluster::new();
    if let Some(n) = args.workers {
        cluster = cluster.workers(n);
    }
    if let Some(policy) = args.policy {
        cluster = cluster.policy(policy);
    }
    if let Some(timeout) = args.hang_timeout {
        cluster = cluster.hang_timeout(timeout);
    }
    let policy = cluster.resolved_policy().map_err(|e| e.to_string())?;
    let count =
        args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut primary = cluster.start().map_err(|e| e.to_string())?;
    primary.handle_signals().map_err(|e| e.to_string())?;
    let mut listening = BTreeSet::new();
    let mut announced = false;
    // Per place: the latest worker in it, and the requests served there by it and the workers
    // it replaced.
    let mut places: BTreeMap<usize, (WorkerId, u64)> = BTreeMap::new();
    let mut place_of: BTreeMap<WorkerId, usize> = BTreeMap::new();
    // How each worker that died unexpectedly ended, for its respawn line.
    let mut deaths: BTreeMap<WorkerId, std::process::ExitStatus> = BTreeMap::new();
    loop {
        match primary.next_event(None).map_err(|e| e.to_string())? {
            Some(Event::Fork(id)) => {
                if let Some(place) = primary.worker(id).and_then(|w| w.place) {
                    places.entry(place).or_insert((id, 0)).0 = id;
                    place_of.insert(id, place);
                }
            }
            Some(Event::Listening { worker, address }) => {
                listening.insert(worker);
                if !announced && listening.len() == count {
                    announced = true;
                    let shown = address.to_string();
                    println!(
                        "listening on http://{} ({count} workers, policy {policy})",
                        shown.trim_start_matches("tcp://")
                    );
                }
            }
            Some(Event::Message { worker, data, .. }) => {
                let text = String::from_utf8_lossy(&data).into_owned();
                if let Some(n) = text.strip_prefix("count ").and_then(|n| n.parse::<u64>().ok()) {
                    if let Some(entry) = place_of.get(&worker).and_then(|p| places.get_mut(p)) {
                        entry.1 += n;
                    }
                } else if !announced {
                    // A worker that cannot listen says why, and the cluster cannot serve.
                    return Err(text.trim_start_matches("error ").to_owned());
                }
            }
            Some(Event::Exit { worker, status, after_disconnect: false }) if !announced => {
                return Err(format!("worker {worker} exited before listening ({status})"));
            }
            Some(Event::Exit { worker, status, after_disconnect: false }) => {
                deaths.insert(worker, status);
            }
            // One line per respawn and per halt; a place that keeps crashing is retried (or
            // halts alone) while the others serve, so hello goes on as long as any worker does.
            Some(Event::Respawning { worker, place, delay }) => {
                let how = deaths.remove(&worker).map_or("died".to_owned(), |s| format!("{s}"));
                eprintln!(
                    "hello: worker {worker} in place {place}: {how}; respawning in {delay:?}"
                );
            }
            Some(Event::Hung { worker, reason }) => {
                eprintln!("hello: worker {worker} hung ({reason}): killed");
            }
            Some(Event::CutOff { worker, reason }) => {
                eprintln!("hello: worker {worker} cut off ({reason}): killed");
            }
            Some(Event::RespawnHalted { reason, .. }) => {
                if primary.workers().next().is_none() {
                    return Err(reason);
                }
                eprintln!("hello: {reason}");
            }
            Some(Event::Drained) => {
                for (id, served) in places.values() {
                    println!("worker {id}: {served} requests");
                }
                return Ok(());
            }
            _ => {}
        }
    }
}

fn worker(id: WorkerId, args: &Args) -> Result<(), String> {
    let worker = herd::worker().map_err(|e| e.to_string())?;
    let listener = match worker.listen(&args.listen) {
        Ok(listener) => listener,
        Err(e) => {
            // The primary prints it, once, and exits non-zero.
            let _ = worker.send(format!("error {e}").as_bytes(), &[]);
            std::process::exit(1);
        }
    };
    let served = Arc::new(AtomicU64::new(0));
    let reporter = worker.clone();
    let total = Arc::clone(&served);
    // The last word before exit: how many requests this worker answered.
    worker.at_exit(move || {
        let _ = reporter.send(format!("count {}", total.load(Ordering::SeqCst)).as_bytes(), &[]);
    });
    let shared = Arc::new(Acceptors {
        listener,
        worker: worker.clone(),
        served,
        idle: AtomicUsize::new(1),
        id,
        pid: std::process::id(),
    });
    // This thread is the first acceptor; the pool grows when every acceptor is busy.
    shared.accept_loop();
    // Disconnected: requests in flight finish, then the process exits.
    worker.finish()
}

/// Threads that accept and then serve what they accepted, reused from one connection to the
/// next: creating a thread per connection would cost more than the request itself.
struct Acceptors {
    listener: herd::Listener,
    worker: Worker,
    served: Arc<AtomicU64>,
    /// Threads waiting in `accept` now.
    idle: AtomicUsize,
    id: WorkerId,
    pid: u32,
}

impl Acceptors {
    /// Idle threads beyond this many end instead of waiting.
    const MAX_IDLE: usize = 8;

    fn accept_loop(self: &Arc<Self>) {
        for conn in self.listener.incoming() {
            let Ok(conn) = conn else { continue };
            // Busy now: if nobody else waits for the next connection, start a thread that does.
            if self.idle.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.idle.fetch_add(1, Ordering::SeqCst);
                let pool = Arc::clone(self);
                std::thread::spawn(move || pool.accept_loop());
            }
            serve(conn, &self.worker, &self.served, self.id, self.pid);
            if self.idle.fetch_add(1, Ordering::SeqCst) >= Self::MAX_IDLE {
                self.idle.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

/// Reads one line, waiting in 100 ms slices so that an idle keep-alive connection notices a
/// disconnect. `None` at end of stream, on an error, or once a disconnecting worker's
/// connection has been idle for a second: closing an idle connection always races a request
/// the client may be sending, so the worker gives clients a moment (a request arriving then
/// is answered with `Connection: close`).
fn read_line(reader: &mut BufReader<&Stream>, worker: &Worker, idle: bool) -> Option<String> {
    const IDLE_SLICES_BEFORE_CLOSE: u32 = 10;
    let mut line = Vec::new();
    let mut idle_slices = 0;
    loop {
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return None,
            Ok(_) if line.ends_with(b"\n") => {
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if idle && line.is_empty() && worker.is_disconnecting() {
                    idle_slices += 1;
                    if idle_slices >= IDLE_SLICES_BEFORE_CLOSE {
                        return None;
                    }
                }
            }
            Err(_) => return None,
        }
    }
}

/// Serves one connection: requests until the client closes, asks to, or the worker
/// disconnects between two requests.
fn serve(conn: herd::Connection, worker: &Worker, served: &AtomicU64, id: WorkerId, pid: u32) {
    let _ = conn.stream().set_read_timeout(Some(Duration::from_millis(100)));
    // Reads and writes both go through `&Stream`; `conn` lives to the end, so the connection
    // counts as open (and a disconnecting worker waits for it) until this returns.
    let mut reader = BufReader::new(conn.stream());
    let mut writer = conn.stream();
    loop {
        let Some(request_line) = read_line(&mut reader, worker, true) else { return };
        let mut close = request_line.ends_with("HTTP/1.0\r\n");
        loop {
            let Some(header) = read_line(&mut reader, worker, false) else { return };
            if header == "\r\n" || header == "\n" {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if lower.starts_with("connection:") {
                close = lower.contains("close");
            }
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (status, body) = match (method, path) {
            ("GET", "/") => ("200 OK", format!("hello from worker {id} pid {pid}\n")),
            ("GET", p) if p.starts_with("/sleep/") => match p["/sleep/".len()..].parse::<u64>() {
                Ok(ms) => {
                    std::thread::sleep(Duration::from_millis(ms));
                    ("200 OK", format!("hello from worker {id} pid {pid}\n"))
                }
                Err(_) => ("400 Bad Request", "bad sleep\n".to_owned()),
            },
            _ => ("404 Not Found", "not found\n".to_owned()),
        };
        // A disconnecting worker finishes this request and closes the connection.
        close |= worker.is_disconnecting();
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
        if status.starts_with("200") {
            served.fetch_add(1, Ordering::SeqCst);
        }
        if close {
            return;
        }
    }
}
