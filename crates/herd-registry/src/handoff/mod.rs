//! The hand-off handle (`rr`, `least-conn`): the primary accepts, and hands each connection's
//! descriptor to one worker over that worker's hand-off channel.
//!
//! The primary keeps its copy of every connection until a worker acknowledges taking it. A
//! worker whose channel closes (it closed its listener, or died) gives its unacknowledged
//! connections back; they go to the other workers, oldest first. A connection every worker
//! refuses is closed and counted, never bounced forever. A connection a worker could not take
//! for now (its descriptor was lost: it is at its descriptor limit) is deferred, not refused:
//! it goes to another worker or waits, and that worker gets nothing for
//! [`DEFER_PAUSE`], so no connection is closed for a shortage that passes.
//!
//! Exactly once rests on two rules kept here:
//! - a worker leaves this handle (for any reason: end of stream, a failed send, its `Close`,
//!   its exit, a new grant) only after everything it sent on its channel is read and applied
//!   ([`Handoff::remove_worker`] drains first), so an ack already sent is never overtaken by
//!   the requeue of its connection;
//! - accepting stops while [`MAX_PENDING_CONNECTIONS`] connections wait for a worker, so the
//!   primary's descriptors are bounded and the overflow waits in the kernel's listen backlog.

mod outlet;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_handle::{Listener, PeerAddr, is_resource_exhaustion};
use herd_ipc::Channel;
use herd_sched::{ConnId, Dispatcher, Next, Pick, WorkerId};

use crate::stats::{LatencyHistogram, WorkerCounts};
use crate::sys::{self, Poller, Watched};
use crate::wire::FromWorker;
use outlet::{Flushed, Outlet};

/// At most this many accepts per wake-up, so one busy listener cannot starve the other
/// sources of the event loop (level-triggered polling wakes it again at once).
const ACCEPT_BATCH: usize = 64;

/// How long accepting pauses after `EMFILE` and the like. Connections wait in the kernel's
/// backlog meanwhile; retrying at once would spin the primary at 100% CPU.
const EXHAUSTION_PAUSE: Duration = Duration::from_millis(50);

/// How long a worker that deferred a connection (its descriptor was lost on the way in) gets
/// none: 50 ms, as the accept pause after `EMFILE`. Sending it more at once would lose those
/// too, and spin the primary and the worker.
pub const DEFER_PAUSE: Duration = Duration::from_millis(50);

/// The most connections one hand-off handle keeps waiting for a worker (accepted, not yet
/// sent to any worker): 128. At the bound the primary stops accepting on that handle, and
/// resumes as soon as the queue drops below it (an ack, a refusal, a worker joining); further
/// connections wait in the kernel's listen backlog (511 by default), where they cost the
/// primary nothing.
///
/// Connections in flight to workers (at most `max_in_flight` per worker) are held besides, so
/// a handle holds at most `MAX_PENDING_CONNECTIONS + workers × max_in_flight` descriptors.
///
/// Why 128: two accept batches (64 per wake-up), so when up to 128 workers free up at once
/// each gets its next connection from the queue without waiting for another accept, while a
/// flood of clients that no worker has room for costs the primary 128 descriptors per handle,
/// not one per client until it runs out.
pub const MAX_PENDING_CONNECTIONS: usize = 128;

/// Counters of one hand-off handle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandoffStats {
    /// Connections accepted by the primary.
    pub accepted: u64,
    /// Connections a worker acknowledged taking.
    pub delivered: u64,
    /// Connections closed because every worker refused them.
    pub refused: u64,
    /// Connections a worker could not take for now (its descriptor was lost on the way in:
    /// it was at its descriptor limit), handed out again after a pause of 50 ms.
    pub deferred: u64,
    /// Times accepting paused because descriptors or memory ran out.
    pub exhausted: u64,
    /// Sends of a connection to a worker that failed with an error other than a full queue or
    /// a closed channel. A transient one (`ENOBUFS`, `ENOMEM`, `ETOOMANYREFS`) keeps the worker
    /// and its queued connections, sent again after a pause of 10 ms; a message that can never
    /// be sent (or still fails after about a second of retries) counts as refused by that
    /// worker and goes to another.
    pub send_errors: u64,
    /// Connections the primary had accepted but no worker had taken when the handle stopped
    /// taking connections (a graceful stop, [`Registry::stop_listening`]), or that a
    /// disconnecting worker refused after it: closed then, since no worker will take them.
    ///
    /// [`Registry::stop_listening`]: crate::Registry::stop_listening
    pub closed_at_stop: u64,
}

