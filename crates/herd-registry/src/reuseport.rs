//! The `reuseport` handle: one `SO_REUSEPORT` listening socket per worker slot, bound and kept
//! by the primary, so the kernel spreads connections over the slots' queues and a replacement
//! worker takes over its predecessor's socket, queue included. A slot that no worker holds
//! and none is coming to (the primary says so) leaves the group at once, queue migrated where
//! the kernel allows: a socket nobody accepts from must not keep a share of new connections.

use std::collections::BTreeSet;
use std::os::fd::AsFd;

use herd_handle::{BindOptions, Bound, Error, Listener, Spec, bind};
use herd_sched::WorkerId;

use crate::sys::migrate;

/// One slot: its socket (`None` once vacated) and the workers holding it. A
/// slot may have two holders for a moment: during a rolling restart the replacement joins its
/// predecessor's slot before the predecessor leaves, so the slot's queue is never orphaned.
struct Slot {
    socket: Option<Listener>,
    holders: BTreeSet<WorkerId>,
}

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
        let slot = Slot { socket: Some(first), holders: BTreeSet::new() };
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
            self.slots.push(Slot { socket: None, holders: BTreeSet::new() });
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
        entry.holders.insert(worker);
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
}

impl Drop for ReusePort {
    /// The handle closes: every slot leaves the group, even if a worker still holds a
    /// duplicate of its socket.
    fn drop(&mut self) {
        for slot in 0..self.slots.len() {
            self.vacate(slot);
        }
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
