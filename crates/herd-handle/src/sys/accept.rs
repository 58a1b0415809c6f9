//! `accept4(2)` with `SOCK_NONBLOCK`: a connection born nonblocking for an event loop, which
//! saves the `ioctl(FIONBIO)` std's blocking accept would need after it.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{cvt, retry};

/// Accepts a TCP connection from `listener`, close-on-exec and nonblocking from the call:
/// the descriptor and the peer's address.
pub(crate) fn accept_tcp_nonblocking(
    listener: BorrowedFd<'_>,
) -> io::Result<(OwnedFd, SocketAddr)> {
    // SAFETY: `try_init` hands out a zeroed `sockaddr_storage` and its length for the call to
    // fill, as accept4 does; the returned descriptor is wrapped at once, so it is owned.
    let (fd, address) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            retry(|| {
                cvt(libc::accept4(
                    listener.as_raw_fd(),
                    storage.cast(),
                    len,
                    libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                ))
            })
            .map(|raw| OwnedFd::from_raw_fd(raw))
        })
    }?;
    let peer = address
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "accept4: not an IP peer"))?;
    Ok((fd, peer))
}