/// The unacknowledged hand-offs an event-loop worker may have ([`FromWorker::EventLoop`]),
/// unless the cluster allows more: the connections of one wake-up go to it in one `sendmmsg`.
const EVENT_LOOP_IN_FLIGHT: NonZeroUsize = NonZeroUsize::new(8).expect("8 > 0");

/// The most hand-offs in flight a thread-per-connection worker's credit allows
/// ([`FromWorker::Ack`]'s `idle`): 8, as an event loop. More idle threads than that add
/// nothing a wake-up's batch needs, and every hand-off in flight holds a descriptor.
const MAX_CREDIT: usize = 8;

/// The largest answer a worker sends on its hand-off channel, in bytes: a `FromWorker` is a
/// version byte, a tag and at most two varints (under 24 bytes).
const ANSWER_BYTES: usize = 64;

/// At most this many messages of one worker's hand-off channel are applied per wake-up.
const READ_BATCH: usize = 64;

/// How reading a worker's channel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    /// Nothing more queued (`EAGAIN`).
    Empty,
    /// End of stream: the worker closed its end or died.
    Closed,
    /// A message this build cannot decode (discarded, its descriptors closed).
    Malformed,
    /// A receive failed for another reason (a transient OS error); nothing was lost.
    Failed,
    /// The read limit was reached.
    Limit,
}

/// Read budget of a leaving worker beyond what can still change the state (its in-flight
/// acks and open-connection close reports): room for a few malformed or transiently failed
/// reads, while a worker that keeps writing cannot hold the primary in the loop forever.
const LEAVE_SLACK: usize = 64;

/// The primary's copy of a connection, with what the worker is told about it.
pub(super) struct Held {
    pub(super) fd: OwnedFd,
    /// The client's address for a TCP connection; `None` for a Unix-domain one.
    pub(super) tcp_peer: Option<SocketAddr>,
    /// Whether `fd` is `O_NONBLOCK`.
    pub(super) nonblocking: bool,
}

pub(crate) struct Handoff {
    listener: Watched<Listener>,
    dispatcher: Dispatcher,
    /// The primary's copy of every pending or in-flight connection.
    conns: HashMap<ConnId, Held>,
    /// The primary's copies of connections acknowledged in the batch being applied, closed
    /// together at its end.
    closing: Vec<OwnedFd>,
    /// Connections found unsendable to a worker so far (each counts as its refusal).
    unsendable: u64,
    /// Accept nonblocking: every worker is an event loop ([`FromWorker::EventLoop`]).
    nonblocking: bool,
    workers: HashMap<WorkerId, Outlet>,
    paused_until: Option<Instant>,
    /// The handle stopped taking connections ([`Handoff::stop`]): nothing is accepted, and
    /// what waits in the primary is closed.
    stopped: bool,
    stats: HandoffStats,
    /// Each worker's counters, from its first grant until the registry forgets the worker.
    per_worker: HashMap<WorkerId, WorkerCounts>,
    /// When the primary accepted each connection it holds, for the hand-off latency.
    accepted_at: HashMap<ConnId, Instant>,
    /// Accept to the ack of the worker that took the connection.
    latency: LatencyHistogram,
    /// Whether workers report closes (`least-conn`), so the dispatcher's open count is real.
    counts_open: bool,
}

impl Handoff {
    pub(crate) fn new(
        listener: Watched<Listener>,
        pick: Pick,
        max_in_flight: NonZeroUsize,
    ) -> Handoff {
        Handoff {
            listener,
            dispatcher: Dispatcher::new(pick, max_in_flight),
            conns: HashMap::new(),
            nonblocking: false,
            unsendable: 0,
            closing: Vec::new(),
            workers: HashMap::new(),
            paused_until: None,
            stopped: false,
            stats: HandoffStats::default(),
            per_worker: HashMap::new(),
            accepted_at: HashMap::new(),
            latency: LatencyHistogram::default(),
            counts_open: pick == Pick::LeastConnections,
        }
    }

    pub(crate) fn stats(&self) -> HandoffStats {
        self.stats
    }

