//! The hand-off channel's messages, between the primary's dispatcher and a worker's listener.
//!
//! Each (worker, handle) pair under `rr` or `least-conn` has a `SOCK_SEQPACKET` channel of its
//! own: the worker's end *is* its listener, so a worker can wait on it from any event loop.

use serde::{Deserialize, Serialize};

/// Primary → worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToWorker {
    /// A connection, whose descriptor travels with this message. The primary keeps its own
    /// copy until the worker answers with [`FromWorker::Ack`].
    NewConn {
        /// The primary's token for it, echoed in the ack.
        conn: u64,
    },
}

/// Worker → primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromWorker {
    /// The worker took the connection (`accepted`) or refused it; a refused one goes to
    /// another worker.
    Ack {
        /// The token from [`ToWorker::NewConn`].
        conn: u64,
        /// Whether the worker keeps it.
        accepted: bool,
    },
    /// This many connections the worker took have closed (what `least-conn` counts).
    Closed {
        /// How many.
        count: u32,
    },
    /// The worker could not take the connection *for now*: its descriptor was lost on the way
    /// in (`MSG_CTRUNC`, the worker is at its descriptor limit). Unlike a refusal it is never
    /// closed for this: it goes to another worker, or waits, while this one is held off for
    /// a pause.
    Deferred {
        /// The token from [`ToWorker::NewConn`].
        conn: u64,
    },
}
