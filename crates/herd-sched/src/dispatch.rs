//! The primary's hand-off state for one listening handle under `rr` or `least-conn`.

use std::collections::VecDeque;
use std::num::NonZeroUsize;

/// Identifies a worker process. Opaque to this crate; the registry chooses the values.
pub type WorkerId = u32;

/// Identifies an accepted connection. Opaque to this crate; the registry maps it to the fd
/// it holds. Each live connection of a [`Dispatcher`] must have a distinct id.
pub type ConnId = u64;

/// How a [`Dispatcher`] chooses among the workers that may take a connection.
///
/// Obtain it from a hand-off [`Policy`](crate::Policy) with [`Policy::pick`](crate::Policy::pick).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pick {
    /// The first eligible worker in rotation order; the chosen worker moves to the back of
    /// the rotation. With one hand-off at a time and prompt acknowledgements this is a strict
    /// rotation, like Node's queue of free workers.
    RoundRobin,
    /// The eligible worker with the fewest open plus in-flight connections; ties go to the
    /// worker picked least recently (rotation order).
    LeastConnections,
}

/// What the registry must do next, as returned by [`Dispatcher::next`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Next {
    /// Send the connection's fd to the worker, then report the worker's answer with
    /// [`Dispatcher::ack`]. If the send fails because the worker is gone, remove the worker
    /// with [`Dispatcher::remove_worker`] (after applying what it sent, see there), which puts
    /// the connection back in the queue.
    Send {
        /// The worker that gets the connection.
        worker: WorkerId,
        /// The connection to hand over.
        conn: ConnId,
    },
    /// Every current worker has refused the connection: close it in the primary. The
    /// dispatcher has already forgotten it.
    Close {
        /// The connection to close.
        conn: ConnId,
    },
}

impl Next {
    /// The connection this step is about.
    pub const fn conn(self) -> ConnId {
        match self {
            Next::Send { conn, .. } | Next::Close { conn } => conn,
        }
    }
}

/// An acknowledgement that does not match a connection in flight. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// The worker is not (or no longer) registered with the dispatcher, for example an ack
    /// that arrives after [`Dispatcher::remove_worker`].
    #[error("ack from worker {worker} for connection {conn}: worker is not registered")]
    UnknownWorker {
        /// The worker that sent the ack.
        worker: WorkerId,
        /// The connection it acknowledged.
        conn: ConnId,
    },
    /// The worker is registered but has no unacknowledged hand-off of that connection: a
    /// double ack, an ack from the wrong worker, or an unknown connection.
    #[error(
        "ack from worker {worker} for connection {conn}: connection is not in flight to that worker"
    )]
    NotInFlight {
        /// The worker that sent the ack.
        worker: WorkerId,
        /// The connection it acknowledged.
        conn: ConnId,
    },
}

/// A connection waiting in the primary, with the current workers that refused it.
#[derive(Debug)]
struct Entry {
    conn: ConnId,
    /// Distinct ids of current workers that refused this connection. Empty (and so not
    /// allocated) for the common case of a connection nobody refused.
    refused: Vec<WorkerId>,
}

#[derive(Debug)]
struct Worker {
    id: WorkerId,
    /// Unacknowledged hand-offs, oldest first.
    in_flight: Vec<Entry>,
    /// Accepted connections not yet reported closed.
    open: usize,
    /// Position in the rotation: lower goes first. Set from the dispatcher's counter when
    /// the worker joins and each time it is picked, so picking moves it to the back.
    turn: u64,
    /// Retired: gets no new connection, but its in-flight ones still wait for its acks.
    retired: bool,
    /// Deferred a connection it could not take for now: gets none until
    /// [`Dispatcher::resume`].
    held_off: bool,
    /// Its own bound on unacknowledged hand-offs ([`Dispatcher::set_max_in_flight`]), if
    /// not the dispatcher's.
    cap: Option<NonZeroUsize>,
}

