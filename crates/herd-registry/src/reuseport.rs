//! The `reuseport` handle: one `SO_REUSEPORT` listening socket per worker slot, bound and kept
//! by the primary, so the kernel spreads connections over the slots' queues and a replacement
//! worker takes over its predecessor's socket, queue included. A slot that no worker holds
//! and none is coming to (the primary says so) leaves the group at once, queue migrated where
//! the kernel allows: a socket nobody accepts from must not keep a share of new connections.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::time::Instant;

use herd_handle::{BindOptions, Bound, Error, Listener, Spec, bind};
use herd_sched::WorkerId;

use crate::sys::migrate;

/// One slot: its socket (`None` once vacated) and the workers holding it. A
/// slot may have two holders for a moment: during a rolling restart the replacement joins its
/// predecessor's slot before the predecessor leaves, so the slot's queue is never orphaned.
struct Slot {
    socket: Option<Listener>,
    holders: BTreeSet<WorkerId>,
    /// The accept queue's length at the last sample.
    queued: u32,
    /// Since when the queue has been non-empty without ever getting shorter: nobody accepts
    /// from it (hang detection).
    stuck_since: Option<Instant>,
    /// How many samples in a row saw it so.
    stuck_samples: u32,
}

impl Slot {
    fn new(socket: Option<Listener>) -> Slot {
        Slot { socket, holders: BTreeSet::new(), queued: 0, stuck_since: None, stuck_samples: 0 }
    }
}

/// Samples in a row that must see a queue stuck before it counts, so that sparse samples (a
/// primary whose loop was not run for a while) cannot take a busy queue for a stuck one.
const STUCK_SAMPLES: u32 = 3;

pub(crate) struct ReusePort {
    /// The address every slot binds: the first bind's real address (port 0 resolved).
    address: Spec,
    options: BindOptions,
    slots: Vec<Slot>,
}

impl ReusePort {
    /// Binds the first slot's socket.
    pub(crate) fn bind(spec: &Spec, options: &BindOptions) -> Result<(ReusePort, Spec), Error> {
        let options = BindOptions { reuse_port: true, ..options.clone() };
        let first = bind_listener(spec, &options)?;
        let address = first.local_addr().map_err(|e| Error::new("getsockname", spec, e))?;
        migrate::enable(first.as_fd());
        let slot = Slot::new(Some(first));
        Ok((ReusePort { address: address.clone(), options, slots: vec![slot] }, address))
    }

    /// The socket of the worker's slot: `slot` when the caller names one (the primary names a
    /// worker's place in the cluster, so a replacement shares its predecessor's socket), else
    /// the slot it already holds, else the lowest slot nobody holds. A slot without a socket
    /// gets a new one bound.
    pub(crate) fn socket_for(
        &mut self,
        worker: WorkerId,
        slot: Option<usize>,
    ) -> Result<&Listener, Error> {
        let held = self.slots.iter().position(|s| s.holders.contains(&worker));
        let index = slot
            .or(held)
            .or_else(|| self.slots.iter().position(|s| s.holders.is_empty()))
            .unwrap_or(self.slots.len());
        while self.slots.len() <= index {
            self.slots.push(Slot::new(None));
        }
        if self.slots[index].socket.is_none() {
            let socket = bind_listener(&self.address, &self.options)?;
            // The group may be new (every earlier socket left it): it needs the program too.
            migrate::enable(socket.as_fd());
            self.slots[index].socket = Some(socket);
        }
        if let Some(old) = held.filter(|&h| h != index) {
            self.slots[old].holders.remove(&worker);
        }
        let entry = &mut self.slots[index];
        if entry.holders.insert(worker) {
            // A new holder answers for the queue from now on.
            entry.stuck_since = None;
            entry.stuck_samples = 0;
        }
        entry
            .socket
            .as_ref()
            .ok_or_else(|| Error::new("bind", &self.address, std::io::Error::other("slot closed")))
    }

