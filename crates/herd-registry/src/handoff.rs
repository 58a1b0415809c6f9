//! The hand-off handle (`rr`, `least-conn`): the primary accepts, and hands each connection's
//! descriptor to one worker over that worker's hand-off channel.
//!
//! The primary keeps its copy of every connection until a worker acknowledges taking it. A
//! worker whose channel closes (it closed its listener, or died) or that cannot be written to
//! gives its unacknowledged connections back; they go to the other workers, oldest first. A
//! connection every worker refuses is closed and counted, never bounced forever.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sys::Poller;
use herd_handle::Listener;
use herd_ipc::Channel;
use herd_sched::{ConnId, Dispatcher, Next, Pick, WorkerId};

use crate::sys::{Watched, is_resource_exhaustion};
use crate::wire::{FromWorker, ToWorker};

/// At most this many accepts per wake-up, so one busy listener cannot starve the other
/// sources of the event loop (level-triggered polling wakes it again at once).
const ACCEPT_BATCH: usize = 64;

/// How long accepting pauses after `EMFILE` and the like. Connections wait in the kernel's
/// backlog meanwhile; retrying at once would spin the primary at 100% CPU.
const EXHAUSTION_PAUSE: Duration = Duration::from_millis(50);

/// Counters of one hand-off handle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandoffStats {
    /// Connections accepted by the primary.
    pub accepted: u64,
    /// Connections a worker acknowledged taking.
    pub delivered: u64,
    /// Connections closed because every worker refused them.
    pub refused: u64,
    /// Times accepting paused because descriptors or memory ran out.
    pub exhausted: u64,
}

/// A worker's hand-off channel and the connections assigned to it that its full queue has not
/// taken yet (bounded by the dispatcher's in-flight limit), sent when it becomes writable.
struct Outlet {
    channel: Watched<Channel>,
    backlog: VecDeque<ConnId>,
}

pub(crate) struct Handoff {
    listener: Watched<Listener>,
    dispatcher: Dispatcher,
    /// The primary's copy of every pending or in-flight connection.
    conns: HashMap<ConnId, OwnedFd>,
    workers: HashMap<WorkerId, Outlet>,
    paused_until: Option<Instant>,
    stats: HandoffStats,
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
            workers: HashMap::new(),
            paused_until: None,
            stats: HandoffStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> HandoffStats {
        self.stats
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
        let (ours, theirs) = Channel::pair()?;
        let channel = Watched::new(poller, ours, token)?;
        self.workers.insert(worker, Outlet { channel, backlog: VecDeque::new() });
        self.dispatcher.add_worker(worker);
        self.pump();
        Ok(theirs)
    }

    /// Removes a worker; its unacknowledged connections go to the others.
    pub(crate) fn remove_worker(&mut self, worker: WorkerId) {
        self.workers.remove(&worker);
        self.dispatcher.remove_worker(worker);
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

    /// The listener is readable: accept a batch, then hand out what can be handed out.
    pub(crate) fn on_listener_ready(&mut self, next_conn: &mut ConnId) {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.get().try_accept() {
                Ok((stream, _peer)) => {
                    let id = *next_conn;
                    *next_conn += 1;
                    self.conns.insert(id, OwnedFd::from(stream));
                    self.dispatcher.push(id);
                    self.stats.accepted += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                Err(e) if is_resource_exhaustion(&e) => {
                    self.stats.exhausted += 1;
                    self.paused_until = Some(Instant::now() + EXHAUSTION_PAUSE);
                    // If the pause cannot be set the loop spins, but nothing is lost.
                    let _ = self.listener.set_interest(false, false);
                    break;
                }
                // Anything else concerns one connection that is gone already; keep accepting.
                Err(_) => continue,
            }
        }
        self.pump();
    }

    /// When accepting resumes after an exhaustion pause, if paused.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.paused_until
    }

    pub(crate) fn on_timer(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
            let _ = self.listener.set_interest(true, false);
        }
    }

    /// A worker's hand-off channel is ready: send what waited for room, read its acks and
    /// close reports.
    pub(crate) fn on_worker_ready(&mut self, worker: WorkerId) {
        let mut gone = !self.flush(worker);
        if let Some(outlet) = self.workers.get(&worker).filter(|_| !gone) {
            loop {
                match outlet.channel.get().try_recv_value::<FromWorker>() {
                    Ok((FromWorker::Ack { conn, accepted }, _)) => {
                        // An ack that matches nothing in flight is ignored: it changes nothing.
                        if self.dispatcher.ack(worker, conn, accepted).is_ok() && accepted {
                            // The worker owns it now: close the primary's copy.
                            self.conns.remove(&conn);
                            self.stats.delivered += 1;
                        }
                    }
                    Ok((FromWorker::Closed { count }, _)) => {
                        // Never more than the worker has open: a bogus count cannot stall the
                        // loop.
                        let count = (count as usize).min(self.dispatcher.open(worker));
                        for _ in 0..count {
                            self.dispatcher.closed(worker);
                        }
                    }
                    Err(e) if e.is_would_block() => break,
                    // End of stream (the worker closed its listener or died) or a message from
                    // another protocol: either way this worker is done with this handle.
                    Err(_) => {
                        gone = true;
                        break;
                    }
                }
            }
        }
        if gone {
            self.remove_worker(worker);
        } else {
            self.pump();
        }
    }

    /// Hands out pending connections while some worker can take one.
    fn pump(&mut self) {
        while let Some(next) = self.dispatcher.next() {
            match next {
                Next::Send { worker, conn } => {
                    if let Some(outlet) = self.workers.get_mut(&worker) {
                        outlet.backlog.push_back(conn);
                    }
                    if !self.flush(worker) {
                        // The worker is gone: its in-flight connections, this one included,
                        // go back to the queue for the others.
                        self.workers.remove(&worker);
                        self.dispatcher.remove_worker(worker);
                    }
                }
                Next::Close { conn } => {
                    self.conns.remove(&conn);
                    self.stats.refused += 1;
                }
            }
        }
    }

    /// Sends the worker's backlog until its queue is full (then waits for writability, the
    /// connections staying in flight to it). `false` when the worker's channel is gone.
    fn flush(&mut self, worker: WorkerId) -> bool {
        let Some(outlet) = self.workers.get_mut(&worker) else { return true };
        while let Some(&conn) = outlet.backlog.front() {
            let Some(fd) = self.conns.get(&conn) else {
                outlet.backlog.pop_front();
                continue;
            };
            match outlet.channel.get().try_send_value(&ToWorker::NewConn { conn }, &[fd.as_fd()]) {
                Ok(()) => {
                    outlet.backlog.pop_front();
                }
                Err(e) if e.is_would_block() => break,
                Err(_) => return false,
            }
        }
        // If interest cannot be changed the loop may wake needlessly; nothing is lost.
        let _ = outlet.channel.set_interest(true, !outlet.backlog.is_empty());
        true
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