impl Worker {
    /// Its bound on unacknowledged hand-offs, given the dispatcher's.
    fn cap(&self, default: NonZeroUsize) -> usize {
        self.cap.unwrap_or(default).get()
    }

    fn load(&self) -> usize {
        self.open.saturating_add(self.in_flight.len())
    }
}

/// The hand-off state of one listening handle under `rr` or `least-conn`.
///
/// The registry owns the sockets and fds; it tells the dispatcher about workers
/// ([`add_worker`](Self::add_worker), [`remove_worker`](Self::remove_worker)), accepted
/// connections ([`push`](Self::push)), worker answers ([`ack`](Self::ack)) and closes
/// ([`closed`](Self::closed)), and after each of these it drains the decisions with
/// `while let Some(n) = d.next()`.
///
/// Every connection the dispatcher knows is in exactly one place: *pending* (waiting in the
/// primary, including connections about to be returned as [`Next::Close`]) or *in flight*
/// to one worker (sent, not yet acknowledged). An accepted connection leaves the dispatcher
/// and only counts towards its worker's [`open`](Self::open) total.
///
/// # Ordering, head-of-line and refusals
///
/// * Pending connections form a FIFO: [`push`](Self::push) appends; a refused connection
///   and the in-flight connections of a removed worker go back to the front (they are the
///   oldest).
/// * [`next`](Self::next) sends the **oldest pending connection that some worker may take
///   now**. A worker may take a connection if it has fewer than `max_in_flight`
///   unacknowledged hand-offs and has not refused that connection. Connections nobody
///   refused can go to any worker with room, so head-of-line skipping only ever passes over
///   refused connections, and a refused connection never blocks a later one: a worker with
///   room that refused the head still gets the connections behind it. The skipped
///   connection waits for a worker that has not refused it to have room, or for that
///   worker to leave.
/// * A connection refused by **every** current worker (and there is at least one) is
///   returned once as [`Next::Close`], before any [`Next::Send`]; it never bounces between
///   the primary and a refusing worker (Node's endless ping-pong). If a worker joins before
///   that `Close` is taken, the connection becomes pending again, since the new worker has
///   not refused it.
/// * Refusals are remembered only while the refusing worker is registered.
/// * A connection a worker [defers](Self::defer) (it cannot take it *for now*) goes back to
///   the front with no refusal recorded, and that worker gets nothing until
///   [resumed](Self::resume): a transient shortage never closes a connection.
/// * Exactly once needs one rule of the registry: a worker is removed only after every
///   answer it already sent is applied (see [`remove_worker`](Self::remove_worker)).
/// * The dispatcher has no clock: a worker that never acknowledges keeps up to
///   `max_in_flight` connections until the registry removes it. Other workers keep
///   receiving connections meanwhile.
/// * With no workers, connections stay pending. When the handle itself closes (Node does
///   this when its last worker leaves), call [`drain`](Self::drain) and close what it returns.
///
/// # Cost
///
/// [`next`](Self::next) is O(workers) and does not allocate, plus O(workers) for each
/// refused connection it has to skip. [`ack`](Self::ack) is O(workers + max_in_flight);
/// [`remove_worker`](Self::remove_worker) is O(connections).
///
/// # Example
///
/// ```
/// use std::num::NonZeroUsize;
/// use herd_sched::{Dispatcher, Next, Pick};
///
/// let mut d = Dispatcher::new(Pick::LeastConnections, NonZeroUsize::MIN);
/// d.add_worker(1);
/// d.add_worker(2);
/// d.push(10);
/// assert_eq!(d.next(), Some(Next::Send { worker: 1, conn: 10 }));
/// d.ack(1, 10, true)?; // worker 1 now has one open connection
/// d.push(11);
/// assert_eq!(d.next(), Some(Next::Send { worker: 2, conn: 11 }));
/// d.ack(2, 11, false)?; // worker 2 refuses: it goes to worker 1
/// assert_eq!(d.next(), Some(Next::Send { worker: 1, conn: 11 }));
/// d.ack(1, 11, false)?; // refused by everyone: close it
/// assert_eq!(d.next(), Some(Next::Close { conn: 11 }));
/// assert_eq!(d.next(), None);
/// # Ok::<(), herd_sched::AckError>(())
/// ```
#[derive(Debug)]
pub struct Dispatcher {
    pick: Pick,
    max_in_flight: NonZeroUsize,
    /// Registered workers, in join order.
    workers: Vec<Worker>,
    /// Connections waiting for a worker, oldest first. None of them is refused by every
    /// current worker.
    pending: VecDeque<Entry>,
    /// Connections refused by every current worker (there is at least one), waiting to be
    /// returned as [`Next::Close`].
    closing: VecDeque<Entry>,
    /// Source of [`Worker::turn`] values.
    turns: u64,
}

