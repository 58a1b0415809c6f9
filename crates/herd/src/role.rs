//! Which role this process plays: Node's `cluster.isPrimary` / `cluster.isWorker`.

use crate::protocol::{PRIMARY_PID_VAR, WORKER_ID_VAR};
use crate::sys;

/// A worker's id: 1, 2, 3, … in fork order, never reused within a primary's life.
pub type WorkerId = herd_sched::WorkerId;

/// The role of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not started by a herd primary: this process may become one.
    Primary,
    /// Started by a herd primary as this worker.
    Worker(WorkerId),
}

impl Role {
    /// Whether this is a worker.
    pub fn is_worker(self) -> bool {
        matches!(self, Role::Worker(_))
    }
}

/// This process's role, from `HERD_WORKER_ID` (Node's `NODE_UNIQUE_ID`).
///
/// A process is a worker only when `HERD_WORKER_ID` holds an id **and** its parent is the
/// primary named in `HERD_PRIMARY_PID`. A process that a worker spawns inherits the variables
/// but has the worker as its parent, so it is not mistaken for a worker; Node reaches the same
/// end by deleting `NODE_UNIQUE_ID` from its environment, which a library should not do.
pub fn role() -> Role {
    let id = std::env::var(WORKER_ID_VAR).ok().and_then(|v| v.parse::<WorkerId>().ok());
    let primary = std::env::var(PRIMARY_PID_VAR).ok().and_then(|v| v.parse::<u32>().ok());
    match (id, primary) {
        (Some(id), Some(primary)) if id > 0 && primary == sys::parent_pid() => Role::Worker(id),
        _ => Role::Primary,
    }
}