    /// The accept-to-ack latency of the connections workers took.
    pub(crate) fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    /// Each worker's counters, ascending by worker id.
    pub(crate) fn worker_counts(&self) -> Vec<(WorkerId, WorkerCounts)> {
        let mut counts: Vec<(WorkerId, WorkerCounts)> = self
            .per_worker
            .iter()
            .map(|(&w, &c)| {
                let open = if self.counts_open { self.dispatcher.open(w) as u64 } else { 0 };
                (w, WorkerCounts { open, ..c })
            })
            .collect();
        counts.sort_by_key(|(w, _)| *w);
        counts
    }

    /// The worker is gone for good: its counters go.
    pub(crate) fn forget_worker(&mut self, worker: WorkerId) {
        self.per_worker.remove(&worker);
    }

    /// The listening socket, for its accept queue's length.
    pub(crate) fn listener(&self) -> &Listener {
        self.listener.get()
    }

    /// Connections held by the primary right now (pending or in flight).
    pub(crate) fn held(&self) -> usize {
        self.conns.len()
    }

    /// Adds a worker: returns the worker's end of its new hand-off channel, which is its
    /// listener. Pending connections start flowing to it at once.
    pub(crate) fn add_worker(
        &mut self,
        poller: &Arc<Poller>,
        worker: WorkerId,
        token: usize,
    ) -> std::io::Result<Channel> {
        let (mut ours, theirs) = Channel::pair()?;
        // The worker's answers are a few bytes and carry no descriptor, and what is sent is
        // one connection per message; small slots keep a batch read small (see `read`).
        ours.set_limits(herd_ipc::Limits { max_bytes: ANSWER_BYTES, max_fds: 1 });
        let channel = Watched::new(poller, ours, token)?;
        self.workers.insert(worker, Outlet::new(channel));
        self.per_worker.entry(worker).or_default();
        self.dispatcher.add_worker(worker);
        self.update_nonblocking();
        self.pump();
        Ok(theirs)
    }

    /// Removes a worker, whatever the reason, after reading and applying everything it sent on
    /// its channel (its last acks and close reports); then its unacknowledged connections go
    /// to the others.
    pub(crate) fn remove_worker(&mut self, worker: WorkerId) {
        self.leave(worker);
        self.pump();
    }

    /// No new connection goes to the worker; what is in flight to it waits for its acks.
    pub(crate) fn retire_worker(&mut self, worker: WorkerId) {
        self.dispatcher.retire(worker);
        self.pump();
    }

    pub(crate) fn has_worker(&self, worker: WorkerId) -> bool {
        self.workers.contains_key(&worker)
    }

    /// Stops taking connections, for good (a graceful stop): the listening socket is shut down
    /// (new connection attempts are refused at once, see
    /// [`Listener::stop_listening`](herd_handle::Listener::stop_listening)), and the
    /// connections accepted that wait in the primary for a worker are closed, now and whenever
    /// a worker refuses one later. Connections in flight to a worker wait for its answer: taken,
    /// they are served.
    pub(crate) fn stop(&mut self, shut_down: bool) {
        self.stopped = true;
        // Not ours alone (inherited): no shutdown; accepting stops all the same (see
        // `update_listener`), and the queue is left to whoever accepts next.
        if shut_down {
            // Fails only for a socket that is not listening any more: stopped already.
            let _ = self.listener.get().stop_listening();
        }
        // Out of the poller: a shut-down listening socket reports a hang-up whatever the
        // interest (`epoll_ctl(2)`), which would wake the loop for ever while workers drain.
        // If it cannot be taken out, the wake-ups find nothing to do; nothing is lost.
        let _ = self.listener.suspend();
        self.pump();
    }

