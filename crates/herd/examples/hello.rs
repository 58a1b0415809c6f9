//! `hello`: an HTTP/1.1 cluster, the README's main job.
//!
//! ```text
//! hello [--workers N] [--policy rr|none|least-conn|reuseport]
//!       [--listen ADDR:PORT|systemd:NAME] [--hang-timeout SECS] [--control PATH]
//! hello --bare [--workers N] [--listen ADDR:PORT]
//! ```
//!
//! The primary forks N workers (default: the number of cores) that share ADDR:PORT (default
//! `127.0.0.1:8080`) under the policy (default: `HERD_SCHED_POLICY`, else `rr`), and prints
//! `listening on http://ADDR:PORT (N workers, policy P)` once every worker listens; if the
//! address cannot be bound (`Event::ListenFailed`) it prints the error in one line and exits
//! with 1. `--listen systemd:NAME` serves the socket systemd passed under that name (a
//! `.socket` unit with `FileDescriptorName=NAME`; any herd spec works, see `herd::Spec`). Each
//! worker answers `GET /` with `hello from worker <id> pid <pid>`, and `GET
//! /sleep/<ms>` the same after that many milliseconds; keep-alive and `Connection: close` are
//! honoured. A request's line and headers may take 16 KiB at most (beyond: `431`, and the
//! connection closes); a `Content-Length` body is read and thrown away, so the next request on
//! the connection is read where it starts; `Transfer-Encoding` is not implemented (`501`).
//!
//! Signals to the primary: SIGINT or SIGTERM stop gracefully (requests in flight complete;
//! then one line per worker place, `worker <id>: <n> requests`, and exit 0; a second one stops
//! at once); SIGHUP restarts every worker, one at a time, refusing no request, and runs the
//! program on disk now (a new build renamed over the old one); SIGTTIN and SIGTTOU add or
//! remove a worker (never the last). A worker that dies is replaced; one that hangs (stops
//! answering, or stops taking connections) for `--hang-timeout` seconds (default 30; `0` turns
//! detection off) is killed and replaced. Each of these says so in one line on stderr:
//! a rolling restart when it begins and when it ends (done, or aborted and why), a respawn, a
//! scaling, a halted place, a hang. With `--control PATH` the primary listens there for
//! `herd status`, `herd reload`, `herd scale N` and `herd stop --control PATH`.
//!
//! `--bare` runs no herd at all, for `cargo xtask bench` to measure herd against: N copies of
//! the program, each binding ADDR:PORT itself with `SO_REUSEPORT` (the first one's port is the
//! others', so port 0 works) and serving with the same code as a worker, from a blocking
//! `accept(2)`; the starting process prints the same listening line (`policy bare`) and exits
//! with an error when one of them does; they exit when it does, so SIGTERM to it (the default
//! action: no graceful stop) ends them all.

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
    control: Option<String>,
    /// No herd: N independent processes (see [`bare`]).
    bare: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        workers: None,
        policy: None,
        listen: "127.0.0.1:8080".into(),
        hang_timeout: None,
        control: None,
        bare: false,
    };
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
            "--control" => args.control = Some(value()?),
            "--hang-timeout" => {
                let v = value()?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| format!("--hang-timeout {v:?}: not a number of seconds"))?;
                args.hang_timeout = Some((secs > 0.0).then(|| Duration::from_secs_f64(secs)));
            }
            "--bare" => args.bare = true,
            "-h" | "--help" => {
                return Err("usage: hello [--workers N] [--policy rr|none|least-conn|reuseport] [--listen ADDR:PORT|systemd:NAME] [--hang-timeout SECS] [--control PATH] [--bare]".into());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.bare && (args.policy.is_some() || args.hang_timeout.is_some() || args.control.is_some())
    {
        return Err(
            "--bare runs no herd: --policy, --hang-timeout and --control do not apply".into()
        );
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
    if let Some(id) = std::env::var(BARE_WORKER_VAR).ok().and_then(|v| v.parse().ok()) {
        if let Err(message) = bare_worker(id, &args.listen) {
            eprintln!("hello: {message}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    let result = match herd::role() {
        Role::Primary if args.bare => bare(&args),
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
    if let Some(path) = &args.control {
        cluster = cluster.control_socket(path);
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
                    if policy == herd::Policy::ReusePort && !herd::registry::migrates_queued() {
                        // Without CAP_BPF (or the tcp_migrate_req sysctl) the kernel resets
                        // what is queued on a removed worker's socket: said once, up front.
                        eprintln!(
                            "hello: connections queued on a removed worker's socket will be \
                             reset (no CAP_BPF, net.ipv4.tcp_migrate_req=0); see the README"
                        );
                    }
                }
            }
            Some(Event::ListenFailed { worker, error, .. }) => {
                if !announced {
                    // The cluster cannot serve: the error, once, and exit 1 (the workers exit
                    // by themselves; none is respawned into the same failure).
                    return Err(error.to_string());
                }
                eprintln!("hello: worker {worker}: {error}");
            }
            Some(Event::Message { worker, data, .. }) => {
                let text = String::from_utf8_lossy(&data);
                if let Some(n) = text.strip_prefix("count ").and_then(|n| n.parse::<u64>().ok()) {
                    if let Some(entry) = place_of.get(&worker).and_then(|p| places.get_mut(p)) {
                        entry.1 += n;
                    }
                }
            }
            // An exit nobody asked for (no disconnect under way): a crash, or a kill.
            Some(Event::Exit { worker, status, info, .. }) if !info.disconnecting && !announced => {
                return Err(format!("worker {worker} exited before listening ({status})"));
            }
            Some(Event::Exit { worker, status, info, .. }) if !info.disconnecting => {
                deaths.insert(worker, status);
            }
            // A worker that was draining but did not exit by itself (a kill from outside, or
            // the kill timeout): its connections in flight were cut, so it is said.
            Some(Event::Exit { worker, status, after_disconnect: false, .. }) => {
                eprintln!("hello: worker {worker} did not finish draining: {status}");
            }
            // One line per respawn, hang, halt, scaling and rolling restart (begin and end); a
            // place that keeps crashing is retried (or halts alone) while the others serve, so
            // hello goes on as long as any worker does.
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
            Some(Event::Scaled { from, to }) if from == to => {
                eprintln!("hello: not removing the last worker ({to} left)");
            }
            Some(Event::Scaled { from, to }) => {
                eprintln!("hello: scaled from {from} to {to} workers")
            }
            Some(Event::ForkFailed { reason }) => eprintln!("hello: {reason}"),
            Some(Event::Restarting { workers }) => {
                eprintln!("hello: rolling restart of {workers} workers begins");
            }
            Some(Event::RestartMerged { places }) => {
                eprintln!("hello: rolling restart asked for again: places {places:?} roll again");
            }
            Some(Event::Restarted) => eprintln!("hello: rolling restart done"),
            Some(Event::RestartAborted { place, reason }) => {
                eprintln!("hello: rolling restart aborted at place {place}: {reason}");
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
    // A failed listen is the primary's to report (`Event::ListenFailed`), once.
    let Ok(listener) = worker.listen(&args.listen) else { std::process::exit(1) };
    let served = Arc::new(AtomicU64::new(0));
    let reporter = worker.clone();
    let total = Arc::clone(&served);
    // The last word before exit: how many requests this worker answered.
    worker.at_exit(move || {
        let _ = reporter.send(format!("count {}", total.load(Ordering::SeqCst)).as_bytes(), &[]);
    });
    let shared = Arc::new(Acceptors {
        source: Source::Herd { listener, worker: worker.clone() },
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

/// Whether the process serving a connection is draining: a herd worker that is disconnecting
/// closes idle keep-alive connections and answers with `Connection: close`.
trait Draining {
    fn draining(&self) -> bool;
}

impl Draining for Worker {
    fn draining(&self) -> bool {
        self.is_disconnecting()
    }
}

/// A `--bare` process never drains: it serves until it is killed.
struct Never;

impl Draining for Never {
    fn draining(&self) -> bool {
        false
    }
}

/// Where acceptor threads take connections from.
enum Source {
    /// A herd worker's listener (any policy).
    Herd { listener: herd::Listener, worker: Worker },
    /// `--bare`: a socket this process bound itself with `SO_REUSEPORT`, accepted from with a
    /// blocking `accept(2)`, as a program without herd would.
    Bare(std::net::TcpListener),
}

/// Threads that accept and then serve what they accepted, reused from one connection to the
/// next: creating a thread per connection would cost more than the request itself.
struct Acceptors {
    source: Source,
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
        loop {
            match &self.source {
                Source::Herd { listener, worker } => {
                    // `None` once the worker disconnects.
                    let Some(conn) = listener.incoming().next() else { return };
                    let Ok(conn) = conn else { continue };
                    self.busy();
                    // `conn` lives until `serve` returns: the connection counts as open (and a
                    // disconnecting worker waits for it) until then.
                    serve(conn.stream(), worker, &self.served, self.id, self.pid);
                }
                Source::Bare(listener) => {
                    let Ok((stream, _)) = listener.accept() else { continue };
                    self.busy();
                    serve(&Stream::Tcp(stream), &Never, &self.served, self.id, self.pid);
                }
            }
            if self.idle.fetch_add(1, Ordering::SeqCst) >= Self::MAX_IDLE {
                self.idle.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
    }

    /// This thread is busy now: if nobody else waits for the next connection, start a thread
    /// that does.
    fn busy(self: &Arc<Self>) {
        if self.idle.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.fetch_add(1, Ordering::SeqCst);
            let pool = Arc::clone(self);
            std::thread::spawn(move || pool.accept_loop());
        }
    }
}

/// Set by `--bare` in the environment of each process it starts: the process's worker id.
const BARE_WORKER_VAR: &str = "HELLO_BARE_WORKER";

/// `--bare`: no herd. Starts N copies of this program, each binding the address itself with
/// `SO_REUSEPORT` and serving with the same code as a herd worker; the first one's port is the
/// others' (so port 0 works). Prints the usual listening line once all of them listen, then
/// waits: it exits when any of them does, and they exit when it does (their stdin, a pipe
/// from it, reaches end of stream), so SIGTERM to it ends them all.
fn bare(args: &Args) -> Result<(), String> {
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().map_err(|e| format!("--bare: own path: {e}"))?;
    let count =
        args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut address = args.listen.clone();
    let mut children = Vec::new();
    for id in 1..=count {
        let mut child = Command::new(&exe)
            .args(["--listen", &address])
            .env(BARE_WORKER_VAR, id.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("--bare: cannot start {}: {e}", exe.display()))?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        let _ = BufReader::new(stdout).read_line(&mut line);
        // "listening on ADDR:PORT", or nothing if it failed (its error is on stderr).
        let Some(bound) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("--bare: process {id} did not listen on {address}"));
        };
        address = bound.to_owned();
        children.push(child);
    }
    println!("listening on http://{address} ({count} workers, policy bare)");
    let _ = std::io::stdout().flush();
    // Any child's exit ends the group: the others see their stdin close.
    let (tx, rx) = std::sync::mpsc::channel();
    for (id, mut child) in children.into_iter().enumerate() {
        let tx = tx.clone();
        // `Child::wait` would close the child's stdin first: it is kept open here instead.
        let stdin = child.stdin.take();
        std::thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send((id + 1, status));
            drop(stdin);
        });
    }
    let (id, status) = rx.recv().map_err(|e| e.to_string())?;
    Err(format!("--bare: process {id} exited ({status:?})"))
}

/// One `--bare` process: bind with `SO_REUSEPORT`, serve until stdin ends.
fn bare_worker(id: WorkerId, listen: &str) -> Result<(), String> {
    let spec: herd::Spec = listen.parse().map_err(|e| format!("{listen}: {e}"))?;
    let options = herd::handle::BindOptions { reuse_port: true, ..Default::default() };
    let bound = herd::handle::bind(&spec, &options).map_err(|e| e.to_string())?;
    let listener = bound
        .into_listener()
        .and_then(|l| l.into_tcp_listener().ok())
        .ok_or_else(|| format!("{listen}: --bare serves TCP only"))?;
    // Blocking accepts, as std's listener gives them.
    listener.set_nonblocking(false).map_err(|e| format!("{listen}: {e}"))?;
    let local = listener.local_addr().map_err(|e| format!("{listen}: {e}"))?;
    println!("listening on {local}");
    let _ = std::io::stdout().flush();
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let shared = Arc::new(Acceptors {
        source: Source::Bare(listener),
        served: Arc::new(AtomicU64::new(0)),
        idle: AtomicUsize::new(1),
        id,
        pid: std::process::id(),
    });
    shared.accept_loop();
    // This thread may leave the pool (idle threads beyond the limit end); the process lives
    // until its stdin ends.
    loop {
        std::thread::park();
    }
}

/// The most bytes a request's line and headers may take together: Node's default
/// `--max-http-header-size`. Beyond, the answer is `431` and the connection closes.
const MAX_HEAD: usize = 16 * 1024;

/// One line read by [`read_line`].
enum Line {
    /// The line, with its `\n`.
    Text(String),
    /// End of stream, an error, or an idle connection of a disconnecting worker.
    Gone,
    /// No line end within the head's remaining budget.
    TooLong,
}

/// Reads one line of at most `budget` bytes (taken off the budget), waiting in 100 ms slices so
/// that an idle keep-alive connection notices a disconnect. [`Line::Gone`] at end of stream, on
/// an error, or once a disconnecting worker's connection has been `idle` for a second: closing
/// an idle connection always races a request the client may be sending, so the worker gives
/// clients a moment (a request arriving then is answered with `Connection: close`).
fn read_line(
    reader: &mut BufReader<&Stream>,
    worker: &dyn Draining,
    idle: bool,
    budget: &mut usize,
) -> Line {
    const IDLE_SLICES_BEFORE_CLOSE: u32 = 10;
    let mut line = Vec::new();
    let mut idle_slices = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok([]) => return Line::Gone,
            Ok(available) => available,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if idle && line.is_empty() && worker.draining() {
                    idle_slices += 1;
                    if idle_slices >= IDLE_SLICES_BEFORE_CLOSE {
                        return Line::Gone;
                    }
                }
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Line::Gone,
        };
        let room = available.len().min(*budget);
        if let Some(end) = available[..room].iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&available[..=end]);
            reader.consume(end + 1);
            *budget -= end + 1;
            return Line::Text(String::from_utf8_lossy(&line).into_owned());
        }
        if room == *budget {
            return Line::TooLong;
        }
        line.extend_from_slice(&available[..room]);
        reader.consume(room);
        *budget -= room;
    }
}

