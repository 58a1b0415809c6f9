//! `evloop`: a herd cluster whose workers each run one edge-triggered epoll loop, doing per
//! request about as little as nginx does: the benchmarks' server for measuring herd's own
//! overhead against nginx (`cargo xtask bench`), where `hello` (a thread per connection in
//! flight) measures a plain blocking server.
//!
//! ```text
//! evloop [--workers N] [--policy rr|none|least-conn|reuseport] [--listen ADDR:PORT]
//! ```
//!
//! The primary forks N workers (default: the number of cores) sharing ADDR:PORT (default
//! `127.0.0.1:8080`) under the policy (default: `HERD_SCHED_POLICY`, else `rr`) and prints
//! `listening on http://ADDR:PORT (N workers, policy P)` once every worker listens. Each worker
//! answers `GET /` with `hello from worker <id> pid <pid>` (anything else: `404`), keep-alive
//! and `Connection: close` honoured, from one loop: the listener (a socket, or the hand-off
//! channel under `rr` and `least-conn`) registered with `EPOLLEXCLUSIVE`, so one worker wakes
//! per connection as nginx's do; one connection taken per wake-up; each connection registered
//! once, edge-triggered, for reading and writing, and closed without deregistering (closing
//! removes it); one `read` per wake-up unless it filled the buffer; answers written at once.
//! What herd adds per connection is its listener's: an `ioctl(FIONBIO)` (accepted streams
//! arrive blocking), and under `rr` the hand-off's message and acknowledgement.
//!
//! SIGINT or SIGTERM stop gracefully: a disconnecting worker takes no new connection, closes
//! idle ones, finishes what it is answering and exits.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::ExitCode;

use herd::{CloseGuard, Cluster, Event, Policy, Role, Stream};

fn main() -> ExitCode {
    let mut workers = None;
    let mut policy: Option<Policy> = None;
    let mut listen = String::from("127.0.0.1:8080");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let parsed = match (flag.as_str(), args.next()) {
            ("--workers", Some(v)) => v.parse().ok().filter(|&n: &usize| n > 0).map(|n| {
                workers = Some(n);
            }),
            ("--policy", Some(v)) => v.parse().ok().map(|p| policy = Some(p)),
            ("--listen", Some(v)) => {
                listen = v;
                Some(())
            }
            _ => None,
        };
        if parsed.is_none() {
            eprintln!(
                "usage: evloop [--workers N] [--policy rr|none|least-conn|reuseport] \
                 [--listen ADDR:PORT]"
            );
            return ExitCode::from(2);
        }
    }
    let result = match herd::role() {
        Role::Primary => primary(workers, policy),
        Role::Worker(id) => worker(id, &listen),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("evloop: {message}");
            ExitCode::FAILURE
        }
    }
}

fn primary(workers: Option<usize>, policy: Option<Policy>) -> Result<(), String> {
    let mut cluster = Cluster::new();
    if let Some(n) = workers {
        cluster = cluster.workers(n);
    }
    if let Some(policy) = policy {
        cluster = cluster.policy(policy);
    }
    let policy = cluster.resolved_policy().map_err(|e| e.to_string())?;
    let count =
        workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut primary = cluster.start().map_err(|e| e.to_string())?;
    primary.handle_signals().map_err(|e| e.to_string())?;
    let mut listening = 0;
    loop {
        match primary.next_event(None).map_err(|e| e.to_string())? {
            Some(Event::Listening { address, .. }) => {
                listening += 1;
                if listening == count {
                    let shown = address.to_string();
                    println!(
                        "listening on http://{} ({count} workers, policy {policy})",
                        shown.trim_start_matches("tcp://")
                    );
                }
            }
            Some(Event::ListenFailed { error, .. }) if listening < count => {
                return Err(error.to_string());
            }
            Some(Event::Drained) => return Ok(()),
            _ => {}
        }
    }
}

/// The listener's key in the epoll set; connection `i` has key `i + 1`.
const LISTENER: u64 = 0;
/// Bytes read at a time; a request head larger than [`MAX_HEAD`] closes the connection.
const READ_SIZE: usize = 4096;
const MAX_HEAD: usize = 16 * 1024;

/// One client connection.
struct Conn {
    stream: TcpStream,
    /// Counts the connection as the worker's while it lives (a disconnect waits for it).
    _guard: CloseGuard,
    /// Received bytes not yet answered.
    input: Vec<u8>,
    /// Answer bytes not yet written (the socket was full).
    output: Vec<u8>,
    /// Close once `output` is written.
    closing: bool,
}

