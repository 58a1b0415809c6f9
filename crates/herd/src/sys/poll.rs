//! Waiting on two descriptors at once, for a blocking accept that a disconnect can interrupt.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Blocks until `a` or `b` is readable (or has an error or hang-up condition). Returns whether
/// `a` reported a hang-up or error (`POLLHUP`, `POLLRDHUP`, `POLLERR`): for a listening socket,
/// that it was shut down.
pub(crate) fn wait_either(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> io::Result<bool> {
    let mut fds = [
        libc::pollfd { fd: a.as_raw_fd(), events: libc::POLLIN | libc::POLLRDHUP, revents: 0 },
        libc::pollfd { fd: b.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfd for the kernel to read and write, and
        // both descriptors are borrowed for the duration of the call.
        let ret = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ret >= 0 {
            return Ok(fds[0].revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Blocks until `fd` is readable (or has an error or hang-up condition), retrying on `EINTR`.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut entry = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY: `entry` is one valid pollfd for the kernel to read and write, and the
        // descriptor is borrowed for the duration of the call.
        let ret = unsafe { libc::poll(&mut entry, 1, -1) };
        if ret >= 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Blocks until `fd` is readable or `timeout` has passed (rounded up to whole milliseconds).
pub(crate) fn wait_readable_for(
    fd: BorrowedFd<'_>,
    timeout: std::time::Duration,
) -> io::Result<()> {
    let ms =
        libc::c_int::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX);
    let mut entry = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: `entry` is one valid pollfd for the kernel to read and write, and the descriptor
    // is borrowed for the duration of the call.
    let ret = unsafe { libc::poll(&mut entry, 1, ms) };
    if ret >= 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(error) }
}

/// What [`wait_many`] waits for on one descriptor.
#[cfg(feature = "metrics")]
#[derive(Clone, Copy)]
pub(crate) enum Interest {
    Read,
    Write,
}

/// Blocks until one of `fds` is ready for its [`Interest`] (or has an error or hang-up
/// condition), or `timeout` has passed (`None`: no limit; rounded up to whole milliseconds).
/// Returns, in `fds`' order, whether each is ready; all `false` on a timeout or `EINTR`.
#[cfg(feature = "metrics")]
pub(crate) fn wait_many(
    fds: &[(BorrowedFd<'_>, Interest)],
    timeout: Option<std::time::Duration>,
) -> io::Result<Vec<bool>> {
    let mut entries: Vec<libc::pollfd> = fds
        .iter()
        .map(|(fd, interest)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: match interest {
                Interest::Read => libc::POLLIN,
                Interest::Write => libc::POLLOUT,
            },
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| {
        libc::c_int::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX)
    });
    let count = libc::nfds_t::try_from(entries.len()).unwrap_or(libc::nfds_t::MAX);
    // SAFETY: `entries` is a valid array of `count` pollfd for the kernel to read and write,
    // and every descriptor is borrowed by `fds` for the duration of the call.
    let ret = unsafe { libc::poll(entries.as_mut_ptr(), count, ms) };
    if ret < 0 {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(entries.iter().map(|e| ret > 0 && e.revents != 0).collect())
}
