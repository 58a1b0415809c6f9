//! The control channel's messages between the primary and a worker (Node's `NODE_CLUSTER`
//! internal messages, and user messages beside them). Requests carry a sequence number that
//! the reply echoes, as Node's `seq`/`ack`.

use serde::{Deserialize, Serialize};

/// The environment variable that makes a process a worker, holding its id (Node:
/// `NODE_UNIQUE_ID`).
pub const WORKER_ID_VAR: &str = "HERD_WORKER_ID";
/// The environment variable naming the control channel's descriptor in a worker.
pub const IPC_FD_VAR: &str = "HERD_IPC_FD";
/// The environment variable holding the primary's pid: a process is a worker only if its
/// parent is that primary, so processes a worker spawns do not take themselves for workers.
pub const PRIMARY_PID_VAR: &str = "HERD_PRIMARY_PID";
/// The descriptor number of the control channel in a worker.
pub const IPC_FD: i32 = 3;

/// Bind options as they travel in a query (the first requester's apply to a shared handle).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireOptions {
    pub backlog: Option<i32>,
    pub ipv6_only: bool,
    pub readable_all: bool,
    pub writable_all: bool,
}

/// Worker → primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToPrimary {
    /// The worker is up (sent when it first connects, before any listen).
    Online,
    /// Listen on `spec` at `index` through the primary (Node's `queryServer`).
    Query { seq: u64, spec: String, index: u32, options: WireOptions },
    /// The worker is listening on the handle (Node's `listening`); `address` has the real port.
    Listening { spec: String, index: u32, address: String },
    /// The worker closed its listener on the handle (Node's `close`).
    Close { spec: String, index: u32 },
    /// A user message; descriptors travel beside it.
    Message { data: Vec<u8> },
    /// The worker disconnects by itself (Node's `exitedAfterDisconnect` act): it takes no new
    /// connection, finishes what it has, and exits.
    Disconnecting,
    /// The answer to [`ToWorker::Ping`], from the worker's control thread.
    Pong,
}

/// How the worker uses the descriptor of a successful reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GrantMode {
    /// A listening socket: accept on it.
    Listener,
    /// A bound UDP socket.
    Datagram,
    /// A hand-off channel: connections arrive on it.
    Handoff {
        /// Whether to report closed connections (the primary counts them for `least-conn`).
        report_closes: bool,
    },
}

/// Why a query failed: enough to rebuild the primary's error in the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub op: String,
    pub address: String,
    pub errno: Option<i32>,
    pub message: String,
}

/// Primary → worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToWorker {
    /// The answer to the query with this `seq`; a granted descriptor travels beside it.
    Reply { seq: u64, result: Result<(GrantMode, String), Failure> },
    /// A user message; descriptors travel beside it.
    Message { data: Vec<u8> },
    /// Disconnect gracefully (Node's primary-side `worker.disconnect()`).
    Disconnect,
    /// Are you there? Answered with [`ToPrimary::Pong`] (hang detection).
    Ping,
}
