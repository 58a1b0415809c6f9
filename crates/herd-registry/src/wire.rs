//! The hand-off channel's messages, between the primary's dispatcher and a worker's listener.
//!
//! Each (worker, handle) pair under `rr` or `least-conn` has a `SOCK_SEQPACKET` channel of its
//! own: the worker's end *is* its listener, so a worker can wait on it from any event loop.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Primary → worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToWorker {
    /// A connection, whose descriptor travels with this message. The primary keeps its own
    /// copy until the worker answers with [`FromWorker::Ack`].
    NewConn {
        /// The primary's token for it, echoed in the ack.
        conn: u64,
        /// The client's address as the primary's `accept(2)` gave it, for a TCP connection
        /// (the worker needs no `getpeername`); `None` for a Unix-domain connection. Either
        /// way the worker adopts the descriptor as that kind of stream without asking the
        /// kernel what it is: the primary accepted it from its own listening socket.
        tcp_peer: Option<SocketAddr>,
        /// Whether the descriptor is `O_NONBLOCK` (the worker switches it if it wants the
        /// other mode). It is when every worker of the handle said
        /// [`FromWorker::EventLoop`].
        nonblocking: bool,
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
        /// The worker's credit: how many of its threads wait in a blocking `accept` on this
        /// listener right after this answer (0 with a refusal, and for an event loop, which
        /// waits in no `accept`). Under `rr` a thread-per-connection worker may then have
        /// that many hand-offs in flight (at most 8, at least the cluster's `max_in_flight`):
        /// each lands on a thread that waits for it, so the primary sends them in one
        /// `sendmmsg` and none waits behind a busy thread. Carried on the ack, so it costs no
        /// message of its own.
        idle: u32,
    },
    /// This many connections the worker took have closed (what `least-conn` counts).
    Closed {
        /// How many.
        count: u32,
    },
    /// The worker takes its connections on an event loop (herd's tokio listener sends it when
    /// it is made), which reads every hand-off as soon as it arrives. From then on:
    /// - the primary accepts nonblocking while every worker of the handle has said so, sparing
    ///   each worker an `ioctl(FIONBIO)` per connection;
    /// - the worker may have up to 8 connections in flight (or the cluster's
    ///   `max_in_flight` if higher), so the connections of one wake-up go to it in one
    ///   `sendmmsg`: none waits behind a busy thread there, since the loop takes them all at
    ///   once. A thread-per-connection worker keeps the cluster's bound (1 by default, Node's):
    ///   there a connection sent ahead would wait for a free thread while another worker idles.
    EventLoop,
    /// The worker could not take the connection *for now*: its descriptor was lost on the way
    /// in (`MSG_CTRUNC`, the worker is at its descriptor limit). Unlike a refusal it is never
    /// closed for this: it goes to another worker, or waits, while this one is held off for
    /// a pause.
    Deferred {
        /// The token from [`ToWorker::NewConn`].
        conn: u64,
    },
}
