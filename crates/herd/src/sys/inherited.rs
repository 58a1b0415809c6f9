//! Taking ownership of the descriptors socket activation passed this process (3, 4, …).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// `SD_LISTEN_FDS_START`: the first descriptor socket activation passes.
pub(crate) const LISTEN_FDS_START: RawFd = 3;

/// Set by the one call of [`take_listen_fds`] a process may make.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes descriptors `3..3 + count`, which the socket-activation protocol passed this process
/// (`sd_listen_fds(3)`: the caller has checked that `LISTEN_PID` is this process): checks
/// that each is open (`fcntl(F_GETFD)`), makes it close-on-exec (`FD_CLOEXEC`, as
/// `sd_listen_fds` does), and owns it from then on. At most once per process.
///
/// # Errors
/// The descriptor that failed and why: `EBADF` when it is not open, `EALREADY` (for
/// descriptor 3) on a second call, `EINVAL` for a count past the descriptor numbers.
pub(crate) fn take_listen_fds(count: RawFd) -> Result<Vec<OwnedFd>, (RawFd, io::Error)> {
    if !(0..=RawFd::MAX - LISTEN_FDS_START).contains(&count) {
        return Err((LISTEN_FDS_START, io::Error::from_raw_os_error(libc::EINVAL)));
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err((LISTEN_FDS_START, io::Error::from_raw_os_error(libc::EALREADY)));
    }
    // Grown as taken, not sized by `count`: a count far beyond the open descriptors stops at
    // the first one missing.
    let mut taken = Vec::new();
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + count {
        // SAFETY: F_GETFD takes a plain integer; a closed descriptor is reported as EBADF.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        // SAFETY: F_SETFD on the descriptor just checked, adding FD_CLOEXEC to its flags.
        if flags == -1 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } == -1
        {
            return Err((fd, io::Error::last_os_error()));
        }
        // SAFETY: `fd` is open (checked above) and passed to this process by the protocol
        // for it to own; `TAKEN` makes this the only owner this process ever creates for it.
        taken.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    Ok(taken)
}