/// A request's head, as far as hello cares.
enum Head {
    /// A request to answer, whose body (`length` bytes) is still to be read.
    Request { method: String, path: String, close: bool, length: u64 },
    /// Nothing to answer: the client left, or went idle while the worker disconnects.
    Gone,
    /// An answer that ends the connection: the request cannot be read any further.
    Refuse(&'static str),
}

/// Reads a request line and its headers, [`MAX_HEAD`] bytes at most.
fn read_head(reader: &mut BufReader<&Stream>, worker: &dyn Draining) -> Head {
    let mut budget = MAX_HEAD;
    let too_large = Head::Refuse("431 Request Header Fields Too Large");
    let request_line = match read_line(reader, worker, true, &mut budget) {
        Line::Text(line) => line,
        Line::Gone => return Head::Gone,
        Line::TooLong => return too_large,
    };
    let mut close = request_line.trim_end().ends_with("HTTP/1.0");
    let mut length: Option<u64> = None;
    let mut coded = false;
    loop {
        let header = match read_line(reader, worker, false, &mut budget) {
            Line::Text(header) => header,
            Line::Gone => return Head::Gone,
            Line::TooLong => return too_large,
        };
        if header == "\r\n" || header == "\n" {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Head::Refuse("400 Bad Request");
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("connection") {
            close = value.to_ascii_lowercase().contains("close");
        } else if name.eq_ignore_ascii_case("content-length") {
            // 1*DIGIT, and the same value if repeated (RFC 9112, section 6.3).
            let n = Some(value)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (n, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(seen)) if n == seen => {}
                _ => return Head::Refuse("400 Bad Request"),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            coded = true;
        }
    }
    if coded {
        // Chunked bodies are not read here, so the next request could not be found.
        return Head::Refuse("501 Not Implemented");
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    Head::Request { method: method.into(), path: path.into(), close, length: length.unwrap_or(0) }
}

/// Reads and drops `left` bytes of body. `false` if the connection ended first.
fn discard_body(reader: &mut BufReader<&Stream>, mut left: u64) -> bool {
    while left > 0 {
        match reader.fill_buf() {
            Ok([]) => return false,
            Ok(available) => {
                let n = available.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                reader.consume(n);
                left -= n as u64;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return false,
        }
    }
    true
}

/// The bytes of a response.
fn response(status: &str, body: &str, close: bool) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
}

/// Serves one connection: requests until the client closes, asks to, or the worker
/// disconnects between two requests. The caller keeps the connection (a herd worker's
/// `Connection`, which counts it as open) alive until this returns.
fn serve(stream: &Stream, worker: &dyn Draining, served: &AtomicU64, id: WorkerId, pid: u32) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    // Reads and writes both go through `&Stream`.
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    loop {
        let (method, path, mut close, length) = match read_head(&mut reader, worker) {
            Head::Request { method, path, close, length } => (method, path, close, length),
            Head::Gone => return,
            Head::Refuse(status) => {
                let body = format!("{}\n", &status[4..]);
                if writer.write_all(response(status, &body, true).as_bytes()).is_ok() {
                    linger(stream, &mut reader);
                }
                return;
            }
        };
        if !discard_body(&mut reader, length) {
            return;
        }
        let (status, body) = match (method.as_str(), path.as_str()) {
            ("GET", "/") => ("200 OK", format!("hello from worker {id} pid {pid}\n")),
            ("GET", p) if p.starts_with("/sleep/") => match p["/sleep/".len()..].parse::<u64>() {
                Ok(ms) => {
                    std::thread::sleep(Duration::from_millis(ms));
                    ("200 OK", format!("hello from worker {id} pid {pid}\n"))
                }
                Err(_) => ("400 Bad Request", "bad sleep\n".to_owned()),
            },
            ("GET", _) => ("404 Not Found", "not found\n".to_owned()),
            _ => ("405 Method Not Allowed", "only GET\n".to_owned()),
        };
        // A disconnecting worker finishes this request and closes the connection.
        close |= worker.draining();
        if writer.write_all(response(status, &body, close).as_bytes()).is_err() {
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

/// Closes a connection whose request was not read whole without destroying the answer: a
/// close with unread input makes the kernel send a reset, which may overtake the answer on the
/// client's side. So the worker ends its side first, then reads what the client still sends
/// (until it closes, at most a second and 1 MiB) before the connection is dropped, as nginx's
/// `lingering_close` does.
fn linger(stream: &Stream, reader: &mut BufReader<&Stream>) {
    const MAX_BYTES: usize = 1 << 20;
    if stream.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    let until = std::time::Instant::now() + Duration::from_secs(1);
    let mut read = 0;
    while read < MAX_BYTES && std::time::Instant::now() < until {
        match reader.fill_buf() {
            Ok([]) => return,
            Ok(available) => {
                let n = available.len();
                reader.consume(n);
                read += n;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}
