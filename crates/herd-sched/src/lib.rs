//! Connection scheduling for a herd cluster: which worker gets which connection.
//!
//! herd brings Node.js's `cluster` model to Rust: a primary process owns the listening
//! sockets and either hands each accepted connection's fd to a worker process or lets the
//! kernel spread connections over the workers. This crate is the pure decision logic behind
//! that. It does no I/O, reads no clock or environment, starts no thread and holds no fd;
//! the registry owns the sockets, calls in with events and carries out the decisions.
//!
//! * [`Policy`] names the four policies (`none`, `rr`, `least-conn`, `reuseport`), parses
//!   them from [`ENV_VAR`] and says which need a hand-off.
//! * [`Dispatcher`] is the hand-off state of one listening handle under `rr` or
//!   `least-conn`: a FIFO of accepted connections, a bound on unacknowledged hand-offs per
//!   worker, and refusal tracking so that a connection nobody takes is closed instead of
//!   bouncing forever.
//! * [`Slots`] assigns `reuseport` sockets to workers so that a replacement inherits the
//!   socket of the worker it replaces.
//!
//! # Example
//!
//! A registry's loop for one handle: register workers, queue accepted connections, and
//! carry out decisions until there are none, then again after each ack.
//!
//! ```
//! use std::num::NonZeroUsize;
//! use herd_sched::{Dispatcher, Next, Policy};
//!
//! let policy: Policy = "rr".parse()?;
//! let pick = policy.pick().expect("rr is a hand-off policy");
//! let mut d = Dispatcher::new(pick, NonZeroUsize::MIN); // one hand-off at a time, like Node
//! d.add_worker(1);
//! d.add_worker(2);
//! for conn in [100, 101, 102] {
//!     d.push(conn);
//! }
//!
//! let mut sent = Vec::new();
//! while let Some(n) = d.next() {
//!     match n {
//!         Next::Send { worker, conn } => sent.push((worker, conn)), // send the fd
//!         Next::Close { conn } => unreachable!("nobody refused {conn}"),
//!     }
//! }
//! // Each worker has one unacknowledged connection, so 102 waits.
//! assert_eq!(sent, [(1, 100), (2, 101)]);
//! assert_eq!(d.pending_len(), 1);
//!
//! // Worker 1 accepts; it is free again and 102 goes to it.
//! d.ack(1, 100, true)?;
//! assert_eq!(d.next(), Some(Next::Send { worker: 1, conn: 102 }));
//! assert_eq!(d.next(), None);
//!
//! // The handle closes: close whatever is still queued or unacknowledged.
//! let mut left = d.drain();
//! left.sort();
//! assert_eq!(left, [101, 102]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod dispatch;
mod policy;
mod slots;

pub use dispatch::{AckError, ConnId, Dispatcher, Next, Pick, WorkerId};
pub use policy::{ENV_VAR, ParsePolicyError, Policy, from_env_value};
pub use slots::Slots;
