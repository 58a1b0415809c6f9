//! The load generator: one std thread per concurrency slot, each looping until the deadline.
//! A request counts if it starts after the warm-up and completes before the deadline; its
//! latency goes into the thread's histogram, merged at the end.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::args::Mode;
use super::histogram::Histogram;
use super::http::{self, GET_CLOSE, GET_KEEPALIVE};
use super::procstat;

/// Connect, read and write timeout: a stuck server cannot hold a run past its deadline by more.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// A response head or body larger than this is an error.
const MAX_RESPONSE: usize = 64 * 1024;

/// One run of load against one address.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) addr: SocketAddr,
    pub(crate) mode: Mode,
    pub(crate) concurrency: usize,
    /// Load starts here; requests that start before `measure_from` are the warm-up.
    pub(crate) start: Instant,
    pub(crate) measure_from: Instant,
    pub(crate) end: Instant,
}

/// What one or more generators measured inside the window.
#[derive(Clone)]
pub(crate) struct Outcome {
    pub(crate) latency: Histogram,
    /// Successful (200, recognised body) requests.
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// Connections established inside the window.
    pub(crate) connections: u64,
    /// Requests per worker id, from the response bodies.
    pub(crate) per_worker: BTreeMap<u64, u64>,
    /// The first error seen, for the report.
    pub(crate) first_error: Option<String>,
    /// CPU seconds the generator process(es) used inside the window.
    pub(crate) cpu_s: f64,
    pub(crate) window_s: f64,
    /// Generator processes merged into this outcome.
    pub(crate) generators: u32,
    /// Latency quantiles `(q, µs)` given by an outside generator (wrk), which has no
    /// histogram to give; `None` for the built-in generator.
    pub(crate) quantiles: Option<Vec<(f64, f64)>>,
}

impl Outcome {
    pub(crate) fn empty(window_s: f64) -> Outcome {
        Outcome {
            latency: Histogram::new(),
            requests: 0,
            errors: 0,
            connections: 0,
            per_worker: BTreeMap::new(),
            first_error: None,
            cpu_s: 0.0,
            window_s,
            generators: 1,
            quantiles: None,
        }
    }

    /// Adds another generator's outcome for the same window.
    pub(crate) fn merge(&mut self, other: &Outcome) {
        self.latency.merge(&other.latency);
        self.requests += other.requests;
        self.errors += other.errors;
        self.connections += other.connections;
        for (id, n) in &other.per_worker {
            *self.per_worker.entry(*id).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.cpu_s += other.cpu_s;
        self.generators += other.generators;
    }
}

/// Where the window opens and closes, so the caller can sample the server at those moments.
pub(crate) enum Edge {
    Open,
    Close,
}

/// Runs the plan: spawns the threads, calls `at_edge` when the window opens and closes
/// (sampling this process's CPU time at the same moments), and merges what the threads saw.
pub(crate) fn run(plan: &Plan, at_edge: &mut dyn FnMut(Edge)) -> Result<Outcome, String> {
    let threads: Vec<_> = (0..plan.concurrency)
        .map(|i| {
            let plan = *plan;
            std::thread::Builder::new()
                .name(format!("load-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || slot(&plan))
                .map_err(|e| format!("cannot spawn a load thread: {e}"))
        })
        .collect::<Result<_, _>>()?;
    sleep_until(plan.measure_from);
    at_edge(Edge::Open);
    let cpu_before = procstat::self_cpu_ticks();
    sleep_until(plan.end);
    let cpu_after = procstat::self_cpu_ticks();
    at_edge(Edge::Close);
    let window_s = (plan.end - plan.measure_from).as_secs_f64();
    let mut outcome = Outcome::empty(window_s);
    for thread in threads {
        let part = thread.join().map_err(|_| "a load thread panicked".to_string())?;
        outcome.merge(&part);
    }
    outcome.generators = 1;
    outcome.cpu_s = procstat::seconds(cpu_after.saturating_sub(cpu_before));
    Ok(outcome)
}

pub(crate) fn sleep_until(when: Instant) {
    let now = Instant::now();
    if when > now {
        std::thread::sleep(when - now);
    }
}

/// One concurrency slot: requests back to back until the deadline.
fn slot(plan: &Plan) -> Outcome {
    sleep_until(plan.start);
    let mut out = Outcome::empty(0.0);
    let mut buf = Vec::with_capacity(4096);
    let mut kept: Option<TcpStream> = None;
    loop {
        let started = Instant::now();
        if started >= plan.end {
            break;
        }
        let counted = started >= plan.measure_from;
        let result = match plan.mode {
            Mode::Close => connect(plan.addr).and_then(|mut stream| {
                if counted {
                    out.connections += 1;
                }
                exchange(&mut stream, GET_CLOSE, &mut buf).map(|(id, _)| id)
            }),
            Mode::KeepAlive => {
                let opened = if counted { &mut out.connections } else { &mut 0 };
                keepalive(plan.addr, &mut kept, &mut buf, opened)
            }
        };
        let done = Instant::now();
        match result {
            Ok(id) if counted && done <= plan.end => {
                out.latency.record((done - started).as_micros() as u64);
                out.requests += 1;
                *out.per_worker.entry(id).or_default() += 1;
            }
            Ok(_) => {}
            Err(message) => {
                if counted {
                    out.errors += 1;
                    out.first_error.get_or_insert(message);
                }
                // A server that refuses at once must not turn this loop into a spin.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    out
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream =
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| format!("set timeout: {e}"))?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| format!("set timeout: {e}"))?;
    Ok(stream)
}

/// One request on the slot's kept-alive connection, connecting first if there is none; the
/// connection is dropped after an error or a `Connection: close` answer. `opened` counts
/// connections made.
fn keepalive(
    addr: SocketAddr,
    kept: &mut Option<TcpStream>,
    buf: &mut Vec<u8>,
    opened: &mut u64,
) -> Result<u64, String> {
    if kept.is_none() {
        *kept = Some(connect(addr)?);
        *opened += 1;
    }
    let stream = kept.as_mut().expect("connected above");
    match exchange(stream, GET_KEEPALIVE, buf) {
        Ok((id, close)) => {
            if close {
                *kept = None;
            }
            Ok(id)
        }
        Err(e) => {
            *kept = None;
            Err(e)
        }
    }
}

/// Sends one request and reads its whole response: `(worker id, server closes)`.
fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(u64, bool), String> {
    stream.write_all(request).map_err(|e| format!("write: {e}"))?;
    buf.clear();
    let head = loop {
        if let Some(head) = http::parse_head(buf)? {
            break head;
        }
        fill(stream, buf)?;
    };
    let total = head.len + head.content_length;
    if total > MAX_RESPONSE {
        return Err(format!("response of {total} bytes"));
    }
    while buf.len() < total {
        fill(stream, buf)?;
    }
    if buf.len() > total {
        return Err("bytes after the response".into());
    }
    if head.status != 200 {
        return Err(format!("status {}", head.status));
    }
    let id = http::worker_id(&buf[head.len..total]).ok_or_else(|| {
        format!("unrecognised body {:?}", String::from_utf8_lossy(&buf[head.len..]))
    })?;
    Ok((id, head.close))
}

/// Reads what is available onto `buf`; end of stream is an error (mid-response).
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Err("connection closed mid-response".into()),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_RESPONSE {
                    return Err("response too large".into());
                }
                return Ok(());
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err("read: timed out".into());
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}