    /// The listener is readable: accept a batch, then hand out what can be handed out.
    pub(crate) fn on_listener_ready(&mut self, next_conn: &mut ConnId) {
        if self.stopped {
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            // At the bound the rest waits in the kernel's backlog; `pump` turns accepting off
            // until the queue shrinks.
            if self.dispatcher.pending_len() >= MAX_PENDING_CONNECTIONS {
                break;
            }
            let nonblocking = self.nonblocking;
            let accepted = if nonblocking {
                self.listener.get().try_accept_nonblocking()
            } else {
                self.listener.get().try_accept()
            };
            match accepted {
                Ok((stream, peer)) => {
                    let id = *next_conn;
                    *next_conn += 1;
                    let tcp_peer = match peer {
                        PeerAddr::Tcp(address) => Some(address),
                        PeerAddr::Unix(_) => None,
                    };
                    let fd = OwnedFd::from(stream);
                    self.conns.insert(id, Held { fd, tcp_peer, nonblocking });
                    self.accepted_at.insert(id, Instant::now());
                    self.dispatcher.push(id);
                    self.stats.accepted += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                Err(e) if is_resource_exhaustion(&e) => {
                    self.stats.exhausted += 1;
                    self.paused_until = Some(Instant::now() + EXHAUSTION_PAUSE);
                    break;
                }
                // Anything else concerns one connection that is gone already; keep accepting.
                Err(_) => continue,
            }
        }
        self.pump();
    }

    /// The earliest moment [`on_timer`](Handoff::on_timer) has work: accepting resumes after
    /// an exhaustion pause, or a worker's queued connections are sent again after a failed
    /// send.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let retries = self.workers.values().filter_map(Outlet::retry_at);
        let held_off = self.workers.values().filter_map(|o| o.held_off_until);
        self.paused_until.into_iter().chain(retries).chain(held_off).min()
    }

