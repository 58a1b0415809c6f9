//! The facade's error type.

use std::io;

use crate::WorkerId;

/// What can go wrong in the primary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `HERD_SCHED_POLICY` names no policy.
    #[error("{var}: {source}")]
    Policy {
        /// The variable.
        var: &'static str,
        /// The parse error, listing the valid names.
        source: herd_sched::ParsePolicyError,
    },
    /// No worker has this id (never forked, or gone).
    #[error("no worker {0}")]
    NoSuchWorker(WorkerId),
    /// A worker process could not be started.
    #[error("fork worker {id}: spawn {exec}: {source}")]
    Spawn {
        /// The id it would have had.
        id: WorkerId,
        /// The program.
        exec: String,
        /// Why.
        source: io::Error,
    },
    /// A worker process was started, then a step of setting it up failed (registering its
    /// control channel or its pidfd with the event loop, `pidfd_open`, starting the thread
    /// that relays its output), typically for want of descriptors or threads (`EMFILE`,
    /// `EAGAIN`). The process was killed and reaped; nothing of it is kept.
    #[error("fork worker {id}: {op} for {exec} (pid {pid}, killed and reaped): {source}")]
    SpawnSetup {
        /// The id it would have had.
        id: WorkerId,
        /// The program.
        exec: String,
        /// The process that was started and killed.
        pid: u32,
        /// The step that failed.
        op: &'static str,
        /// Why, with its errno.
        source: io::Error,
    },
    /// The control channel failed.
    #[error("worker {id}: {source}")]
    Channel {
        /// The worker.
        id: WorkerId,
        /// What failed.
        source: herd_ipc::Error,
    },
    /// [`Primary::send`](crate::Primary::send) found the worker's queue in the primary full:
    /// the worker has not read what was sent before (it is busy, stopped or hung). Nothing was
    /// queued; send again once it reads ([`Event::Message`](crate::Event) answers, or later).
    #[error(
        "worker {id}: {messages} messages with {fds} descriptors already wait for it to read \
         (at most {max_messages} messages and {max_fds} descriptors)"
    )]
    QueueFull {
        /// The worker.
        id: WorkerId,
        /// Messages waiting in the primary for that worker.
        messages: usize,
        /// Descriptors travelling with them (each a duplicate the primary holds).
        fds: usize,
        /// The bound on messages, [`MAX_QUEUED_MESSAGES`](crate::Primary::MAX_QUEUED_MESSAGES).
        max_messages: usize,
        /// The bound on descriptors, [`MAX_QUEUED_FDS`](crate::Primary::MAX_QUEUED_FDS).
        max_fds: usize,
    },
    /// Socket-activated workers ([`Cluster::socket_activation`](crate::Cluster::socket_activation))
    /// cannot run as configured: a hand-off policy, no program, a bad socket name.
    #[error("socket activation: {reason}")]
    Activation {
        /// What is wrong.
        reason: String,
    },
    /// The primary could not bind a socket for socket-activated workers (the error names the
    /// operation and the address, with its errno).
    #[error(transparent)]
    Listen(herd_handle::Error),
    /// The control socket ([`Cluster::control_socket`](crate::Cluster::control_socket)) could
    /// not be set up: its directory not created, the path not bound (`EADDRINUSE`: a live
    /// primary listens there already), or its mode not set.
    #[error("control socket {}: {op}: {source}", path.display())]
    Control {
        /// The socket's path.
        path: std::path::PathBuf,
        /// What was being done (`bind`, `create its directory`, ...).
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A system call of the primary's event loop failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { op, source }
    }
}

impl From<Error> for io::Error {
    fn from(error: Error) -> io::Error {
        let kind = match &error {
            Error::Policy { .. } | Error::Activation { .. } => io::ErrorKind::InvalidInput,
            Error::Listen(e) => e.kind(),
            Error::NoSuchWorker(_) => io::ErrorKind::NotFound,
            Error::Spawn { source, .. }
            | Error::SpawnSetup { source, .. }
            | Error::Io { source, .. }
            | Error::Control { source, .. } => source.kind(),
            Error::Channel { .. } => io::ErrorKind::BrokenPipe,
            Error::QueueFull { .. } => io::ErrorKind::WouldBlock,
        };
        io::Error::new(kind, error)
    }
}