impl Dispatcher {
    /// Creates an empty dispatcher.
    ///
    /// `max_in_flight` bounds the unacknowledged hand-offs per worker. `1` reproduces Node:
    /// a worker gets its next connection only after acknowledging the previous one. Larger
    /// values let a slow-to-ack worker keep receiving while the ack travels back.
    pub fn new(pick: Pick, max_in_flight: NonZeroUsize) -> Self {
        Dispatcher {
            pick,
            max_in_flight,
            workers: Vec::new(),
            pending: VecDeque::new(),
            closing: VecDeque::new(),
            turns: 0,
        }
    }

    /// The rule this dispatcher picks workers by.
    pub fn pick(&self) -> Pick {
        self.pick
    }

    /// The bound on unacknowledged hand-offs per worker.
    pub fn max_in_flight(&self) -> NonZeroUsize {
        self.max_in_flight
    }

    /// Registers a worker at the back of the rotation, with no open connections. Returns
    /// `false`, changing nothing, if it is already registered.
    ///
    /// Connections waiting to be closed because every worker refused them become pending
    /// again, since the new worker has not refused them.
    pub fn add_worker(&mut self, w: WorkerId) -> bool {
        if self.contains_worker(w) {
            return false;
        }
        let turn = self.next_turn();
        self.workers.push(Worker {
            id: w,
            in_flight: Vec::with_capacity(self.max_in_flight.get().min(16)),
            open: 0,
            turn,
            retired: false,
            held_off: false,
            cap: None,
        });
        while let Some(entry) = self.closing.pop_back() {
            self.pending.push_front(entry);
        }
        true
    }

    /// Retires a worker: it gets no new connection from now on, while its unacknowledged
    /// hand-offs still wait for its acks (an ack in transit is honoured, so a connection is
    /// never served twice). Remove it with [`remove_worker`](Self::remove_worker) once its
    /// channel closes. Returns `false` if it is not registered.
    pub fn retire(&mut self, w: WorkerId) -> bool {
        let Some(index) = self.index_of(w) else {
            return false;
        };
        self.workers[index].retired = true;
        self.reopen_if_none_active();
        true
    }

    /// With no worker left that takes connections, nobody is left to have refused anything:
    /// the connections waiting to be closed wait for a worker again (a rolling restart or a
    /// respawn brings one) instead of being closed.
    fn reopen_if_none_active(&mut self) {
        if self.workers.iter().all(|w| w.retired) {
            while let Some(entry) = self.closing.pop_back() {
                self.pending.push_front(entry);
            }
        }
    }