    pub(crate) fn on_timer(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
        }
        let due: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, o)| o.retry_at().is_some_and(|at| at <= now))
            .map(|(&w, _)| w)
            .collect();
        for worker in due {
            if let Some(outlet) = self.workers.get_mut(&worker) {
                outlet.resume();
            }
            if self.flush(worker) == Flushed::Gone {
                self.leave(worker);
            }
        }
        for (&worker, outlet) in &mut self.workers {
            if outlet.held_off_until.is_some_and(|at| at <= now) {
                outlet.held_off_until = None;
                self.dispatcher.resume(worker);
            }
        }
        self.pump();
    }

    /// A worker's hand-off channel is ready: send what waited for room, read its acks and
    /// close reports.
    pub(crate) fn on_worker_ready(&mut self, worker: WorkerId) {
        let gone = match self.flush(worker) {
            Flushed::Gone => true,
            // A batch per wake-up, so a worker that floods its channel cannot hold the loop;
            // level-triggered, the channel is read again on the next turn.
            Flushed::Open => match self.read(worker, READ_BATCH) {
                Read::Empty | Read::Failed | Read::Limit => false,
                // End of stream (the worker closed its listener or died) or a message from
                // another protocol: either way this worker is done with this handle.
                Read::Closed | Read::Malformed => true,
            },
        };
        if gone {
            self.remove_worker(worker);
        } else {
            self.pump();
        }
    }

    /// Takes the worker off this handle once everything it sent is applied: an ack already on
    /// the channel must count before the dispatcher requeues what is in flight to the worker,
    /// or that connection would be served by this worker and by the next one.
    fn leave(&mut self, worker: WorkerId) {
        // Everything that can still change the state, plus slack; see LEAVE_SLACK.
        let budget = self.dispatcher.in_flight(worker) + self.dispatcher.open(worker) + LEAVE_SLACK;
        let mut left = budget;
        while left > 0 {
            match self.read(worker, left) {
                // Read on past a bad message or a transient failure: what follows may be an ack.
                Read::Malformed | Read::Failed => left -= 1,
                Read::Empty | Read::Closed | Read::Limit => break,
            }
        }
        self.workers.remove(&worker);
        self.dispatcher.remove_worker(worker);
        self.update_nonblocking();
    }

    /// Reads and applies the worker's messages until its queue is empty, end of stream, an
    /// error, or `limit` messages: a batch per system call (`recvmmsg(2)`), and a batch
    /// shorter than asked for says the queue is empty, so reading needs no `EAGAIN` to end.
    fn read(&mut self, worker: WorkerId, limit: usize) -> Read {
        let mut left = limit;
        while left > 0 {
            let Some(outlet) = self.workers.get_mut(&worker) else { return Read::Closed };
            let mut scratch = std::mem::take(&mut outlet.scratch);
            let batch = outlet.channel().try_recv_values::<FromWorker>(left, &mut scratch);
            outlet.scratch = scratch;
            let batch = match batch {
                Ok(batch) => batch,
                Err(e) if e.is_would_block() => return Read::Empty,
                Err(herd_ipc::Error::Closed) => return Read::Closed,
                Err(e) if e.raw_os_error().is_some() => return Read::Failed,
                Err(_) => return Read::Malformed,
            };
            let asked = left.min(herd_ipc::MAX_BATCH);
            let got = batch.len();
            left -= got;
            // Everything received is applied, whatever follows it in the batch.
            let mut outcome = None;
            for entry in batch {
                match entry {
                    // Descriptors have no place here: dropping them closes them.
                    Ok((message, _fds)) => self.apply(worker, message),
                    Err(herd_ipc::Error::Closed) => outcome = Some(Read::Closed),
                    Err(_) => outcome = outcome.or(Some(Read::Malformed)),
                }
            }
            // The copies of the connections this batch's acks gave away, in few system calls.
            sys::close_all(std::mem::take(&mut self.closing));
            if let Some(outcome) = outcome {
                return outcome;
            }
            if got < asked {
                return Read::Empty;
            }
        }
        Read::Limit
    }

    fn apply(&mut self, worker: WorkerId, message: FromWorker) {
        match message {
            FromWorker::Ack { conn, accepted, idle } => {
                // An ack that matches nothing in flight is ignored: it changes nothing.
                if self.dispatcher.ack(worker, conn, accepted).is_ok() {
                    let counts = self.per_worker.get_mut(&worker);
                    if accepted {
                        // The worker owns it now: the primary's copy is closed with the others
                        // of this batch of answers (see `read`).
                        if let Some(held) = self.conns.remove(&conn) {
                            self.closing.push(held.fd);
                        }
                        self.stats.delivered += 1;
                        if let Some(c) = counts {
                            c.accepted += 1;
                        }
                        if let Some(at) = self.accepted_at.remove(&conn) {
                            self.latency.observe(at.elapsed());
                        }
                    } else {
                        if let Some(c) = counts {
                            c.refused += 1;
                        }
                    }
                }
                self.credit(worker, idle);
                self.track_stall(worker, true);
            }
            FromWorker::Deferred { conn } => {
                if self.dispatcher.defer(worker, conn).is_ok() {
                    self.stats.deferred += 1;
                    if let Some(c) = self.per_worker.get_mut(&worker) {
                        c.deferred += 1;
                    }
                    if let Some(outlet) = self.workers.get_mut(&worker) {
                        outlet.held_off_until = Some(Instant::now() + DEFER_PAUSE);
                    }
                }
                self.track_stall(worker, true);
            }
            FromWorker::EventLoop => {
                if let Some(outlet) = self.workers.get_mut(&worker) {
                    outlet.nonblocking = true;
                }
                self.update_nonblocking();
                let max = self.dispatcher.max_in_flight().max(EVENT_LOOP_IN_FLIGHT);
                self.dispatcher.set_max_in_flight(worker, max);
            }
            FromWorker::Closed { count } => {
                // Never more than the worker has open: a bogus count cannot stall the loop.
                let count = (count as usize).min(self.dispatcher.open(worker));
                for _ in 0..count {
                    self.dispatcher.closed(worker);
                }
            }
        }
    }

    /// A thread-per-connection worker's bound on hand-offs in flight follows its credit: as
    /// many as it has threads waiting in `accept` (at most [`MAX_CREDIT`]), never fewer than
    /// the cluster's bound. What is in flight is never more than the threads it lands on:
    /// connections sent before this ack and not yet taken count as in flight, and each has
    /// one of the `idle` threads waiting for it. An event loop keeps its own bound.
    ///
    /// Not under `least-conn`: there a worker at its bound waits for its turn, so each
    /// connection goes to the least loaded worker when it is sent; with credit, the worker
    /// with more idle threads took the rest of every wake-up (measured: Jain 0.92–0.98 where
    /// it was 0.99–1.00).
    fn credit(&mut self, worker: WorkerId, idle: u32) {
        let Some(outlet) = self.workers.get_mut(&worker) else { return };
        if outlet.nonblocking || self.counts_open {
            return;
        }
        let floor = self.dispatcher.max_in_flight().get();
        let bound = (idle as usize).min(MAX_CREDIT).max(floor);
        if outlet.credit != bound {
            outlet.credit = bound;
            if let Some(max) = NonZeroUsize::new(bound) {
                self.dispatcher.set_max_in_flight(worker, max);
            }
        }
    }

    /// Connections are accepted nonblocking while every worker of the handle wants them so.
    fn update_nonblocking(&mut self) {
        self.nonblocking = !self.workers.is_empty() && self.workers.values().all(|o| o.nonblocking);
    }

    /// Keeps the worker's `stalled_since` true: unset while nothing is in flight to it, set
    /// when something is, and moved to now on each answer (`progress`). One clock read per
    /// hand-off that starts a stall or answer that ends one; nothing else.
    fn track_stall(&mut self, worker: WorkerId, progress: bool) {
        let in_flight = self.dispatcher.in_flight(worker);
        if let Some(outlet) = self.workers.get_mut(&worker) {
            outlet.stalled_since = match outlet.stalled_since {
                _ if in_flight == 0 => None,
                Some(since) if !progress => Some(since),
                _ => Some(Instant::now()),
            };
        }
    }

    /// Since when the worker has had connections in flight on this handle without answering
    /// any: a worker that stops taking connections (hang detection).
    pub(crate) fn stalled_since(&self, worker: WorkerId) -> Option<Instant> {
        self.workers.get(&worker).and_then(|o| o.stalled_since)
    }

    /// Hands out pending connections while some worker can take one, then turns accepting on
    /// or off to keep the pending queue under its bound.
    fn pump(&mut self) {
        loop {
            // Every decision first, then one send per worker: the connections a worker gets in
            // this turn go in one system call.
            let mut touched: Vec<WorkerId> = Vec::new();
            while let Some(next) = self.dispatcher.next() {
                match next {
                    Next::Send { worker, conn } => {
                        if let Some(outlet) = self.workers.get_mut(&worker) {
                            outlet.push(conn);
                        }
                        if let Some(c) = self.per_worker.get_mut(&worker) {
                            c.handed += 1;
                        }
                        self.track_stall(worker, false);
                        if !touched.contains(&worker) {
                            touched.push(worker);
                        }
                    }
                    Next::Close { conn } => {
                        self.conns.remove(&conn);
                        self.accepted_at.remove(&conn);
                        self.stats.refused += 1;
                    }
                }
            }
            // A worker gone, or a message that could never reach one, puts connections back
            // in the queue: decide again.
            let mut requeued = false;
            for worker in touched {
                let unsendable = self.unsendable;
                if self.flush(worker) == Flushed::Gone {
                    // The worker is gone: once its last acks are applied, its in-flight
                    // connections go back to the queue for the others.
                    self.leave(worker);
                    requeued = true;
                }
                requeued |= self.unsendable != unsendable;
            }
            if !requeued {
                break;
            }
        }
        if self.stopped {
            for conn in self.dispatcher.take_pending() {
                self.conns.remove(&conn);
                self.accepted_at.remove(&conn);
                self.stats.closed_at_stop += 1;
            }
        }
        self.update_listener();
    }

    /// Accepting is on unless paused after exhaustion or the pending queue is at its bound.
    fn update_listener(&mut self) {
        let accepting = !self.stopped
            && self.paused_until.is_none()
            && self.dispatcher.pending_len() < MAX_PENDING_CONNECTIONS;
        // If interest cannot be changed the loop may wake needlessly (or accept past the
        // bound, one batch a wake-up); nothing is lost.
        let _ = self.listener.set_interest(accepting, false);
    }

    /// Sends the worker's backlog until its queue is full (then waits for writability, the
    /// connections staying in flight to it) or a send fails.
    fn flush(&mut self, worker: WorkerId) -> Flushed {
        let Some(outlet) = self.workers.get_mut(&worker) else { return Flushed::Open };
        let flushed = outlet.flush(&self.conns);
        self.stats.send_errors += flushed.errors;
        // A message that can never be sent must not wedge the queue: the worker is taken to
        // have refused that connection, which goes to another worker or, refused by all, is
        // closed.
        for conn in flushed.unsendable {
            let _ = self.dispatcher.ack(worker, conn, false);
            self.unsendable += 1;
        }
        flushed.state
    }
}

impl Drop for Handoff {
    /// The handle closes with its last worker: every connection still held is closed (there is
    /// no worker left to take it), as Node's `RoundRobinHandle.remove` does.
    fn drop(&mut self) {
        self.dispatcher.drain();
        self.conns.clear();
    }
}
