//! Who is at the other end of a unix socket (`SO_PEERCRED`, `unix(7)`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The credentials of the process that connected (or created the pair): taken by the kernel
/// at `connect(2)`, so a client cannot claim another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerCredentials {
    pub(crate) pid: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `getsockopt(SOL_SOCKET, SO_PEERCRED)` on a connected unix socket.
pub(crate) fn peer_credentials(socket: BorrowedFd<'_>) -> io::Result<PeerCredentials> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a valid ucred of `len` bytes for the kernel to fill in, and the socket
    // is borrowed for the duration of the call.
    let ret = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCredentials { pid: cred.pid as u32, uid: cred.uid, gid: cred.gid })
}
