//! The async stream: tokio's TCP or unix stream, with the connection's close tracking inside.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use ::tokio::net::{TcpStream, UnixStream};

use crate::{CloseGuard, Connection, PeerAddr};

/// An accepted connection on tokio: nonblocking, registered with the runtime that accepted
/// it, with its peer's address. Reads and writes as tokio's [`TcpStream`] or [`UnixStream`]
/// ([`AsyncRead`], [`AsyncWrite`]; wrap it in `hyper_util::rt::TokioIo` for hyper).
///
/// It counts as one of the worker's open connections until it is dropped (its
/// [`CloseGuard`] is inside, so it cannot be dropped apart from the socket): a disconnecting
/// worker waits for it, `max_connections` counts it, and under `least-conn` the primary is
/// told when it closes. The socket is closed first, then the connection counted closed.
pub struct Stream {
    // Dropped in this order: the socket, then the count.
    io: Io,
    peer: PeerAddr,
    _guard: CloseGuard,
}

enum Io {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Registers an accepted connection, nonblocking already, with the current runtime.
    pub(crate) fn new(connection: Connection) -> io::Result<Stream> {
        let (stream, peer, guard) = connection.into_all()?;
        // Accepted nonblocking (`Listener::try_accept_nonblocking`): no `ioctl` here.
        let io = match stream {
            herd_handle::Stream::Tcp(tcp) => Io::Tcp(TcpStream::from_std(tcp)?),
            herd_handle::Stream::Unix(unix) => Io::Unix(UnixStream::from_std(unix)?),
        };
        Ok(Stream { io, peer, _guard: guard })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> &PeerAddr {
        &self.peer
    }

    /// The TCP stream, for its options (`set_nodelay`, …); `None` for a unix connection.
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match &self.io {
            Io::Tcp(tcp) => Some(tcp),
            Io::Unix(_) => None,
        }
    }

    /// The unix stream; `None` for a TCP connection.
    pub fn as_unix(&self) -> Option<&UnixStream> {
        match &self.io {
            Io::Unix(unix) => Some(unix),
            Io::Tcp(_) => None,
        }
    }
}

/// The address of a listener as axum wants it: a [`PeerAddr`].
#[cfg(feature = "axum")]
pub(super) fn spec_to_addr(spec: &crate::Spec) -> io::Result<PeerAddr> {
    use crate::Spec;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr as UnixSocketAddr;
    match spec {
        Spec::Tcp(addr) => Ok(PeerAddr::Tcp(*addr)),
        Spec::Unix(path) => Ok(PeerAddr::Unix(UnixSocketAddr::from_pathname(path)?)),
        Spec::UnixAbstract(name) => Ok(PeerAddr::Unix(UnixSocketAddr::from_abstract_name(name)?)),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{other}: not an address a stream listener has"),
        )),
    }
}

macro_rules! each {
    ($io:expr, $s:ident => $body:expr) => {
        match $io {
            Io::Tcp($s) => $body,
            Io::Unix($s) => $body,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(&mut self.get_mut().io, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(&mut self.get_mut().io, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(&mut self.get_mut().io, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        each!(&self.io, s => s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(&mut self.get_mut().io, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(&mut self.get_mut().io, s => Pin::new(s).poll_shutdown(cx))
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        each!(&self.io, s => s.as_fd())
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("peer", &self.peer).finish_non_exhaustive()
    }
}
