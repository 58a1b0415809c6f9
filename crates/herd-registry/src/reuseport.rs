//! The `reuseport` handle: one `SO_REUSEPORT` listening socket per worker slot, bound and kept
//! by the primary, so the kernel spreads connections over the slots' queues and a replacement
//! worker takes over its predecessor's socket, queue included.

use herd_handle::{BindOptions, Bound, Error, Listener, Spec, bind};
use herd_sched::{Slots, WorkerId};

pub(crate) struct ReusePort {
    /// The address every slot binds: the first bind's real address (port 0 resolved).
    address: Spec,
    options: BindOptions,
    sockets: Vec<Listener>,
    slots: Slots,
}

impl ReusePort {
    /// Binds the first slot's socket.
    pub(crate) fn bind(spec: &Spec, options: &BindOptions) -> Result<(ReusePort, Spec), Error> {
        let options = BindOptions { reuse_port: true, ..options.clone() };
        let first = bind_listener(spec, &options)?;
        let address = first.local_addr().map_err(|e| Error::new("getsockname", spec, e))?;
        let handle = ReusePort {
            address: address.clone(),
            options,
            sockets: vec![first],
            slots: Slots::new(1),
        };
        Ok((handle, address))
    }

    /// The socket of the worker's slot (assigning the lowest free slot, binding a new socket
    /// when every existing slot is held).
    pub(crate) fn socket_for(&mut self, worker: WorkerId) -> Result<&Listener, Error> {
        let slot = match self.slots.assign(worker) {
            Some(slot) => slot,
            None => {
                let socket = bind_listener(&self.address, &self.options)?;
                self.sockets.push(socket);
                self.slots.resize(self.sockets.len());
                self.slots.assign(worker).ok_or_else(|| {
                    Error::new("assign slot", &self.address, std::io::Error::other("no free slot"))
                })?
            }
        };
        Ok(&self.sockets[slot])
    }

    pub(crate) fn remove_worker(&mut self, worker: WorkerId) {
        // The slot's socket stays open, with its queue, for the next worker given the slot.
        self.slots.release(worker);
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
