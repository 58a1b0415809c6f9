//! The metrics thread's connections: one `poll(2)` loop over the listener and every client,
//! so a client that stalls (idle, or sending its request a byte a second) never holds up
//! another one: a probe is answered while slow clients wait.
//!
//! Each connection has a deadline for the whole exchange, not per read: [`REQUEST_DEADLINE`]
//! from its accept to the end of its request head, then [`RESPONSE_DEADLINE`] to take the
//! answer; past either it is closed. At most [`MAX_CONNECTIONS`] are held: one more accepted
//! closes the oldest (the one that has waited longest, so the slow ones go and a fresh probe
//! stays). Requests completed in the same turn share one snapshot of the primary, so many
//! probes against a stuck primary wait its [`PROBE_TIMEOUT`](crate::stats::PROBE_TIMEOUT)
//! once, not once each.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::http::{self, Response};
use crate::sys::{self, Interest};

/// How long a client may take from its connection to the end of its request head: 2 s.
pub(super) const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// How long a client may take to read the whole answer: 2 s.
pub(super) const RESPONSE_DEADLINE: Duration = Duration::from_secs(2);

/// The most connections held at once: 64. One more closes the oldest.
pub(super) const MAX_CONNECTIONS: usize = 64;

/// One client.
struct Client {
    stream: TcpStream,
    accepted: Instant,
    deadline: Instant,
    state: State,
}

enum State {
    /// The request head so far.
    Reading(Vec<u8>),
    /// Its path and whether only the head is wanted: answered this turn.
    Routing(String, bool),
    /// The answer, and how much of it was sent.
    Writing(Vec<u8>, usize),
    /// Done or failed: closed this turn.
    Closed,
}

/// Serves until `stop` is set (and `stop_wake` readable). `route` answers the paths asked
/// in one turn, in order.
pub(super) fn serve(
    listener: &TcpListener,
    stop: &AtomicBool,
    stop_wake: BorrowedFd<'_>,
    mut route: impl FnMut(&[&str]) -> Vec<Response>,
) {
    let mut clients: Vec<Client> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let timeout = clients.iter().map(|c| c.deadline.saturating_duration_since(now)).min();
        let mut fds = vec![(listener.as_fd(), Interest::Read), (stop_wake, Interest::Read)];
        fds.extend(clients.iter().map(|c| {
            let interest = match c.state {
                State::Writing(..) => Interest::Write,
                _ => Interest::Read,
            };
            (c.stream.as_fd(), interest)
        }));
        let ready = match sys::wait_many(&fds, timeout) {
            Ok(ready) => ready,
            Err(_) => {
                // poll(2) failed (ENOMEM): yield rather than spin, and try again.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        drop(fds);
        for (client, ready) in clients.iter_mut().zip(&ready[2..]) {
            if *ready {
                client.advance();
            }
        }
        route_all(&mut clients, &mut route);
        let now = Instant::now();
        clients.retain(|c| !matches!(c.state, State::Closed) && c.deadline > now);
        if ready[0] {
            accept_all(listener, &mut clients);
        }
    }
}

/// Takes every queued connection, closing the oldest held past [`MAX_CONNECTIONS`].
fn accept_all(listener: &TcpListener, clients: &mut Vec<Client>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                if clients.len() >= MAX_CONNECTIONS {
                    // The oldest first: it has had the longest to send its request.
                    let oldest = (0..clients.len()).min_by_key(|&i| clients[i].accepted);
                    if let Some(i) = oldest {
                        clients.swap_remove(i);
                    }
                }
                let accepted = Instant::now();
                let mut client = Client {
                    stream,
                    accepted,
                    deadline: accepted + REQUEST_DEADLINE,
                    state: State::Reading(Vec::new()),
                };
                // A probe usually sent its request with its connection: read it now.
                client.advance();
                clients.push(client);
            }
            // Descriptors ran out: the kernel keeps the rest queued; pause briefly.
            Err(e) if herd_handle::is_resource_exhaustion(&e) => {
                std::thread::sleep(Duration::from_millis(50));
                return;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // WouldBlock: all taken; anything else (a client that went): try next turn.
            Err(_) => return,
        }
    }
}

/// Answers every client whose request is complete, with one call to `route`.
fn route_all(clients: &mut [Client], route: &mut impl FnMut(&[&str]) -> Vec<Response>) {
    let paths: Vec<&str> = clients
        .iter()
        .filter_map(|c| match &c.state {
            State::Routing(path, _) => Some(path.as_str()),
            _ => None,
        })
        .collect();
    if paths.is_empty() {
        return;
    }
    let mut responses = route(&paths).into_iter();
    for client in clients.iter_mut() {
        if let State::Routing(_, head_only) = client.state {
            let response = responses.next().unwrap_or_else(|| Response::text(500, "no answer\n"));
            client.respond(&response, head_only);
        }
    }
}

impl Client {
    /// Reads or writes what the socket takes without blocking.
    fn advance(&mut self) {
        match &mut self.state {
            State::Reading(head) => {
                let mut buf = [0u8; 1024];
                loop {
                    match self.stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            head.extend_from_slice(&buf[..n]);
                            if http::head_ended(head) || head.len() >= http::MAX_HEAD {
                                break;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                        Err(_) => {
                            self.state = State::Closed;
                            return;
                        }
                    }
                }
                // The head ended, filled the limit, or the client closed its side.
                if head.is_empty() {
                    self.state = State::Closed;
                    return;
                }
                match http::parse(head) {
                    Ok((path, head_only)) => self.state = State::Routing(path, head_only),
                    Err(response) => self.respond(&response, false),
                }
            }
            State::Writing(bytes, sent) => loop {
                match self.stream.write(&bytes[*sent..]) {
                    Ok(n) => {
                        *sent += n;
                        if *sent == bytes.len() || n == 0 {
                            self.state = State::Closed;
                            return;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    Err(_) => {
                        self.state = State::Closed;
                        return;
                    }
                }
            },
            State::Routing(..) | State::Closed => {}
        }
    }

    /// Starts sending `response`, with a fresh deadline for it.
    fn respond(&mut self, response: &Response, head_only: bool) {
        self.state = State::Writing(http::encode(response, head_only), 0);
        self.deadline = Instant::now() + RESPONSE_DEADLINE;
        self.advance();
    }
}