    /// The worker leaves every slot it holds. With `keep` the slot's socket stays open, with its
    /// queue, for the next worker given the slot (a respawn inherits what its predecessor left
    /// queued); the primary [vacates](ReusePort::vacate) the slot if nobody is coming. Without
    /// `keep` (the worker closed its listener and stays in its place, so nobody else will take
    /// the slot) a slot left with no holder leaves the group at once.
    pub(crate) fn remove_worker(&mut self, worker: WorkerId, keep: bool) {
        for index in 0..self.slots.len() {
            if self.slots[index].holders.remove(&worker)
                && !keep
                && self.slots[index].holders.is_empty()
            {
                self.vacate(index);
            }
        }
    }

    /// Samples every slot's accept queue (`TCP_INFO`): a queue that is non-empty and has not
    /// got shorter since the last sample keeps its `stuck_since`; any other resets it.
    pub(crate) fn sample(&mut self, now: Instant) {
        for slot in &mut self.slots {
            let queued = slot
                .socket
                .as_ref()
                .and_then(|s| crate::sys::accept_queue_len(s.as_fd()).ok())
                .unwrap_or(0);
            if queued == 0 || queued < slot.queued {
                slot.stuck_since = None;
                slot.stuck_samples = 0;
            } else {
                slot.stuck_since.get_or_insert(now);
                slot.stuck_samples = slot.stuck_samples.saturating_add(1);
            }
            slot.queued = queued;
        }
    }

    /// Connections queued now over every slot's socket (`TCP_INFO`); `None` if no slot's
    /// queue can be read (every slot vacated).
    pub(crate) fn queued(&self) -> Option<u64> {
        let lens = self
            .slots
            .iter()
            .filter_map(|s| s.socket.as_ref())
            .filter_map(|s| crate::sys::accept_queue_len(s.as_fd()).ok());
        lens.fold(None, |sum, len| Some(sum.unwrap_or(0) + u64::from(len)))
    }

    /// Since when the slot's queue has not drained, per the samples. Only a held slot counts
    /// (its holder is the one not accepting), and only since its holder joined: the tracking
    /// restarts when one does.
    pub(crate) fn stuck_since(&self, slot: usize) -> Option<Instant> {
        self.slots
            .get(slot)
            .filter(|s| s.stuck_samples >= STUCK_SAMPLES && !s.holders.is_empty())
            .and_then(|s| s.stuck_since)
    }

    /// [`vacate`](ReusePort::vacate)s the slot if no worker holds it.
    pub(crate) fn vacate_if_unheld(&mut self, slot: usize) {
        if self.slots.get(slot).is_some_and(|s| s.holders.is_empty()) {
            self.vacate(slot);
        }
    }

    /// Takes the slot's socket out of the group, now, whoever still holds a duplicate of it:
    /// the kernel stops hashing new connections to it, and those queued on it migrate to the
    /// other slots where the kernel allows it ([`migrate`]), else they are reset, rather than
    /// wait forever in a queue nobody accepts from. A worker given the slot later gets a new
    /// socket.
    pub(crate) fn vacate(&mut self, slot: usize) {
        if let Some(socket) = self.slots.get_mut(slot).and_then(|s| s.socket.take()) {
            // Fails only for a socket that is no longer listening: out of the group already.
            let _ = migrate::leave_group(socket.as_fd());
        }
    }

    /// Every slot leaves the group ([`vacate`](ReusePort::vacate)): nothing listens on the
    /// address any more, so new connection attempts are refused, and what was queued is reset
    /// (there is no socket left to migrate it to).
    pub(crate) fn vacate_all(&mut self) {
        for slot in 0..self.slots.len() {
            self.vacate(slot);
        }
    }
}

impl Drop for ReusePort {
    /// The handle closes: every slot leaves the group, even if a worker still holds a
    /// duplicate of its socket.
    fn drop(&mut self) {
        self.vacate_all();
    }
}

fn bind_listener(spec: &Spec, options: &BindOptions) -> Result<Listener, Error> {
    match bind(spec, options)? {
        Bound::Listener(listener) => Ok(listener),
        Bound::Udp(_) => Err(Error::new(
            "bind",
            spec,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "reuseport slots are stream sockets",
            ),
        )),
    }
}
