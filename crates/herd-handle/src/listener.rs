//! Listening stream sockets, always in nonblocking mode, and the blocking accept on top.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener};
use std::path::PathBuf;

use socket2::{Domain, Socket, Type};

use crate::unix_path::SocketFile;
use crate::{PeerAddr, Spec, Stream, sys};

/// A listening TCP or Unix stream socket.
///
/// # Always nonblocking
///
/// A listening socket may be shared by several processes (its descriptor duplicated over
/// `SCM_RIGHTS`), and `O_NONBLOCK` belongs to the file description they share: if one process
/// switched it, every other process's accept would change behaviour under it. So a `Listener`
/// is put in `O_NONBLOCK` mode once, when bound or adopted, and never switched back.
/// [`accept`](Listener::accept) still blocks, by waiting in `poll(2)` and retrying;
/// [`try_accept`](Listener::try_accept) does not. Accepted [`Stream`]s are blocking and
/// close-on-exec.
///
/// Dropping a listener closes its descriptor but leaves a Unix socket file in place (other
/// processes may still hold the socket); the next bind of that path removes it if it is stale
/// (see [`BindOptions::remove_stale`](crate::BindOptions::remove_stale)).
#[derive(Debug)]
pub struct Listener {
    inner: Inner,
    /// For a Unix listener bound by path: the absolute path asked for, which
    /// `getsockname` cannot give when the bind used a shortened relative path.
    path: Option<PathBuf>,
    /// For a Unix listener this process bound by path: the socket file its bind created.
    socket_file: Option<SocketFile>,
}

#[derive(Debug)]
enum Inner {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Wraps a socket this crate bound, listened on and made nonblocking.
    pub(crate) fn new(socket: Socket, unix: bool, path: Option<PathBuf>) -> Listener {
        let inner = if unix { Inner::Unix(socket.into()) } else { Inner::Tcp(socket.into()) };
        Listener { inner, path, socket_file: None }
    }

    /// The socket file this listener's bind created, recorded right after `bind(2)`: the
    /// only file [`SocketFile::remove_if_at`] may remove for it. `None` for TCP, abstract
    /// names and adopted descriptors.
    pub fn socket_file(&self) -> Option<SocketFile> {
        self.socket_file
    }

    pub(crate) fn with_socket_file(mut self, file: Option<SocketFile>) -> Listener {
        self.socket_file = file;
        self
    }

