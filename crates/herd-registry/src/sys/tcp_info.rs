//! The length of a listening TCP socket's accept queue, from `TCP_INFO` (`tcp(7)`): for a
//! listener the kernel reports the connections waiting to be accepted in `tcpi_unacked`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Connections queued on the listening socket `fd`, waiting for an `accept`.
pub(crate) fn accept_queue_len(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: tcp_info is a plain C struct of integers: all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes and `len` gives the size of `info`; the
    // kernel writes at most that many bytes.
    let ret = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.tcpi_unacked)
}
