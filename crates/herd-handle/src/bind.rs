//! Binding a [`Spec`]: socket, options, bind, listen.

use std::ffi::OsStr;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::listener::{inspect, invalid};
use crate::spec::resolve_path;
use crate::unix_path::SocketFile;
use crate::{BindOptions, Error, Listener, Spec, sys, unix_path};

/// What [`bind`] gives: a stream listener, or a bound UDP socket.
#[derive(Debug)]
pub enum Bound {
    /// A TCP or Unix stream listener.
    Listener(Listener),
    /// A bound UDP socket, blocking as std's are.
    Udp(UdpSocket),
}

impl Bound {
    /// The listener, if this is one.
    pub fn into_listener(self) -> Option<Listener> {
        match self {
            Bound::Listener(listener) => Some(listener),
            Bound::Udp(_) => None,
        }
    }

    /// The UDP socket, if this is one.
    pub fn into_udp(self) -> Option<UdpSocket> {
        match self {
            Bound::Udp(socket) => Some(socket),
            Bound::Listener(_) => None,
        }
    }

    /// The address actually bound, as [`Listener::local_addr`] gives it.
    pub fn local_addr(&self) -> io::Result<Spec> {
        match self {
            Bound::Listener(listener) => listener.local_addr(),
            Bound::Udp(socket) => socket.local_addr().map(Spec::Udp),
        }
    }
}

impl AsFd for Bound {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Bound::Listener(listener) => listener.as_fd(),
            Bound::Udp(socket) => socket.as_fd(),
        }
    }
}

impl From<Bound> for OwnedFd {
    fn from(bound: Bound) -> OwnedFd {
        match bound {
            Bound::Listener(listener) => listener.into(),
            Bound::Udp(socket) => socket.into(),
        }
    }
}

/// Binds `spec` with `options`.
///
/// - TCP and Unix: `socket` (close-on-exec), the options, `bind`, `listen(backlog)`, and
///   `O_NONBLOCK` (see [`Listener`] for why listeners are always nonblocking).
/// - UDP: `socket`, the options, `bind`; the socket stays blocking.
/// - [`Spec::Fd`]: the inherited descriptor is duplicated (`F_DUPFD_CLOEXEC`; the original
///   stays open where it is, made close-on-exec, so no program this process starts inherits
///   it by accident) and inspected: a listening stream socket becomes a [`Listener`]
///   (and its shared file description becomes nonblocking), an IP datagram socket a UDP
///   socket; anything else is an error.
/// - [`Spec::Systemd`]: refused (`InvalidInput`): only a process that took systemd's sockets
///   knows which descriptor the name is, and a herd primary turns it into [`Spec::Fd`] before
///   it binds.
///
/// Every descriptor is owned from the moment it exists, so nothing leaks on an error path; a
/// Unix socket file this call created is removed again if a later step fails.
pub fn bind(spec: &Spec, options: &BindOptions) -> Result<Bound, Error> {
    let at = At(spec);
    match spec {
        Spec::Tcp(address) => bind_tcp(*address, options, at).map(Bound::Listener),
        Spec::Udp(address) => bind_udp(*address, options, at).map(Bound::Udp),
        Spec::Unix(path) => bind_unix_path(path, options, at).map(Bound::Listener),
        Spec::UnixAbstract(name) => bind_abstract(name, options, at).map(Bound::Listener),
        Spec::Fd(fd) => inherit(*fd, at),
        Spec::Systemd { .. } => Err(at.op("bind")(invalid(
            "a socket systemd passed is looked up by the herd primary, which took them at its \
             start; bind its fd:// here",
        ))),
    }
}

/// The spec being bound, named by the error of every step.
#[derive(Clone, Copy)]
struct At<'a>(&'a Spec);

impl<'a> At<'a> {
    /// Makes the error of step `op` (`socket`, `bind`, `listen`, ...).
    fn op(self, op: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
        move |source| Error::new(op, self.0, source)
    }
}

fn bind_tcp(address: SocketAddr, options: &BindOptions, at: At<'_>) -> Result<Listener, Error> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))
        .map_err(at.op("socket"))?;
    if options.reuse_address {
        socket.set_reuse_address(true).map_err(at.op("setsockopt(SO_REUSEADDR)"))?;
    }
    set_ip_options(&socket, address, options, at)?;
    socket.bind(&address.into()).map_err(at.op("bind"))?;
    listen(&socket, options, at)?;
    Ok(Listener::new(socket, false, None))
}

