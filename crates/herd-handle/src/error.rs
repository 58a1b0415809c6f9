//! The one error type of this crate.

use std::fmt::Display;
use std::io;

/// A bind that failed: which operation, on which address, and the OS error.
///
/// Prints as `{op} {address}: {os error}`, e.g.
/// `bind tcp://127.0.0.1:80: Permission denied (os error 13)`. An error that arrived from
/// another process as an errno prints the same once rebuilt with [`Error::new`].
///
/// Turned into an [`io::Error`] it keeps its kind and message, and stays reachable, errno
/// included:
///
/// ```
/// use std::io;
/// use herd_handle::Error;
///
/// let error = Error::new("listen", "tcp://127.0.0.1:80", io::Error::from_raw_os_error(98));
/// let io_error = io::Error::from(error);
/// assert_eq!(io_error.kind(), io::ErrorKind::AddrInUse);
/// let inner = io_error.get_ref().and_then(|e| e.downcast_ref::<Error>()).unwrap();
/// assert_eq!(inner.raw_os_error(), Some(98));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{op} {address}: {io}")]
pub struct Error {
    op: &'static str,
    address: String,
    // Shown in the message rather than chained as `source()`, so a report prints it once.
    io: io::Error,
}

impl Error {
    /// An error of operation `op` (`bind`, `listen`, ...) on `address` (usually a
    /// [`Spec`](crate::Spec)).
    pub fn new(op: &'static str, address: impl Display, source: io::Error) -> Error {
        Error { op, address: address.to_string(), io: source }
    }

    /// The operation that failed, e.g. `bind`.
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// The address it failed on, as printed (`tcp://127.0.0.1:80`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The OS errno, when the error came from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.io.raw_os_error()
    }

    /// The kind of the underlying error (`AddrInUse`, `PermissionDenied`, ...).
    pub fn kind(&self) -> io::ErrorKind {
        self.io.kind()
    }

    /// The underlying error.
    pub fn io_error(&self) -> &io::Error {
        &self.io
    }
}

impl From<Error> for io::Error {
    /// Keeps the kind and the message; `get_ref().downcast_ref::<Error>()` gives the
    /// [`Error`] back, with its errno.
    fn from(error: Error) -> Self {
        io::Error::new(error.kind(), error)
    }
}