    /// Unregisters a worker (it exited, its channel closed, or it stopped listening).
    /// Returns `false`, changing nothing, if it was not registered.
    ///
    /// **Apply what the worker already sent first.** Every answer the worker sent before it
    /// left ([`ack`](Self::ack), [`closed`](Self::closed)) must be applied before this call,
    /// whatever the reason for leaving: read its channel until it is empty or ends (and read
    /// past a reset, which Linux reports *before* the messages still queued). An accepting
    /// ack applied later is an [`AckError::UnknownWorker`], while its connection has already
    /// gone back to the queue and on to another worker: served twice.
    ///
    /// Its unacknowledged connections go back to the front of the pending queue in the
    /// order they were handed to it, its open-connection count is forgotten, and so are its
    /// refusals. A pending connection that every remaining worker has refused will be
    /// returned as [`Next::Close`]. A late [`ack`](Self::ack) from the removed worker is an
    /// [`AckError::UnknownWorker`].
    pub fn remove_worker(&mut self, w: WorkerId) -> bool {
        let Some(index) = self.index_of(w) else {
            return false;
        };
        let worker = self.workers.remove(index);
        for entry in worker.in_flight.into_iter().rev() {
            self.pending.push_front(entry);
        }
        let in_flight = self.workers.iter_mut().flat_map(|w| w.in_flight.iter_mut());
        for entry in self.pending.iter_mut().chain(self.closing.iter_mut()).chain(in_flight) {
            entry.refused.retain(|&r| r != w);
        }
        if self.workers.iter().all(|w| w.retired) {
            self.reopen_if_none_active();
        } else {
            // Fewer workers can only turn more connections into refused-by-all.
            let workers = &self.workers;
            let closing = &mut self.closing;
            self.pending.retain_mut(|entry| {
                if refused_by_all(workers, &entry.refused) {
                    closing.push_back(Entry {
                        conn: entry.conn,
                        refused: std::mem::take(&mut entry.refused),
                    });
                    false
                } else {
                    true
                }
            });
        }
        true
    }

    /// Queues a newly accepted connection at the back of the pending FIFO.
    pub fn push(&mut self, c: ConnId) {
        self.pending.push_back(Entry { conn: c, refused: Vec::new() });
    }