fn bind_udp(address: SocketAddr, options: &BindOptions, at: At<'_>) -> Result<UdpSocket, Error> {
    let socket = Socket::new(Domain::for_address(address), Type::DGRAM, Some(Protocol::UDP))
        .map_err(at.op("socket"))?;
    set_ip_options(&socket, address, options, at)?;
    socket.bind(&address.into()).map_err(at.op("bind"))?;
    Ok(socket.into())
}

/// The options TCP and UDP share: `IPV6_V6ONLY` and `SO_REUSEPORT`.
fn set_ip_options(
    socket: &Socket,
    address: SocketAddr,
    options: &BindOptions,
    at: At<'_>,
) -> Result<(), Error> {
    if address.is_ipv6() {
        socket.set_only_v6(options.ipv6_only).map_err(at.op("setsockopt(IPV6_V6ONLY)"))?;
    }
    if options.reuse_port {
        socket.set_reuse_port(true).map_err(at.op("setsockopt(SO_REUSEPORT)"))?;
    }
    Ok(())
}

fn bind_unix_path(path: &Path, options: &BindOptions, at: At<'_>) -> Result<Listener, Error> {
    // Without a current directory nothing is shortened, and a relative path is reported as
    // it was given.
    let cwd = std::env::current_dir().ok();
    let bind_path = match &cwd {
        Some(cwd) if options.shorten_path => unix_path::shorten(path, cwd),
        _ => path.to_path_buf(),
    };
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(at.op("socket"))?;
    let address = SockAddr::unix(&bind_path).map_err(at.op("bind"))?;
    if let Err(error) = socket.bind(&address) {
        let stale = error.kind() == io::ErrorKind::AddrInUse
            && options.remove_stale
            && unix_path::remove_if_stale(&bind_path);
        if !stale {
            return Err(at.op("bind")(error));
        }
        socket.bind(&address).map_err(at.op("bind"))?;
    }
    // The socket file now exists and is ours: its identity, taken at once, is what may be
    // removed for it later (never a file someone else binds at the path). If a later step
    // fails, remove it, so a failed bind leaves nothing behind. (A failed removal only leaves
    // a stale file, which the next bind clears, so the error reported stays the step's own.)
    let created = SocketFile::at(&bind_path).ok();
    let owned = match options.owner {
        Some((uid, gid)) => std::os::unix::fs::lchown(&bind_path, Some(uid), Some(gid)),
        None => Ok(()),
    };
    let finish = owned
        .map_err(at.op("chown"))
        .and_then(|()| unix_path::set_mode(&bind_path, options).map_err(at.op("chmod")))
        .and_then(|()| listen(&socket, options, at));
    if let Err(error) = finish {
        if let Some(created) = created {
            let _ = created.remove_if_at(&bind_path);
        }
        return Err(error);
    }
    let reported = match &cwd {
        Some(cwd) => resolve_path(path, cwd),
        None => path.to_path_buf(),
    };
    Ok(Listener::new(socket, true, Some(reported)).with_socket_file(created))
}

fn bind_abstract(name: &[u8], options: &BindOptions, at: At<'_>) -> Result<Listener, Error> {
    // An empty name would ask the kernel to pick one (autobind): not what a spec names.
    if name.is_empty() {
        return Err(at.op("bind")(invalid("empty abstract socket name")));
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(at.op("socket"))?;
    // A leading NUL byte is how `sun_path` says "abstract".
    let mut path = Vec::with_capacity(name.len() + 1);
    path.push(0);
    path.extend_from_slice(name);
    let address = SockAddr::unix(OsStr::from_bytes(&path)).map_err(at.op("bind"))?;
    socket.bind(&address).map_err(at.op("bind"))?;
    listen(&socket, options, at)?;
    Ok(Listener::new(socket, true, None))
}

/// `listen(backlog)`, then `O_NONBLOCK` for good.
fn listen(socket: &Socket, options: &BindOptions, at: At<'_>) -> Result<(), Error> {
    socket.listen(options.backlog).map_err(at.op("listen"))?;
    socket.set_nonblocking(true).map_err(at.op("fcntl(O_NONBLOCK)"))
}

fn inherit(raw: RawFd, at: At<'_>) -> Result<Bound, Error> {
    let socket = Socket::from(sys::fd::dup_cloexec(raw).map_err(at.op("dup"))?);
    // The original is this process's now (through the copy): no child inherits it.
    sys::fd::set_cloexec(raw).map_err(at.op("fcntl F_SETFD"))?;
    let kind = inspect(&socket).map_err(at.op("inherit"))?;
    let is_ip = kind.domain == Domain::IPV4 || kind.domain == Domain::IPV6;
    if kind.ty == Type::DGRAM && is_ip {
        return Ok(Bound::Udp(socket.into()));
    }
    Listener::from_fd(socket.into()).map(Bound::Listener).map_err(at.op("inherit"))
}
