//! The one error type of this crate.

use std::io;

/// What can go wrong on a [`Channel`](crate::Channel).
///
/// Every variant that concerns a received message means the message was discarded and every
/// descriptor that arrived with it was closed: nothing leaks on an error path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer closed its end (or exited). On receive: end of stream, a zero-length read,
    /// which comes only after every message the peer sent (a peer's reset, `ECONNRESET`, is
    /// read past, not reported). On send: `EPIPE`, `ECONNRESET` or `ENOTCONN`.
    #[error("channel closed by the peer")]
    Closed,
    /// A system call failed; `WouldBlock` from the nonblocking calls arrives here.
    #[error("{op}: {source}")]
    Io {
        /// The operation, e.g. `sendmsg`.
        op: &'static str,
        /// The OS error, with its errno.
        source: io::Error,
    },
    /// A message is empty. A zero-length `SOCK_SEQPACKET` record cannot be told apart from end
    /// of stream, so none is ever sent.
    #[error("send: empty message (a zero-length record reads as end of stream)")]
    Empty,
    /// A message is larger than the sending end's limit.
    #[error("send: message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// A message carries more descriptors than the sending end's limit.
    #[error("send: {count} descriptors exceed the limit of {max} per message")]
    TooManyFds {
        /// How many were given.
        count: usize,
        /// The limit in force.
        max: usize,
    },
    /// A received message was longer than this end accepts (`MSG_TRUNC`); it was discarded.
    #[error("recv: message longer than the limit of {max} bytes was discarded")]
    Truncated {
        /// This end's byte limit.
        max: usize,
    },
    /// A received message lost descriptors (`MSG_CTRUNC`): it carried more than this end
    /// accepts, or this process's descriptor table was full (`EMFILE`: the kernel could not
    /// install them; see `unix(7)`). Every descriptor that did arrive was closed. The message's
    /// bytes are kept in `bytes` (and [`Error::truncated_value`] decodes a typed one), so the
    /// receiver can still answer it: a message that must never go unanswered (a connection
    /// handed over) can be refused rather than lost.
    #[error(
        "recv: message with more than {max} descriptors, or arriving at the descriptor limit, \
         lost its descriptors"
    )]
    FdsTruncated {
        /// This end's descriptor limit.
        max: usize,
        /// The message's bytes, whole.
        bytes: Vec<u8>,
    },
    /// A value could not be encoded.
    #[error("encode message: {0}")]
    Encode(postcard::Error),
    /// Received bytes do not decode as the expected type.
    #[error("decode message: {0}")]
    Decode(postcard::Error),
    /// Received bytes decode, with bytes left over: the peer speaks another protocol.
    #[error("decode message: {count} trailing bytes")]
    TrailingBytes {
        /// How many bytes were left.
        count: usize,
    },
    /// A typed message carries another wire version: the two processes run different builds.
    #[error("decode message: wire version {found}, expected {expected}")]
    WireVersion {
        /// The version byte received.
        found: u8,
        /// This build's version.
        expected: u8,
    },
    /// A channel could not be recovered from, or handed to, a child process.
    #[error("{var}: {reason}")]
    Inherit {
        /// The environment variable that names the descriptor number.
        var: String,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// Wraps an OS error, turning the errors that mean "the peer is gone" into [`Error::Closed`].
    ///
    /// On a receive, `ECONNRESET` does *not* mean that: Linux reports it before the messages
    /// the peer left queued, so the receive path reads past it and never passes it here.
    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::NotConnected => Error::Closed,
            _ => Error::Io { op, source },
        }
    }

    /// Whether a nonblocking call found nothing to do (`EAGAIN`); try again when the channel's
    /// descriptor is ready.
    pub fn is_would_block(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::WouldBlock)
    }

    /// For [`Error::FdsTruncated`], the typed message whose descriptors were lost, decoded (as
    /// [`Channel::recv_value`](crate::Channel::recv_value) would have); `None` for any other
    /// error or for bytes that are not a `T`.
    pub fn truncated_value<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        match self {
            Error::FdsTruncated { bytes, .. } => crate::typed::decode(bytes).ok(),
            _ => None,
        }
    }

    /// The OS errno behind this error, if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    /// Keeps the kind (`WouldBlock`, `UnexpectedEof` for a closed peer, `InvalidData` for a bad
    /// message) and the message.
    fn from(error: Error) -> Self {
        let kind = match &error {
            Error::Io { source, .. } => source.kind(),
            Error::Closed => io::ErrorKind::UnexpectedEof,
            Error::Empty | Error::TooLarge { .. } | Error::TooManyFds { .. } => {
                io::ErrorKind::InvalidInput
            }
            Error::Inherit { .. } => io::ErrorKind::NotFound,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, error)
    }
}
