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
    /// The control channel failed.
    #[error("worker {id}: {source}")]
    Channel {
        /// The worker.
        id: WorkerId,
        /// What failed.
        source: herd_ipc::Error,
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
            Error::Policy { .. } => io::ErrorKind::InvalidInput,
            Error::NoSuchWorker(_) => io::ErrorKind::NotFound,
            Error::Spawn { source, .. } | Error::Io { source, .. } => source.kind(),
            Error::Channel { .. } => io::ErrorKind::BrokenPipe,
        };
        io::Error::new(kind, error)
    }
}
