//! Message channels between processes that carry file descriptors.
//!
//! A [`Channel`] is one end of an `AF_UNIX` `SOCK_SEQPACKET` socket pair. Each message keeps
//! its boundary and carries up to [`MAX_FDS_PER_MESSAGE`] descriptors (`SCM_RIGHTS`) and up to
//! [`MAX_MESSAGE_BYTES`] bytes. Every descriptor is close-on-exec from birth, received ones
//! included (`MSG_CMSG_CLOEXEC`), and owned ([`OwnedFd`](std::os::fd::OwnedFd)) from the moment
//! it leaves the kernel, so no error path leaks one.
//!
//! - Raw: [`Channel::send`] / [`Channel::recv`] move bytes and descriptors.
//! - Typed: [`Channel::send_value`] / [`Channel::recv_value`] move any serde value, encoded with
//!   postcard behind a [`WIRE_VERSION`] byte; malformed bytes are an [`Error`], never a panic.
//! - Nonblocking: the `try_` forms use `MSG_DONTWAIT` and fail with
//!   [`Error::is_would_block`]; [`AsFd`](std::os::fd::AsFd) lets `polling`, mio or tokio wait.
//! - Processes: [`Channel::into_child`] places an end at a fixed descriptor number in a child
//!   and names it in an environment variable; [`Channel::from_env`] recovers it there.
//!
//! A zero-length record cannot be told apart from end of stream, so empty messages are
//! refused on send, and end of stream is reported as [`Error::Closed`].
//!
//! ```
//! use std::os::fd::AsFd;
//! use herd_ipc::Channel;
//!
//! let (primary, worker) = Channel::pair()?;
//! let (reader, writer) = std::io::pipe()?;
//! primary.send_value(&("hello", 42u32), &[writer.as_fd()])?;
//!
//! let ((text, n), fds): ((String, u32), _) = worker.recv_value()?;
//! assert_eq!((text.as_str(), n, fds.len()), ("hello", 42, 1));
//! # drop(reader);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod channel;
mod child;
mod error;
mod sys;
mod typed;

pub use channel::{Channel, Limits, MAX_BATCH, MAX_FDS_PER_MESSAGE, MAX_MESSAGE_BYTES, Message};
pub use error::Error;
pub use typed::WIRE_VERSION;

/// Whether a descriptor has `FD_CLOEXEC` set (`fcntl(F_GETFD)`): for tests and assertions
/// that nothing will leak into a child process.
pub fn is_cloexec(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<bool> {
    sys::fd::is_cloexec(fd)
}
