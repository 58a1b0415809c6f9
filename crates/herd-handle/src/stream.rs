//! Accepted connections: [`Stream`], [`PeerAddr`], and adopting a connection's descriptor.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixStream};

use socket2::{Socket, Type};

use crate::listener::{inspect, invalid, is_unix_domain};

/// A connected stream socket: what [`Listener::accept`](crate::Listener::accept) gives.
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix stream connection.
    Unix(UnixStream),
}

/// The other end of a [`Stream`].
#[derive(Clone, Debug)]
pub enum PeerAddr {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A Unix peer; usually unnamed, as clients rarely bind.
    Unix(UnixSocketAddr),
}

/// Runs `$body` with `$s` bound to whichever std stream `$stream` holds.
macro_rules! each {
    ($stream:expr, $s:ident => $body:expr) => {
        match $stream {
            Stream::Tcp($s) => $body,
            Stream::Unix($s) => $body,
        }
    };
}

impl Stream {
    /// The address of the other end.
    pub fn peer_addr(&self) -> io::Result<PeerAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(PeerAddr::Tcp),
            Stream::Unix(s) => s.peer_addr().map(PeerAddr::Unix),
        }
    }

    /// Shuts down reading, writing or both (`shutdown(2)`); affects every process holding
    /// the connection.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        each!(self, s => s.shutdown(how))
    }

    /// Moves the connection in or out of `O_NONBLOCK` mode, e.g. before
    /// `tokio::net::TcpStream::from_std`. Accepted streams start blocking.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        each!(self, s => s.set_nonblocking(nonblocking))
    }

    /// Sets how long a read may block (`None`: forever), as the std streams do.
    pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        each!(self, s => s.set_read_timeout(timeout))
    }

    /// Sets how long a write may block (`None`: forever), as the std streams do.
    pub fn set_write_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        each!(self, s => s.set_write_timeout(timeout))
    }

    /// The std TCP stream, if this is one.
    pub fn into_tcp(self) -> Option<TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::Unix(_) => None,
        }
    }

    /// The std Unix stream, if this is one.
    pub fn into_unix(self) -> Option<UnixStream> {
        match self {
            Stream::Unix(s) => Some(s),
            Stream::Tcp(_) => None,
        }
    }
}

/// Adopts a connected stream socket, e.g. a connection another process accepted and sent
/// over: `AF_INET`/`AF_INET6` gives [`Stream::Tcp`], `AF_UNIX` [`Stream::Unix`] (read with
/// `SO_DOMAIN`). Its blocking mode is left as it is.
///
/// On error the descriptor is closed; the error (`InvalidInput`) says what it is instead.
pub fn stream_from_fd(fd: OwnedFd) -> io::Result<Stream> {
    let socket = Socket::from(fd);
    let kind = inspect(&socket)?;
    if kind.ty != Type::STREAM {
        return Err(invalid("not a stream socket: a connection is SOCK_STREAM"));
    }
    if kind.listening {
        return Err(invalid("a listening socket, not a connection: see Listener::from_fd"));
    }
    Ok(if is_unix_domain(kind.domain)? {
        Stream::Unix(socket.into())
    } else {
        Stream::Tcp(socket.into())
    })
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        each!(self, s => s.read(buf))
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        each!(self, s => s.read_vectored(bufs))
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        each!(*self, s => (&mut &*s).read(buf))
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        each!(*self, s => (&mut &*s).read_vectored(bufs))
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        each!(self, s => s.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        each!(self, s => s.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        each!(self, s => s.flush())
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        each!(*self, s => (&mut &*s).write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        each!(*self, s => (&mut &*s).write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        each!(*self, s => (&mut &*s).flush())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        each!(self, s => s.as_fd())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl From<Stream> for OwnedFd {
    fn from(stream: Stream) -> OwnedFd {
        each!(stream, s => s.into())
    }
}

impl fmt::Display for PeerAddr {
    /// `127.0.0.1:5555`, `[::1]:5555`, a Unix path as it is, `@name` for an abstract name,
    /// `(unnamed)` for a client that did not bind.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(address) => write!(f, "{address}"),
            PeerAddr::Unix(address) => {
                if let Some(path) = address.as_pathname() {
                    write!(f, "{}", path.display())
                } else if let Some(name) = address.as_abstract_name() {
                    write!(f, "@{}", String::from_utf8_lossy(name))
                } else {
                    f.write_str("(unnamed)")
                }
            }
        }
    }
}
