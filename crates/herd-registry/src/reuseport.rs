//! The `reuseport` handle: one `SO_REUSEPORT` listening socket per worker slot, bound and kept
//! by the primary, so the kernel spreads connections over the slots' queues and a replacement
//! worker takes over its predecessor's socket, queue included.

use std::collections::BTreeSet;

use herd_handle::{BindOptions, Bound, Error, Listener, Spec, bind};
use herd_sched::WorkerId;

/// One slot: its socket (`None` once closed for a scale-down) and the workers holding it. A
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
            self.slots[index].socket = Some(bind_listener(&self.address, &self.options)?);
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

    pub(crate) fn remove_worker(&mut self, worker: WorkerId) {
        // The slot's socket stays open, with its queue, for the next worker given the slot
        // (a respawned worker inherits what its predecessor left queued).
        for slot in &mut self.slots {
            slot.holders.remove(&worker);
        }
    }

    /// Closes the socket of a slot nobody holds (the cluster shrank): the kernel stops
    /// routing new connections to it. Connections already queued on it are reset; that is the
    /// price of scaling `reuseport` down (Linux's `tcp_migrate_req` sysctl moves them
    /// instead). Returns `false` while some worker still holds the slot (try again once it
    /// has left), `true` once the slot has no socket.
    pub(crate) fn close_slot(&mut self, slot: usize) -> bool {
        match self.slots.get_mut(slot) {
            Some(entry) if !entry.holders.is_empty() => false,
            Some(entry) => {
                entry.socket = None;
                true
            }
            None => true,
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
