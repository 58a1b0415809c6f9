//! Creating the channel's socket pair and reading its options.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::cvt;

/// `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`: both ends are born close-on-exec.
///
/// See `socketpair(2)` and `unix(7)`.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: the call succeeded, so both numbers are fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads an integer socket option (`SO_TYPE`, `SO_DOMAIN`, ...).
fn int_option(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` gives the size of `value`.
    cvt(unsafe {
        libc::getsockopt(fd.as_raw_fd(), level, name, (&raw mut value).cast(), &mut len)
    })?;
    Ok(value)
}

/// Whether `fd` is an `AF_UNIX` `SOCK_SEQPACKET` socket, the only kind a channel may wrap.
pub(crate) fn is_unix_seqpacket(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(int_option(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)? == libc::AF_UNIX
        && int_option(fd, libc::SOL_SOCKET, libc::SO_TYPE)? == libc::SOCK_SEQPACKET)
}

/// `shutdown(fd, SHUT_WR)`: the peer reads end of stream once it has read everything sent
/// before, while this end can still receive.
pub(crate) fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: shutdown takes a descriptor we borrow and a constant; it touches no memory.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) }).map(drop)
}