    /// Decides what to do with one connection, or `None` if nothing can be done now.
    ///
    /// First returns [`Next::Close`] for any connection every current worker has refused.
    /// Otherwise takes the oldest pending connection that an eligible worker exists for
    /// (see the [type docs](Dispatcher#ordering-head-of-line-and-refusals)), records it as
    /// in flight to the chosen worker and returns [`Next::Send`].
    ///
    /// `None` means the queue is empty or no worker may take any pending connection now;
    /// call `next` again after an [`ack`](Self::ack), [`add_worker`](Self::add_worker),
    /// [`remove_worker`](Self::remove_worker) or [`push`](Self::push).
    #[expect(
        clippy::should_implement_trait,
        reason = "not an iterator: `None` means nothing to do yet, not the end"
    )]
    pub fn next(&mut self) -> Option<Next> {
        if let Some(entry) = self.closing.pop_front() {
            return Some(Next::Close { conn: entry.conn });
        }
        if self.pending.is_empty() {
            return None;
        }
        let cap = self.max_in_flight;
        if self.workers.iter().all(|w| w.retired || w.held_off || w.in_flight.len() >= w.cap(cap)) {
            return None;
        }
        // Some worker has room, so the first connection nobody refused ends the scan.
        let (pos, index) = self
            .pending
            .iter()
            .enumerate()
            .find_map(|(pos, entry)| self.choose(&entry.refused).map(|i| (pos, i)))?;
        let entry = self.pending.remove(pos)?;
        let conn = entry.conn;
        let turn = self.next_turn();
        let worker = &mut self.workers[index];
        worker.turn = turn;
        worker.in_flight.push(entry);
        Some(Next::Send { worker: worker.id, conn })
    }

    /// Records a worker's answer to a [`Next::Send`].
    ///
    /// `accepted == true`: the connection is the worker's now (the registry closes its copy
    /// of the fd) and counts as open for [`Pick::LeastConnections`] until
    /// [`closed`](Self::closed). `accepted == false`: the worker refused it; it goes back to
    /// the front of the pending queue and will not be offered to that worker again, or, if
    /// every current worker has now refused it, the next [`next`](Self::next) returns
    /// [`Next::Close`] for it.
    ///
    /// # Errors
    ///
    /// [`AckError`] if the connection is not in flight to that worker; nothing changes.
    pub fn ack(&mut self, w: WorkerId, c: ConnId, accepted: bool) -> Result<(), AckError> {
        let (index, mut entry) = self.take_in_flight(w, c)?;
        let worker = &mut self.workers[index];
        if accepted {
            worker.open = worker.open.saturating_add(1);
            return Ok(());
        }
        if !entry.refused.contains(&w) {
            entry.refused.push(w);
        }
        if refused_by_all(&self.workers, &entry.refused) {
            self.closing.push_back(entry);
        } else {
            self.pending.push_front(entry);
        }
        Ok(())
    }

    /// Records that the worker could not take a connection *for now* (its descriptor was lost
    /// on the way in: the worker is at its descriptor limit), unlike a refusal: the connection
    /// goes back to the front of the pending queue with no refusal recorded, so it is never
    /// closed for it, and the worker gets no connection until [`resume`](Self::resume) (the
    /// registry resumes it after a pause). While every worker is held off, connections wait.
    ///
    /// # Errors
    ///
    /// [`AckError`] if the connection is not in flight to that worker; nothing changes.
    pub fn defer(&mut self, w: WorkerId, c: ConnId) -> Result<(), AckError> {
        let (index, entry) = self.take_in_flight(w, c)?;
        self.workers[index].held_off = true;
        self.pending.push_front(entry);
        Ok(())
    }

    /// Gives one worker its own bound on unacknowledged hand-offs instead of the dispatcher's
    /// (a worker that reads every hand-off at once, as an event loop does, can be sent
    /// several together without any waiting behind a busy one). Returns `false` if it is not
    /// registered. Connections already in flight beyond a lower bound stay in flight.
    pub fn set_max_in_flight(&mut self, w: WorkerId, max: NonZeroUsize) -> bool {
        let Some(index) = self.index_of(w) else {
            return false;
        };
        self.workers[index].cap = Some(max);
        true
    }

    /// Lets a worker held off by [`defer`](Self::defer) take connections again. Returns
    /// `false` if it is not registered or was not held off.
    pub fn resume(&mut self, w: WorkerId) -> bool {
        let Some(index) = self.index_of(w) else {
            return false;
        };
        std::mem::replace(&mut self.workers[index].held_off, false)
    }

    /// Whether the worker is held off by [`defer`](Self::defer) (`false` if unregistered).
    pub fn is_held_off(&self, w: WorkerId) -> bool {
        self.worker(w).is_some_and(|w| w.held_off)
    }

    /// Records that one of the worker's accepted connections closed: its open count goes
    /// down by one (never below zero). Ignored for an unregistered worker.
    pub fn closed(&mut self, w: WorkerId) {
        if let Some(index) = self.index_of(w) {
            let worker = &mut self.workers[index];
            worker.open = worker.open.saturating_sub(1);
        }
    }

    /// Removes and returns every pending and in-flight connection, each exactly once, for
    /// the registry to close when the handle itself closes.
    ///
    /// Order: connections awaiting [`Next::Close`], then pending oldest first, then each
    /// worker's in-flight connections in join order. Workers stay registered with their open
    /// counts; a later ack for a drained connection is an [`AckError`].
    pub fn drain(&mut self) -> Vec<ConnId> {
        let mut out = Vec::with_capacity(self.pending_len() + self.in_flight_total());
        out.extend(self.closing.drain(..).map(|e| e.conn));
        out.extend(self.pending.drain(..).map(|e| e.conn));
        for worker in &mut self.workers {
            out.extend(worker.in_flight.drain(..).map(|e| e.conn));
        }
        out
    }

    /// Removes and returns every connection waiting in the primary (pending, oldest first,
    /// after those about to be returned as [`Next::Close`]), leaving the in-flight ones to
    /// their workers' acks: for a handle that stops taking connections while its workers still
    /// answer for those they were sent (a graceful stop). A connection refused later comes
    /// back as pending again.
    pub fn take_pending(&mut self) -> Vec<ConnId> {
        let mut out = Vec::with_capacity(self.pending_len());
        out.extend(self.closing.drain(..).map(|e| e.conn));
        out.extend(self.pending.drain(..).map(|e| e.conn));
        out
    }

    /// Connections waiting in the primary, including those about to be returned as
    /// [`Next::Close`].
    pub fn pending_len(&self) -> usize {
        self.pending.len() + self.closing.len()
    }

    /// Unacknowledged hand-offs to the worker (0 for an unregistered worker).
    pub fn in_flight(&self, w: WorkerId) -> usize {
        self.worker(w).map_or(0, |w| w.in_flight.len())
    }

    /// Unacknowledged hand-offs to all workers.
    pub fn in_flight_total(&self) -> usize {
        self.workers.iter().map(|w| w.in_flight.len()).sum()
    }

    /// Accepted connections of the worker not yet reported [`closed`](Self::closed) (0 for
    /// an unregistered worker).
    pub fn open(&self, w: WorkerId) -> usize {
        self.worker(w).map_or(0, |w| w.open)
    }

    /// The registered workers, in the order they joined.
    pub fn workers(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.workers.iter().map(|w| w.id)
    }

    /// Whether the worker is registered.
    pub fn contains_worker(&self, w: WorkerId) -> bool {
        self.index_of(w).is_some()
    }

    /// Whether no worker is registered (connections may still be pending).
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Takes connection `c` off worker `w`'s in-flight list: the worker's index and the entry,
    /// or the [`AckError`] saying why not (nothing changes then).
    fn take_in_flight(&mut self, w: WorkerId, c: ConnId) -> Result<(usize, Entry), AckError> {
        let index = self.index_of(w).ok_or(AckError::UnknownWorker { worker: w, conn: c })?;
        let in_flight = &mut self.workers[index].in_flight;
        let pos = in_flight
            .iter()
            .position(|e| e.conn == c)
            .ok_or(AckError::NotInFlight { worker: w, conn: c })?;
        Ok((index, in_flight.remove(pos)))
    }

    fn index_of(&self, w: WorkerId) -> Option<usize> {
        self.workers.iter().position(|x| x.id == w)
    }

    fn worker(&self, w: WorkerId) -> Option<&Worker> {
        self.workers.iter().find(|x| x.id == w)
    }

    fn next_turn(&mut self) -> u64 {
        self.turns += 1;
        self.turns
    }

    /// The index of the worker to send a connection with these refusals to, if any may
    /// take it now.
    fn choose(&self, refused: &[WorkerId]) -> Option<usize> {
        let cap = self.max_in_flight;
        let mut best: Option<(usize, (usize, u64))> = None;
        for (i, w) in self.workers.iter().enumerate() {
            if w.retired || w.held_off || w.in_flight.len() >= w.cap(cap) || refused.contains(&w.id)
            {
                continue;
            }
            let key = match self.pick {
                Pick::RoundRobin => (0, w.turn),
                Pick::LeastConnections => (w.load(), w.turn),
            };
            if best.is_none_or(|(_, k)| key < k) {
                best = Some((i, key));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// Whether every worker that still takes connections (and there is at least one) is in
/// `refused`. Retired workers do not count: with only retired workers a connection waits for
/// a new one (a rolling restart brings it) instead of being closed.
fn refused_by_all(workers: &[Worker], refused: &[WorkerId]) -> bool {
    let mut active = workers.iter().filter(|w| !w.retired).peekable();
    active.peek().is_some() && active.all(|w| refused.contains(&w.id))
}