fn worker(id: herd::WorkerId, listen: &str) -> Result<(), String> {
    let worker = herd::worker().map_err(|e| e.to_string())?;
    // A failed listen is the primary's to report.
    let Ok(listener) = worker.listen(listen) else { std::process::exit(1) };
    let body = format!("hello from worker {id} pid {}\n", std::process::id());
    let answers = Answers::new(&body);
    let epoll = sys::Epoll::new().map_err(|e| format!("epoll_create1: {e}"))?;
    epoll
        .add(listener.as_raw_fd(), LISTENER, sys::LISTENER_EVENTS)
        .map_err(|e| format!("epoll_ctl: {e}"))?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = sys::Events::new(256);
    let mut accepting = true;
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        // A disconnect is noticed within the timeout: it costs nothing under load.
        epoll.wait(&mut events, 200).map_err(|e| format!("epoll_wait: {e}"))?;
        if accepting && worker.is_disconnecting() {
            accepting = false;
            epoll.delete(listener.as_raw_fd());
            // Idle connections close now; busy ones close after their answer.
            for (slot, conn) in conns.iter_mut().enumerate() {
                if conn.as_ref().is_some_and(|c| c.input.is_empty() && c.output.is_empty()) {
                    *conn = None;
                    free.push(slot);
                }
            }
        }
        for &(key, _) in events.iter() {
            if key == LISTENER {
                if !accepting {
                    continue;
                }
                let Some((stream, guard)) = accept(&listener) else { continue };
                let slot = free.pop().unwrap_or_else(|| {
                    conns.push(None);
                    conns.len() - 1
                });
                if epoll.add(stream.as_raw_fd(), slot as u64 + 1, sys::CONN_EVENTS).is_err() {
                    free.push(slot);
                    continue;
                }
                let conn = Conn {
                    stream,
                    _guard: guard,
                    input: Vec::new(),
                    output: Vec::new(),
                    closing: false,
                };
                conns[slot] = Some(conn);
                // The request has usually arrived with the connection: answer it now rather
                // than after one more wait (edge-triggered, so nothing is missed either way).
                drive_slot(&mut conns, &mut free, slot, &answers, &mut buf, !accepting);
                continue;
            }
            drive_slot(&mut conns, &mut free, key as usize - 1, &answers, &mut buf, !accepting);
        }
        if !accepting && conns.iter().all(Option::is_none) {
            worker.finish();
        }
    }
}

/// One connection from the listener, nonblocking; `None` if another worker took it, or on an
/// error (the next wake-up tries again).
fn accept(listener: &herd::Listener) -> Option<(TcpStream, CloseGuard)> {
    let (stream, guard) = listener.try_accept().ok()?.into_parts();
    let Stream::Tcp(stream) = stream else { return None };
    stream.set_nonblocking(true).ok()?;
    Some((stream, guard))
}

/// Drives the connection in `slot` and frees the slot once it is done.
fn drive_slot(
    conns: &mut [Option<Conn>],
    free: &mut Vec<usize>,
    slot: usize,
    answers: &Answers,
    buf: &mut [u8],
    draining: bool,
) {
    let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else { return };
    if !drive(conn, answers, buf, draining) {
        // Closing the descriptor takes it out of the epoll set.
        conns[slot] = None;
        free.push(slot);
    }
}

/// Reads what is there, answers every complete request, writes what it can. `false` once the
/// connection is done.
fn drive(conn: &mut Conn, answers: &Answers, buf: &mut [u8], draining: bool) -> bool {
    if !conn.closing {
        loop {
            match conn.stream.read(buf) {
                Ok(0) => {
                    conn.closing = true;
                    break;
                }
                Ok(n) => {
                    conn.input.extend_from_slice(&buf[..n]);
                    // A short read emptied the socket: the next byte brings a new edge.
                    if n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        let mut used = 0;
        while let Some(end) = head_end(&conn.input[used..]) {
            let head = &conn.input[used..used + end];
            used += end;
            let close = draining || wants_close(head);
            conn.output.extend_from_slice(answers.pick(head, close));
            if close {
                conn.closing = true;
                break;
            }
        }
        conn.input.drain(..used);
        if conn.closing {
            conn.input.clear();
        } else if conn.input.len() > MAX_HEAD {
            return false;
        }
    }
    while !conn.output.is_empty() {
        match conn.stream.write(&conn.output) {
            Ok(n) => {
                conn.output.drain(..n);
            }
            // Edge-triggered: writability is reported when the socket drains.
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    !(conn.closing || (draining && conn.input.is_empty()))
}

/// The length of the first request head (through its blank line), if complete.
fn head_end(input: &[u8]) -> Option<usize> {
    input.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// HTTP/1.0, or a `Connection` header saying `close`.
fn wants_close(head: &[u8]) -> bool {
    let line_end = head.iter().position(|&b| b == b'\r').unwrap_or(head.len());
    let mut close = head[..line_end].ends_with(b"HTTP/1.0");
    for line in head[line_end..].split(|&b| b == b'\n') {
        let line = line.strip_prefix(b"\r").unwrap_or(line);
        if line.len() > 11 && line[..11].eq_ignore_ascii_case(b"connection:") {
            close = line[11..].windows(5).any(|w| w.eq_ignore_ascii_case(b"close"));
        }
    }
    close
}

/// Every answer, built once.
struct Answers {
    ok: [Vec<u8>; 2],
    not_found: [Vec<u8>; 2],
}

impl Answers {
    fn new(body: &str) -> Answers {
        let build = |status: &str, body: &str, close: bool| {
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
                body.len(),
                if close { "Connection: close\r\n" } else { "" }
            )
            .into_bytes()
        };
        Answers {
            ok: [build("200 OK", body, false), build("200 OK", body, true)],
            not_found: [
                build("404 Not Found", "not found\n", false),
                build("404 Not Found", "not found\n", true),
            ],
        }
    }

    fn pick(&self, head: &[u8], close: bool) -> &[u8] {
        let set = if head.starts_with(b"GET / ") { &self.ok } else { &self.not_found };
        &set[usize::from(close)]
    }
}

mod sys;
