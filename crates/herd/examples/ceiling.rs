//! `ceiling`: the benchmarks' reference point, a single-process, single-threaded HTTP/1.1
//! server with no cluster at all.
//!
//! ```text
//! ceiling [--listen ADDR:PORT]
//! ```
//!
//! It answers exactly as `hello` does (`GET /` with `hello from worker 0 pid <pid>`, keep-alive
//! and `Connection: close` honoured), from one epoll loop (herd's own `Poller`, as the primary uses) over nonblocking sockets, and
//! prints `listening on http://ADDR:PORT (1 workers, policy ceiling)` once bound (default
//! `127.0.0.1:8080`). `cargo xtask bench` reads every cluster's numbers as a fraction of this
//! one. SIGTERM ends it (the default action).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use herd::registry::{Events, Poller, Watched};

/// The listener's key in the poller; connection `i` has key `i + 1`.
const LISTENER: usize = 0;

/// A request head larger than this is refused and the connection closed.
const MAX_HEAD: usize = 16 * 1024;

/// One client connection: what it sent that is not answered yet, and what is not written yet.
struct Conn {
    /// Registered with the poller for as long as it lives.
    stream: Watched<TcpStream>,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Close once `output` is written.
    closing: bool,
    /// Registered for writability (output pending) rather than readability.
    writing: bool,
}

fn main() -> ExitCode {
    let mut listen = String::from("127.0.0.1:8080");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--listen", Some(addr)) => listen = addr,
            _ => {
                eprintln!("usage: ceiling [--listen ADDR:PORT]");
                return ExitCode::from(2);
            }
        }
    }
    match serve(&listen) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ceiling: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(listen: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let poller = Arc::new(Poller::new()?);
    let listener = Watched::new(&poller, listener, LISTENER)?;
    println!("listening on http://{} (1 workers, policy ceiling)", listener.get().local_addr()?);
    std::io::stdout().flush()?;

    let body = format!("hello from worker 0 pid {}\n", std::process::id());
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::new();
    loop {
        events.clear();
        poller.wait(&mut events, Some(Duration::from_secs(1)))?;
        for event in events.iter() {
            if event.key == LISTENER {
                accept_all(listener.get(), &poller, &mut conns, &mut free)?;
                continue;
            }
            let slot = event.key - 1;
            let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else { continue };
            if !drive(conn, &body) {
                // Dropping it deregisters it, then closes it.
                conns[slot] = None;
                free.push(slot);
                continue;
            }
            let want_write = !conn.output.is_empty();
            if want_write != conn.writing {
                conn.writing = want_write;
                conn.stream.set_interest(!want_write, want_write)?;
            }
        }
    }
}

/// Accepts every pending connection and registers it.
fn accept_all(
    listener: &TcpListener,
    poller: &Arc<Poller>,
    conns: &mut Vec<Option<Conn>>,
    free: &mut Vec<usize>,
) -> std::io::Result<()> {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            // A connection reset before it was accepted, or out of descriptors: try later.
            Err(_) => return Ok(()),
        };
        stream.set_nonblocking(true)?;
        let _ = stream.set_nodelay(true);
        let slot = free.pop().unwrap_or_else(|| {
            conns.push(None);
            conns.len() - 1
        });
        conns[slot] = Some(Conn {
            stream: Watched::new(poller, stream, slot + 1)?,
            input: Vec::new(),
            output: Vec::new(),
            closing: false,
            writing: false,
        });
    }
}

/// Reads what is there, answers every complete request, writes what it can. `false` once the
/// connection is done (closed by the peer, an error, or answered with `Connection: close`).
fn drive(conn: &mut Conn, body: &str) -> bool {
    if !conn.closing {
        let mut buf = [0u8; 4096];
        let mut eof = false;
        loop {
            match conn.stream.get_mut().read(&mut buf) {
                Ok(0) => {
                    // The client sent all it will; what it asked for is still answered.
                    eof = true;
                    break;
                }
                Ok(n) => conn.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        while let Some(end) = head_end(&conn.input) {
            let close = respond(&conn.input[..end], body, &mut conn.output);
            conn.input.drain(..end);
            if close {
                conn.closing = true;
                conn.input.clear();
                break;
            }
        }
        if conn.input.len() > MAX_HEAD {
            return false;
        }
        if eof {
            conn.closing = true;
        }
    }
    while !conn.output.is_empty() {
        match conn.stream.get_mut().write(&conn.output) {
            Ok(n) => {
                conn.output.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    !conn.closing
}

/// The length of the first request head (through its blank line), if complete.
fn head_end(input: &[u8]) -> Option<usize> {
    input.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Appends the answer to one request head; `true` if the connection closes after it.
fn respond(head: &[u8], body: &str, output: &mut Vec<u8>) -> bool {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut close = request_line.ends_with("HTTP/1.0");
    for header in lines {
        let lower = header.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("connection:") {
            close = value.contains("close");
        }
    }
    let mut parts = request_line.split_whitespace();
    let (status, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some("/")) => ("200 OK", body),
        _ => ("404 Not Found", "not found\n"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    output.extend_from_slice(response.as_bytes());
    close
}
