//! Waiting until a listening socket has a connection queued.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::{cvt, retry};

/// What `poll` reported besides "readable".
pub(crate) struct Readiness {
    /// The socket was shut down (`POLLRDHUP`, `POLLHUP`) or has an error (`POLLERR`): if an
    /// accept now finds nothing, nothing will ever come, and waiting again would spin.
    pub(crate) hangup: bool,
}

/// `poll(2)` on one descriptor for `POLLIN` with no timeout, retried on `EINTR`.
///
/// A listening socket polls readable when a connection is queued (see `accept(2)`); another
/// process sharing the socket may take it first, so callers accept and wait again.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>) -> io::Result<Readiness> {
    let mut entry =
        libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN | libc::POLLRDHUP, revents: 0 };
    // SAFETY: `entry` is one valid, writable pollfd and the count says 1; the descriptor is
    // borrowed for the whole call.
    retry(|| cvt(unsafe { libc::poll(&mut entry, 1, -1) }))?;
    if entry.revents & libc::POLLNVAL != 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    Ok(Readiness { hangup: entry.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 })
}
