//! Duplicating a descriptor known only by its number, and marking it close-on-exec.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::cvt;

/// `fcntl(raw, F_DUPFD_CLOEXEC, 3)`: a new close-on-exec descriptor for the open file
/// description behind `raw`, which stays open and owned by whoever owned it. The copy lands at
/// 3 or above so it never takes the place of a closed stdin, stdout or stderr.
///
/// See `fcntl(2)`.
pub(crate) fn dup_cloexec(raw: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC reads the descriptor table only; on a number that is not open it
    // fails with EBADF, so any integer is a valid argument.
    let new = cvt(unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: the call succeeded, so `new` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Sets `FD_CLOEXEC` on `raw` (`fcntl(F_SETFD)`), leaving it open: an inherited descriptor
/// this process now uses through its own copy is then not passed on to the programs it
/// starts. A number that is not open fails with `EBADF`.
pub(crate) fn set_cloexec(raw: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD and F_SETFD change only the descriptor's flags; any integer is valid.
    let flags = cvt(unsafe { libc::fcntl(raw, libc::F_GETFD) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(raw, libc::F_SETFD, flags | libc::FD_CLOEXEC) }).map(drop)
}
