//! Node.js's `cluster` model for Rust servers.
//!
//! One binary runs as a **primary** and N **workers**. The primary re-executes its own binary
//! for each worker with `HERD_WORKER_ID` set (Node's `NODE_UNIQUE_ID`); [`role`] tells which
//! one this process is. A worker's [`listen`](Worker::listen) does not bind: it asks the
//! primary, which binds each address once and then, by [policy](Policy), passes the socket to
//! every worker (`none`), accepts and hands each connection to one worker (`rr`,
//! `least-conn`), or gives each worker its own `SO_REUSEPORT` socket (`reuseport`).
//!
//! ```no_run
//! use std::io::Write;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     match herd::role() {
//!         herd::Role::Primary => {
//!             let mut primary = herd::Cluster::new().workers(2).start()?;
//!             primary.handle_signals()?; // SIGTERM: graceful stop, SIGHUP: rolling restart
//!             while let Some(event) = primary.next_event(None)? {
//!                 match event {
//!                     // The primary binds for its workers: a port in use is its to report.
//!                     herd::Event::ListenFailed { error, .. } => {
//!                         return Err(error.to_string().into());
//!                     }
//!                     // Every worker is gone and every socket released.
//!                     herd::Event::Drained => break,
//!                     _ => {}
//!                 }
//!             }
//!         }
//!         herd::Role::Worker(id) => {
//!             let worker = herd::worker()?;
//!             // A failed listen is the primary's to report (above): exit quietly.
//!             let Ok(listener) = worker.listen("127.0.0.1:8080") else { std::process::exit(1) };
//!             for conn in listener.incoming() {
//!                 // A client gone early is no reason to stop serving the others.
//!                 let _ = writeln!(conn?, "hello from worker {id}");
//!             }
//!             // Disconnected: exits once the connections still open are done.
//!             worker.finish()
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Async servers (features, off by default): `tokio` gives `herd::tokio::Listener` (an async
//! accept for every policy, streams that carry their close tracking) and
//! `Primary::next_event_async`; `hyper` adds `herd::http::Drain`, keep-alive draining for
//! rolling restarts; `axum` makes the listener an `axum::serve::Listener`.
//! [`Worker::disconnected`], the future of the drain, needs no feature. The README's "With tokio and axum" has the program.

mod cluster;
pub mod control;
mod error;
#[cfg(feature = "hyper")]
pub mod http;
mod primary;
mod protocol;
mod role;
mod signal;
pub mod stats;
mod sys;
#[cfg(feature = "tokio")]
pub mod tokio;
mod worker;

pub use cluster::{Cluster, MAX_DURATION, Readiness, Stdio};
pub use error::Error;
pub use herd_handle::{PeerAddr, Spec, Stream};
pub use herd_sched::Policy;
pub use primary::{Event, Primary, RespawnPolicy, State, WorkerInfo};
pub use protocol::WORKER_ID_VAR;
pub use role::{Role, WorkerId, role};
pub use signal::Signal;
pub use worker::{
    CloseGuard, Connection, Datagram, Disconnected, ListenOptions, Listener, Worker, worker,
};

/// The most workers a cluster is asked to count at once: 1024. A control socket's `scale`
/// ([`control::Request::Scale`], `herd scale N`) above it is refused with one line, rather
/// than forking until `fork(2)` fails; `herd run -w` takes the same bound. Each worker is a
/// process with its own descriptors and memory, so a machine runs out well before (a
/// `-w max` cluster counts one per CPU).
pub const MAX_WORKERS: usize = 1024;

/// Re-exported layers, for programs that use one directly.
pub use {herd_handle as handle, herd_ipc as ipc, herd_registry as registry, herd_sched as sched};

/// The README's programs, compiled as doctests (with every feature, as `cargo xtask test`
/// builds them).
#[cfg(all(doctest, feature = "axum"))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
