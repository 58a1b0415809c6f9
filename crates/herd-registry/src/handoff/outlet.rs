//! One worker's hand-off channel as the primary sees it: the connections assigned to the
//! worker that its queue has not taken yet, and what a failed send means.
//!
//! Only a closed channel means the worker is gone. A full queue waits for writability; a
//! transient failure (`ENOBUFS`, `ENOMEM`, `ETOOMANYREFS`) waits [`RETRY_PAUSE`] and tries
//! again; a message that can never be sent is handed back as unsendable, so one bad message
//! cannot wedge the queue behind it.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use herd_ipc::Channel;
use herd_sched::ConnId;

use super::Held;
use crate::sys::{Watched, is_transient_send_error};
use crate::wire::ToWorker;

/// How long a worker's queued connections wait after a transient send failure before the
/// next try: long enough not to spin while memory is short, short next to a request.
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// After this many transient failures in a row (about a second of retries) the connection at
/// the head of the queue counts as unsendable to this worker, so a failure that never clears
/// cannot hold it (and those behind it) forever.
const MAX_RETRIES: u32 = 100;

/// The most connections one `sendmmsg` carries (herd-ipc's batch limit).
const MAX_BATCH: usize = 64;

/// Whether the worker's channel is still there after a [`flush`](Outlet::flush).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flushed {
    /// Still open (sent everything, or waits for room or for a retry).
    Open,
    /// The worker's end is closed: the worker is gone.
    Gone,
}

/// What a [`flush`](Outlet::flush) did besides sending.
pub(super) struct Report {
    pub(super) state: Flushed,
    /// Sends that failed other than with a full queue or a closed channel.
    pub(super) errors: u64,
    /// Connections taken off the queue because their message can never reach this worker.
    pub(super) unsendable: Vec<ConnId>,
}

pub(super) struct Outlet {
    channel: Watched<Channel>,
    /// Room for a batch of the worker's answers, kept between reads.
    pub(super) scratch: Vec<u8>,
    /// Connections in flight to this worker (per the dispatcher) not sent yet, oldest first.
    /// Bounded by the dispatcher's in-flight limit.
    backlog: VecDeque<ConnId>,
    /// Set after a transient send failure: nothing is sent before then.
    retry_at: Option<Instant>,
    /// Transient failures in a row of the connection at the head of the backlog.
    failures: u32,
    /// Since when this worker has had connections in flight without acknowledging any (hang
    /// detection); `None` while nothing is in flight to it.
    pub(super) stalled_since: Option<Instant>,
    /// The worker takes connections on an event loop, nonblocking ([`FromWorker::EventLoop`]).
    ///
    /// [`FromWorker::EventLoop`]: crate::wire::FromWorker::EventLoop
    pub(super) nonblocking: bool,
    /// The bound on hand-offs in flight its last credit set (see `Handoff::credit`); 0 until
    /// the first one, the dispatcher's bound applying meanwhile.
    pub(super) credit: usize,
    /// Until when the dispatcher holds this worker off after it deferred a connection.
    pub(super) held_off_until: Option<Instant>,
    /// Test-only: errors the next sends fail with instead of reaching the kernel, since a
    /// transient `sendmsg` failure cannot be produced on demand.
    #[cfg(test)]
    pub(super) faults: VecDeque<herd_ipc::Error>,
}

impl Outlet {
    pub(super) fn new(channel: Watched<Channel>) -> Outlet {
        Outlet {
            channel,
            scratch: Vec::new(),
            backlog: VecDeque::new(),
            retry_at: None,
            failures: 0,
            stalled_since: None,
            held_off_until: None,
            nonblocking: false,
            credit: 0,
            #[cfg(test)]
            faults: VecDeque::new(),
        }
    }

    pub(super) fn channel(&self) -> &Channel {
        self.channel.get()
    }

    /// Queues a connection the dispatcher assigned to this worker.
    pub(super) fn push(&mut self, conn: ConnId) {
        self.backlog.push_back(conn);
    }

    /// When sending resumes after a transient failure, if it is paused.
    pub(super) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Ends the pause after a transient failure; the next flush tries again.
    pub(super) fn resume(&mut self) {
        self.retry_at = None;
    }

    /// Sends the backlog until the worker's queue is full, a send fails, or it is empty: as
    /// many connections per system call as are waiting (`sendmmsg(2)`, one message per
    /// connection, so the worker's listener stays readable exactly while it has one to take).
    /// `conns` holds the primary's copy of each connection; one no longer there (closed
    /// meanwhile) is skipped.
    pub(super) fn flush(&mut self, conns: &HashMap<ConnId, Held>) -> Report {
        let mut report = Report { state: Flushed::Open, errors: 0, unsendable: Vec::new() };
        while self.retry_at.is_none() {
            self.backlog.retain(|conn| conns.contains_key(conn));
            if self.backlog.is_empty() {
                break;
            }
            let batch: Vec<(ConnId, &Held)> = self
                .backlog
                .iter()
                .take(MAX_BATCH)
                .filter_map(|conn| conns.get(conn).map(|held| (*conn, held)))
                .collect();
            match self.send(&batch) {
                Ok(sent) => {
                    self.backlog.drain(..sent);
                    self.failures = 0;
                }
                Err(e) if e.is_would_block() => break,
                Err(herd_ipc::Error::Closed) => {
                    report.state = Flushed::Gone;
                    return report;
                }
                Err(e) => {
                    let conn = batch[0].0;
                    report.errors += 1;
                    self.failures += 1;
                    if is_transient_send_error(&e) && self.failures < MAX_RETRIES {
                        self.retry_at = Some(Instant::now() + RETRY_PAUSE);
                    } else {
                        self.backlog.pop_front();
                        self.failures = 0;
                        report.unsendable.push(conn);
                    }
                }
            }
        }
        // Writable interest only while something waits for room (not for a retry, which the
        // timer brings). If interest cannot be changed the loop may wake needlessly; nothing
        // is lost.
        let waiting = !self.backlog.is_empty() && self.retry_at.is_none();
        let _ = self.channel.set_interest(true, waiting);
        report
    }

    /// Sends the head of the backlog, as many as fit: how many went (at least one), or the
    /// error of the first.
    fn send(&mut self, batch: &[(ConnId, &Held)]) -> Result<usize, herd_ipc::Error> {
        #[cfg(test)]
        if let Some(fault) = self.faults.pop_front() {
            return Err(fault);
        }
        let fds: Vec<[BorrowedFd<'_>; 1]> =
            batch.iter().map(|(_, held)| [held.fd.as_fd()]).collect();
        let messages: Vec<(ToWorker, &[BorrowedFd<'_>])> = batch
            .iter()
            .zip(&fds)
            .map(|(&(conn, held), fd)| {
                let message = ToWorker::NewConn {
                    conn,
                    tcp_peer: held.tcp_peer,
                    nonblocking: held.nonblocking,
                };
                (message, &fd[..])
            })
            .collect();
        self.channel.get().try_send_values(&messages)
    }
}
