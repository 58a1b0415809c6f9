//! The herd primary's table of bound handles, keyed as Node's `cluster` keys them
//! (`address:port:addressType:fd:index`), and the hand-off of connections to workers.
//!
//! A worker's listen becomes a query: [`Registry::query`] binds the key's socket on first use
//! and grants each worker a descriptor. What the descriptor is depends on the policy:
//!
//! - `none` (and every UDP socket): a duplicate of the one listening socket; workers race on
//!   accept ([`Mode::Listener`], [`Mode::Datagram`]).
//! - `reuseport`: the listening socket of the worker's slot, one `SO_REUSEPORT` socket per slot
//!   kept by the primary, so a replacement worker inherits the slot's queue.
//! - `rr`, `least-conn`: the worker's end of a hand-off channel ([`Mode::Handoff`]); the
//!   primary accepts and sends each connection's descriptor to the worker the
//!   [`herd_sched::Dispatcher`] picks, keeping its copy until the worker acknowledges
//!   ([`wire`]). Unacknowledged connections of a worker that leaves go to the others, once
//!   everything it sent is applied. At most [`MAX_PENDING_CONNECTIONS`] wait in the primary
//!   per handle; beyond that, accepting pauses and clients wait in the kernel's backlog.
//!
//! ```
//! use std::num::NonZeroUsize;
//! use std::sync::Arc;
//! use herd_registry::{Mode, Registry};
//!
//! let poller = Arc::new(herd_registry::Poller::new()?);
//! let mut registry = Registry::new("none".parse()?, NonZeroUsize::MIN, poller, 1 << 32);
//! let spec = "tcp://127.0.0.1:0".parse()?;
//! let first = registry.query(1, &spec, 0, &Default::default())?;
//! let second = registry.query(2, &spec, 0, &Default::default())?;
//! assert_eq!(first.mode, Mode::Listener);
//! assert_eq!(first.address, second.address); // bound once, shared
//! assert_eq!(first.key.to_string(), "127.0.0.1:0:4:undefined:0");
//! assert!(!registry.release(1, &first.key));
//! assert!(registry.release(2, &first.key)); // the last one out closes it
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod handoff;
mod key;
mod registry;
mod reuseport;
mod stats;
mod sys;
pub mod wire;

pub use handoff::{DEFER_PAUSE, HandoffStats, MAX_PENDING_CONNECTIONS};
pub use key::{Indexes, Key, tuple};
pub use registry::{Grant, Mode, Registry};
pub use stats::{HandleKind, HandleStats, LATENCY_BOUNDS_SECONDS, LatencyHistogram, WorkerCounts};
pub use sys::{Event, Events, Poller, Watched};

/// Whether connections queued on a `reuseport` slot that leaves its group
/// ([`Registry::vacate_slot`]) move to the group's other sockets instead of being reset: true
/// where this process can load the kernel's migrate program (`CAP_BPF`, Linux 5.14 or later)
/// or the `net.ipv4.tcp_migrate_req` sysctl is 1.
pub fn migrates_queued() -> bool {
    sys::migrate::supported()
}
