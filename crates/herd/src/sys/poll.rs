//! Waiting on two descriptors at once, for a blocking accept that a disconnect can interrupt.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Blocks until `a` or `b` is readable (or has an error or hang-up condition).
pub(crate) fn wait_either(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> io::Result<()> {
    let mut fds = [
        libc::pollfd { fd: a.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: b.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfd for the kernel to read and write, and
        // both descriptors are borrowed for the duration of the call.
        let ret = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ret >= 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}