    /// Adopts a listening socket, e.g. one received from another process: it must be a
    /// `SOCK_STREAM` socket of `AF_INET`, `AF_INET6` or `AF_UNIX` on which `listen` was called
    /// (`SO_ACCEPTCONN`). It is put in `O_NONBLOCK` mode (see [the type's docs](Listener)).
    ///
    /// On error the descriptor is closed; the error (`InvalidInput`) says what the socket is
    /// instead.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Listener> {
        let socket = Socket::from(fd);
        let unix = match inspect(&socket)? {
            Kind { ty, .. } if ty != Type::STREAM => {
                return Err(invalid(
                    "not a stream socket: a listener is SOCK_STREAM (a UDP socket is bound, \
                     never listening)",
                ));
            }
            Kind { listening: false, .. } => {
                return Err(invalid("not a listening socket: listen was never called on it"));
            }
            Kind { domain, .. } => is_unix_domain(domain)?,
        };
        socket.set_nonblocking(true)?;
        Ok(Listener::new(socket, unix, None))
    }

    /// Waits for a connection and accepts it (`accept4` with `SOCK_CLOEXEC`).
    ///
    /// Waits in `poll(2)` while nothing is queued, then tries again: another process sharing
    /// the socket may have taken the connection first. `EINTR` and `ECONNABORTED` (a client
    /// that gave up while queued) are retried. A listener shut down while waiting gives
    /// `NotConnected` instead of spinning.
    pub fn accept(&self) -> io::Result<(Stream, PeerAddr)> {
        loop {
            match self.try_accept() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            if sys::poll::wait_readable(self.as_fd())?.hangup {
                return match self.try_accept() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "the listening socket was shut down",
                    )),
                    other => other,
                };
            }
        }
    }

    /// Accepts a connection if one is queued, else fails with `WouldBlock`.
    pub fn try_accept(&self) -> io::Result<(Stream, PeerAddr)> {
        loop {
            // std accepts with `accept4(SOCK_CLOEXEC)`; without `SOCK_NONBLOCK` the new
            // socket is blocking whatever the listener's mode (Linux does not inherit it).
            let accepted = match &self.inner {
                Inner::Tcp(l) => l.accept().map(|(s, a)| (Stream::Tcp(s), PeerAddr::Tcp(a))),
                Inner::Unix(l) => l.accept().map(|(s, a)| (Stream::Unix(s), PeerAddr::Unix(a))),
            };
            match accepted {
                Err(e) if is_transient(&e) => continue,
                other => return other,
            }
        }
    }

    /// As [`try_accept`](Listener::try_accept), but the accepted stream is nonblocking, for an
    /// event loop: a TCP connection is accepted so (`accept4(2)` with `SOCK_NONBLOCK`, one
    /// system call less than switching it after); a Unix one is switched after its accept.
    pub fn try_accept_nonblocking(&self) -> io::Result<(Stream, PeerAddr)> {
        loop {
            let accepted = match &self.inner {
                Inner::Tcp(l) => sys::accept::accept_tcp_nonblocking(l.as_fd())
                    .map(|(fd, a)| (Stream::Tcp(fd.into()), PeerAddr::Tcp(a))),
                Inner::Unix(l) => l.accept().and_then(|(s, a)| {
                    s.set_nonblocking(true)?;
                    Ok((Stream::Unix(s), PeerAddr::Unix(a)))
                }),
            };
            match accepted {
                Err(e) if is_transient(&e) => continue,
                other => return other,
            }
        }
    }

    /// The address this listener is bound to: the real port after a bind to port 0; for a
    /// Unix listener bound by path, the absolute path asked for (even when the bind used a
    /// shortened relative path); an abstract name as [`Spec::UnixAbstract`].
    pub fn local_addr(&self) -> io::Result<Spec> {
        if let Some(path) = &self.path {
            return Ok(Spec::Unix(path.clone()));
        }
        match &self.inner {
            Inner::Tcp(l) => l.local_addr().map(Spec::Tcp),
            Inner::Unix(l) => unix_spec(&l.local_addr()?),
        }
    }

    /// Stops listening, for every process that holds this socket, at once: `shutdown(2)` with
    /// `SHUT_RD` acts on the socket, not on this descriptor, so copies passed to other processes
    /// stop too (their descriptors stay open until each closes its own).
    ///
    /// - TCP (Linux): the socket leaves the `LISTEN` state; a new connection attempt is refused
    ///   (`ECONNREFUSED` at the client, from the kernel's reset), connections the kernel had
    ///   queued but nobody accepted yet are reset (or, in a `SO_REUSEPORT` group that allows
    ///   it, migrated to another socket of the group). Every holder's accept then fails with
    ///   `EINVAL` and `poll` reports a hang-up: [`accept`](Listener::accept) returns
    ///   `NotConnected`.
    /// - Unix: `connect(2)` fails with `ECONNREFUSED`; connections already queued can still be
    ///   accepted, and `poll` reports `POLLRDHUP`.
    ///
    /// # Errors
    /// `shutdown(2)`'s: `ENOTCONN` on Linux only for a socket that is not listening any more.
    pub fn stop_listening(&self) -> io::Result<()> {
        socket2::SockRef::from(self).shutdown(std::net::Shutdown::Read)
    }

    /// Whether this is a Unix socket listener (else TCP).
    pub fn is_unix(&self) -> bool {
        matches!(self.inner, Inner::Unix(_))
    }

    /// A second handle on the same listening socket (`F_DUPFD_CLOEXEC`), e.g. to accept on
    /// several threads.
    pub fn try_clone(&self) -> io::Result<Listener> {
        let inner = match &self.inner {
            Inner::Tcp(l) => Inner::Tcp(l.try_clone()?),
            Inner::Unix(l) => Inner::Unix(l.try_clone()?),
        };
        Ok(Listener { inner, path: self.path.clone(), socket_file: self.socket_file })
    }

    /// The std TCP listener, or `self` back if this is a Unix listener. It is nonblocking, as
    /// `tokio::net::TcpListener::from_std` requires; do not make it blocking if the socket is
    /// shared with other processes.
    pub fn into_tcp_listener(self) -> Result<TcpListener, Listener> {
        match self.inner {
            Inner::Tcp(l) => Ok(l),
            Inner::Unix(_) => Err(self),
        }
    }

    /// The std Unix listener, or `self` back if this is a TCP listener. It is nonblocking, as
    /// `tokio::net::UnixListener::from_std` requires; do not make it blocking if the socket
    /// is shared with other processes.
    pub fn into_unix_listener(self) -> Result<UnixListener, Listener> {
        match self.inner {
            Inner::Unix(l) => Ok(l),
            Inner::Tcp(_) => Err(self),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.inner {
            Inner::Tcp(l) => l.as_fd(),
            Inner::Unix(l) => l.as_fd(),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl From<Listener> for OwnedFd {
    fn from(listener: Listener) -> OwnedFd {
        match listener.inner {
            Inner::Tcp(l) => l.into(),
            Inner::Unix(l) => l.into(),
        }
    }
}

/// What the kernel says a socket is.
pub(crate) struct Kind {
    /// `SO_DOMAIN`.
    pub(crate) domain: Domain,
    /// `SO_TYPE`.
    pub(crate) ty: Type,
    /// `SO_ACCEPTCONN`.
    pub(crate) listening: bool,
}

/// Reads a socket's domain, type and listening state; fails with `ENOTSOCK` on a descriptor
/// that is not a socket.
pub(crate) fn inspect(socket: &Socket) -> io::Result<Kind> {
    Ok(Kind { domain: socket.domain()?, ty: socket.r#type()?, listening: socket.is_listener()? })
}

/// Whether a stream socket domain is Unix (else IP); an error for the domains this crate does
/// not handle.
pub(crate) fn is_unix_domain(domain: Domain) -> io::Result<bool> {
    match domain {
        Domain::IPV4 | Domain::IPV6 => Ok(false),
        Domain::UNIX => Ok(true),
        other => Err(invalid(format!("socket domain {other:?}: expected IPv4, IPv6 or Unix"))),
    }
}

/// `ECONNABORTED` (a client that gave up while queued: take the next one) or `EINTR`.
fn is_transient(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted)
}

/// An `InvalidInput` error saying what a descriptor is instead of what was wanted.
pub(crate) fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.into())
}

/// A named Unix socket address as a [`Spec`].
fn unix_spec(address: &UnixSocketAddr) -> io::Result<Spec> {
    if let Some(path) = address.as_pathname() {
        return Ok(Spec::Unix(path.to_path_buf()));
    }
    match address.as_abstract_name() {
        Some(name) => Ok(Spec::UnixAbstract(name.to_vec())),
        None => Err(io::Error::other("the unix socket has no name")),
    }
}
