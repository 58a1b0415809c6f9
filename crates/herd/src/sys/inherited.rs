//! Taking ownership of a descriptor this process inherited (systemd's sockets at 3..).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Takes inherited descriptor `fd`: checks that it is open (`fcntl(F_GETFD)`), makes it
/// close-on-exec (`FD_CLOEXEC`, as `sd_listen_fds(3)` does), and owns it from then on.
///
/// # Errors
/// `EBADF` when `fd` is not open; `fcntl(2)`'s other errors.
///
/// # Safety
/// `fd` must belong to nobody else in this process: the caller takes it once, for good (here:
/// a descriptor the socket-activation protocol passed to this very process, `LISTEN_PID`
/// being its pid, taken once per process).
pub(crate) unsafe fn take_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD takes a plain integer; a closed descriptor is reported as EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFD on the descriptor just checked, adding FD_CLOEXEC to its flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is open (checked above) and, by the caller's contract, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
