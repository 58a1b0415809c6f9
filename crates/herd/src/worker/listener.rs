//! A worker's listeners: one type whatever the policy, so the application does not care how
//! connections reach it.

use std::io::{self, Read, Write};
use std::net::UdpSocket;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use herd_handle::{BindOptions, PeerAddr, Spec, Stream};
use herd_ipc::Channel;
use herd_registry::Key;
use herd_registry::wire::{FromWorker, ToWorker};

use super::Worker;
use crate::protocol::{Failure, GrantMode, ToPrimary, WireOptions};
use crate::sys;

/// How long a blocking accept waits after running out of descriptors before trying again.
const EXHAUSTION_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Options of one listen (Node's `server.listen(options)` and `server.maxConnections`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenOptions {
    /// Bind in this worker, not through the primary: nothing is shared (Node's `exclusive`).
    pub exclusive: bool,
    /// The listen backlog; default 511. For a shared handle, the first requester's applies.
    pub backlog: Option<i32>,
    /// `IPV6_V6ONLY`.
    pub ipv6_only: bool,
    /// Make a unix socket file readable by all.
    pub readable_all: bool,
    /// Make a unix socket file writable by all.
    pub writable_all: bool,
    /// Under `rr` and `least-conn`: refuse a handed-off connection while this many taken ones
    /// are open, so the primary gives it to another worker (Node's `maxConnections`).
    pub max_connections: Option<usize>,
}

impl ListenOptions {
    fn wire(&self) -> WireOptions {
        WireOptions {
            backlog: self.backlog,
            ipv6_only: self.ipv6_only,
            readable_all: self.readable_all,
            writable_all: self.writable_all,
        }
    }
}

/// A listener in a worker.
///
/// Under `none` and `reuseport` it is a listening socket the worker accepts on; under `rr` and
/// `least-conn` it is the worker's hand-off channel, on which the primary sends connections
/// and the worker acknowledges each as it takes it. Either way [`AsFd`] is readable when
/// [`try_accept`](Listener::try_accept) has something, so tokio's `AsyncFd`, mio or polling can
/// drive it. Dropping it tells the primary this worker no longer listens there.
pub struct Listener {
    kind: Kind,
    worker: Worker,
    address: Spec,
    /// Tells the primary when dropped; `None` for an exclusive listen, which the primary
    /// knows nothing about.
    _registration: Option<Registration>,
}

enum Kind {
    Socket(herd_handle::Listener),
    Handoff(Handoff),
}

struct Handoff {
    channel: Arc<Channel>,
    report_closes: bool,
    open: Arc<AtomicUsize>,
    max_connections: Option<usize>,
    /// Threads waiting in a blocking [`Listener::accept`] on this channel: the credit each
    /// ack carries (`FromWorker::Ack`'s `idle`), so the primary sends a thread-per-connection
    /// worker as many connections at once as there are threads waiting for them.
    waiting: AtomicUsize,
}

/// What dropping a listener must undo.
struct Registration {
    worker: Worker,
    spec: Spec,
    key: Key,
}

impl Registration {
    /// Tells the primary the listen succeeded (Node's `listening`, once per listen).
    fn announce(&self, address: &Spec) {
        self.worker.notify_primary(&ToPrimary::Listening {
            spec: self.spec.to_string(),
            index: self.key.index(),
            address: address.to_string(),
        });
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.worker.notify_primary(&ToPrimary::Close {
            spec: self.spec.to_string(),
            index: self.key.index(),
        });
        self.worker.inner.indexes.lock().unwrap_or_else(|p| p.into_inner()).release(&self.key);
    }
}

pub(super) fn listen(worker: &Worker, spec: Spec, options: &ListenOptions) -> io::Result<Listener> {
    if options.exclusive {
        let bind_options = BindOptions {
            backlog: options.backlog.unwrap_or(BindOptions::default().backlog),
            ipv6_only: options.ipv6_only,
            readable_all: options.readable_all,
            writable_all: options.writable_all,
            ..BindOptions::default()
        };
        let listener =
            herd_handle::bind(&spec, &bind_options)?.into_listener().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("listen {spec}: not a stream socket"),
                )
            })?;
        let address = listener.local_addr()?;
        return Ok(Listener {
            kind: Kind::Socket(listener),
            worker: worker.clone(),
            address,
            _registration: None,
        });
    }
    let (mode, address, fd, registration) = query(worker, &spec, options.wire())?;
    let kind = match mode {
        GrantMode::Listener => Kind::Socket(herd_handle::Listener::from_fd(fd)?),
        GrantMode::Handoff { report_closes } => Kind::Handoff(Handoff {
            channel: Arc::new(Channel::from_fd(fd)?),
            report_closes,
            open: Arc::new(AtomicUsize::new(0)),
            max_connections: options.max_connections,
            waiting: AtomicUsize::new(0),
        }),
        GrantMode::Datagram => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("listen {spec}: a datagram socket"),
            ));
        }
    };
    registration.announce(&address);
    if let Kind::Handoff(handoff) = &kind {
        let mut handoffs = worker.inner.handoffs.lock().unwrap_or_else(|p| p.into_inner());
        handoffs.retain(|c| c.strong_count() > 0);
        handoffs.push(Arc::downgrade(&handoff.channel));
    }
    Ok(Listener { kind, worker: worker.clone(), address, _registration: Some(registration) })
}

pub(super) fn bind_udp(worker: &Worker, spec: Spec) -> io::Result<Datagram> {
    let (mode, address, fd, registration) = query(worker, &spec, WireOptions::default())?;
    if mode != GrantMode::Datagram {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bind {spec}: not a datagram socket"),
        ));
    }
    registration.announce(&address);
    Ok(Datagram { socket: UdpSocket::from(fd), address, _registration: registration })
}

/// Asks the primary for `spec` under the next index, as Node's `_getServer`.
fn query(
    worker: &Worker,
    spec: &Spec,
    options: WireOptions,
) -> io::Result<(GrantMode, Spec, OwnedFd, Registration)> {
    let key = worker.inner.indexes.lock().unwrap_or_else(|p| p.into_inner()).take(spec);
    let release =
        |key: &Key| worker.inner.indexes.lock().unwrap_or_else(|p| p.into_inner()).release(key);
    let reply = worker.request(spec, &key, options);
    let (result, fds) = match reply {
        Ok(reply) => reply,
        Err(e) => {
            release(&key);
            return Err(e);
        }
    };
    match result {
        Ok((mode, address)) => {
            let fd = fds.into_iter().next();
            let address = address.parse::<Spec>().ok();
            let (Some(fd), Some(address)) = (fd, address) else {
                release(&key);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("listen {spec}: malformed reply from the primary"),
                ));
            };
            let registration = Registration { worker: worker.clone(), spec: spec.clone(), key };
            Ok((mode, address, fd, registration))
        }
        Err(failure) => {
            release(&key);
            Err(rebuild(failure))
        }
    }
}

/// The primary's error, rebuilt here with the same errno, operation and address.
fn rebuild(failure: Failure) -> io::Error {
    let source = match failure.errno {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::new(io::ErrorKind::InvalidInput, failure.message),
    };
    let op: &'static str = match failure.op.as_str() {
        "bind" => "bind",
        "listen" => "listen",
        "socket" => "socket",
        "chmod" => "chmod",
        "recvmsg" => "recvmsg",
        _ => "listen",
    };
    herd_handle::Error::new(op, failure.address, source).into()
}

impl Listener {
    /// Waits for a connection.
    ///
    /// At the descriptor limit (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM` from `accept(2)`) it
    /// waits 50 ms and tries again, until a descriptor is free: the
    /// connection stays queued in the kernel meanwhile, and the worker does not spin a core
    /// retrying (as the primary pauses its own accepts). A disconnect still ends the wait.
    ///
    /// A listening socket the primary shut down (a stop, or this worker's `reuseport` place
    /// given up: see [`Primary::disconnect_all`](crate::Primary::disconnect_all)) is always
    /// followed by this worker's disconnect, which may still be on its way: the accept waits
    /// for it, rather than fail or spin on a socket that will never yield a connection again.
    ///
    /// # Errors
    /// `NotConnected` once the worker is disconnecting: it takes no new connection.
    pub fn accept(&self) -> io::Result<Connection> {
        match &self.kind {
            Kind::Socket(listener) => loop {
                match self.try_accept() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Another worker may win the race for the connection; a disconnect
                        // wakes this wait through `stop`.
                        let stop = self.worker.inner.stop.as_fd();
                        if sys::wait_either(listener.as_fd(), stop)? {
                            // Shut down (a unix socket polls so with nothing queued): only the
                            // disconnect is left to wait for.
                            match self.try_accept() {
                                // A TCP socket shut down says EINVAL (NotConnected here).
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                                    ) =>
                                {
                                    return self.await_disconnect();
                                }
                                other => return other,
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                        return self.await_disconnect();
                    }
                    Err(e) if herd_handle::is_resource_exhaustion(&e) => {
                        // The listener stays readable while the connection waits: polling it
                        // would return at once. Wait on the disconnect alone, for a while.
                        sys::wait_readable_for(self.worker.inner.stop.as_fd(), EXHAUSTION_PAUSE)?;
                    }
                    other => return other,
                }
            },
            Kind::Handoff(handoff) => {
                self.check_connected()?;
                handoff.accept(&self.worker, false, false)
            }
        }
    }

    /// A connection if one is ready, `WouldBlock` otherwise.
    ///
    /// # Errors
    /// `NotConnected` once the worker is disconnecting, and for a TCP listening socket the
    /// primary shut down (its disconnect follows: stop accepting). At the descriptor limit,
    /// the accept's error (see [`herd_handle::is_resource_exhaustion`]): the connection stays
    /// queued, and an event loop should pause before trying again, since the listener stays
    /// readable.
    pub fn try_accept(&self) -> io::Result<Connection> {
        self.try_accept_as(false)
    }

    /// [`try_accept`](Listener::try_accept) for an event loop: the stream comes nonblocking,
    /// accepted so (`SOCK_NONBLOCK`) or handed off so once the primary knows (see
    /// [`declare_event_loop`](Listener::declare_event_loop)), so no `ioctl` is needed.
    #[cfg(feature = "tokio")]
    pub(crate) fn try_accept_nonblocking(&self) -> io::Result<Connection> {
        self.try_accept_as(true)
    }

    /// Tells the primary that this listener's hand-offs are taken by an event loop, which reads
    /// each as it arrives: the primary then accepts them nonblocking (once every worker of the
    /// handle has said so) and sends several at once (see `FromWorker::EventLoop`). Nothing
    /// for a listening socket, which
    /// [`try_accept_nonblocking`](Listener::try_accept_nonblocking) accepts nonblocking itself.
    #[cfg(feature = "tokio")]
    pub(crate) fn declare_event_loop(&self) -> io::Result<()> {
        match &self.kind {
            Kind::Socket(_) => Ok(()),
            Kind::Handoff(handoff) => {
                Ok(handoff.channel.send_value(&FromWorker::EventLoop, &[])?)
            }
        }
    }

    fn try_accept_as(&self, nonblocking: bool) -> io::Result<Connection> {
        self.check_connected()?;
        match &self.kind {
            // Accepted under the worker's lock, so a disconnect's drain cannot see zero open
            // connections between this accept and its count (and exit with it unserved).
            Kind::Socket(listener) => self
                .worker
                .inner
                .open_with(|| {
                    if nonblocking {
                        listener.try_accept_nonblocking()
                    } else {
                        listener.try_accept()
                    }
                })
                .map(|(stream, peer)| {
                    let guard = CloseGuard::new(&self.worker, None);
                    Connection { stream, peer: Some(peer), guard }
                })
                .map_err(|e| {
                    // `EINVAL` from accept(2): the socket is not listening any more.
                    if e.kind() == io::ErrorKind::InvalidInput {
                        io::Error::new(
                            io::ErrorKind::NotConnected,
                            "the listening socket was shut down by the primary (the cluster is \
                             stopping, or this worker's place was given up)",
                        )
                    } else {
                        e
                    }
                }),
            Kind::Handoff(handoff) => handoff.accept(&self.worker, true, nonblocking),
        }
    }

    /// Waits until this worker is disconnecting (the primary shut its socket down, and the
    /// disconnect that always follows may still be on its way), then says so.
    fn await_disconnect(&self) -> io::Result<Connection> {
        while !self.worker.is_disconnecting() {
            sys::wait_readable(self.worker.inner.stop.as_fd())?;
        }
        Err(io::Error::new(io::ErrorKind::NotConnected, "the worker is disconnecting"))
    }

    /// Connections as they come (blocking). Ends when the worker disconnects.
    pub fn incoming(&self) -> impl Iterator<Item = io::Result<Connection>> + '_ {
        std::iter::from_fn(move || match self.accept() {
            Err(_) if self.worker.is_disconnecting() => None,
            other => Some(other),
        })
    }

    fn check_connected(&self) -> io::Result<()> {
        if self.worker.is_disconnecting() {
            Err(io::Error::new(io::ErrorKind::NotConnected, "the worker is disconnecting"))
        } else {
            Ok(())
        }
    }

    /// The address, with the real port when port 0 was asked (Node's `server.address()`).
    pub fn local_addr(&self) -> &Spec {
        &self.address
    }

    /// Whether connections arrive from the primary (`rr`, `least-conn`) rather than from a
    /// socket this worker accepts on.
    pub fn is_handoff(&self) -> bool {
        matches!(self.kind, Kind::Handoff(_))
    }

    /// The worker this listener belongs to.
    #[cfg(feature = "tokio")]
    pub(crate) fn worker(&self) -> &Worker {
        &self.worker
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.kind {
            Kind::Socket(listener) => listener.as_fd(),
            Kind::Handoff(handoff) => handoff.channel.as_fd(),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl Handoff {
    /// Takes the next connection the primary handed over (waiting for one unless `try_`),
    /// its stream in blocking mode or, with `nonblocking`, nonblocking.
    fn accept(&self, worker: &Worker, try_: bool, nonblocking: bool) -> io::Result<Connection> {
        loop {
            let received = if try_ {
                self.channel.try_recv_value::<ToWorker>()
            } else {
                self.waiting.fetch_add(1, Ordering::SeqCst);
                let received = self.channel.recv_value::<ToWorker>();
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                received
            };
            let (ToWorker::NewConn { conn, tcp_peer, nonblocking: sent_nonblocking }, fds) =
                match received {
                    Ok(received) => received,
                    // The connection's descriptor was lost on the way in (this process is at its
                    // descriptor limit): defer it, so the primary, which still holds it, gives it
                    // to another worker or to this one after a pause, and never closes it for
                    // this. Unanswered, it would count against this worker forever.
                    Err(e) => match e.truncated_value::<ToWorker>() {
                        Some(ToWorker::NewConn { conn, .. }) => {
                            self.channel.send_value(&FromWorker::Deferred { conn }, &[])?;
                            continue;
                        }
                        None => return Err(e.into()),
                    },
                };
            // The place under `max_connections` is taken before anything else, in one atomic
            // step, so acceptor threads racing here cannot together exceed the limit.
            let reserved = self.reserve();
            // The primary accepted it from its own listening socket and says what it is: no
            // system call to ask the kernel (three `getsockopt`s), nor for the peer.
            let stream = match fds.into_iter().next() {
                Some(fd) if reserved => Some(match tcp_peer {
                    Some(_) => Stream::Tcp(fd.into()),
                    None => Stream::Unix(fd.into()),
                })
                .filter(|stream| {
                    sent_nonblocking == nonblocking || stream.set_nonblocking(nonblocking).is_ok()
                }),
                _ => None,
            };
            // Counted before the ack, under the worker's lock: a disconnect either comes first
            // (refuse) or waits for this connection.
            let taken = stream.filter(|_| worker.inner.open_with(|| Ok(())).is_ok());
            let Some(stream) = taken else {
                if reserved {
                    self.open.fetch_sub(1, Ordering::SeqCst);
                }
                // Refused: the primary still holds the connection and gives it to another worker
                // (and sends this one no more at once: it is full).
                let refusal = FromWorker::Ack { conn, accepted: false, idle: 0 };
                self.channel.send_value(&refusal, &[])?;
                continue;
            };
            // If this ack cannot be sent the connection is dropped here: the primary, seeing
            // no ack before end of stream, gives its own copy to another worker.
            let idle = u32::try_from(self.waiting.load(Ordering::SeqCst)).unwrap_or(u32::MAX);
            if let Err(e) =
                self.channel.send_value(&FromWorker::Ack { conn, accepted: true, idle }, &[])
            {
                self.open.fetch_sub(1, Ordering::SeqCst);
                worker.inner.connection_closed();
                return Err(e.into());
            }
            let report = Report {
                channel: Arc::downgrade(&self.channel),
                to_primary: self.report_closes,
                open: Arc::clone(&self.open),
            };
            let guard = CloseGuard::new(worker, Some(report));
            return Ok(Connection { stream, peer: tcp_peer.map(PeerAddr::Tcp), guard });
        }
    }
}

impl Handoff {
    /// Takes one place among this listener's open connections: `false` when
    /// `max_connections` are open already. Check and increment are one atomic step.
    fn reserve(&self) -> bool {
        match self.max_connections {
            None => {
                self.open.fetch_add(1, Ordering::SeqCst);
                true
            }
            Some(max) => self
                .open
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
                .is_ok(),
        }
    }
}

/// Refuses every connection queued on a hand-off channel, then half-closes it: the primary
/// reads the refusals (and any ack sent before), then end of stream, and gives every
/// connection this worker did not take to another worker. No connection is served twice or
/// lost.
pub(super) fn refuse_queued(channel: &Channel) {
    while let Ok((ToWorker::NewConn { conn, .. }, _fds)) = channel.try_recv_value::<ToWorker>() {
        if channel.send_value(&FromWorker::Ack { conn, accepted: false, idle: 0 }, &[]).is_err() {
            break;
        }
    }
    let _ = channel.shutdown_write();
}

/// An accepted connection. Reads and writes as its stream; while it lives it counts as one of
/// the worker's open connections (a disconnecting worker waits for it), and when it is dropped
/// a connection that came from the primary is reported closed (what `least-conn` counts and
/// `max_connections` checks). [`into_parts`](Connection::into_parts) hands out the stream and
/// the [`CloseGuard`] separately, for code that needs the std type; async code uses
/// `herd::tokio::Stream` (feature `tokio`), which holds both.
pub struct Connection {
    stream: Stream,
    /// The peer as `accept(2)` gave it (the primary's, for a TCP connection it handed over);
    /// `None` for a Unix-domain connection handed over.
    peer: Option<PeerAddr>,
    guard: CloseGuard,
}

/// Counts one accepted connection while it lives: the worker's drain on disconnect waits for
/// it, `max_connections` counts it, and (under `least-conn`) the primary is told when it is
/// dropped. Every connection has one, whatever the policy.
///
/// Dropping it says the connection is closed: keep it exactly as long as the stream from
/// [`Connection::into_parts`]. Dropped early, a disconnecting worker may exit (or its server
/// shut down) with the connection's request still in flight.
#[must_use = "dropping a CloseGuard counts its connection as closed"]
pub struct CloseGuard {
    worker: Worker,
    report: Option<Report>,
}

/// What a handed-off connection reports when it closes.
struct Report {
    channel: Weak<Channel>,
    to_primary: bool,
    open: Arc<AtomicUsize>,
}

impl CloseGuard {
    /// Takes over a connection already counted as open (by `open_with`).
    fn new(worker: &Worker, report: Option<Report>) -> CloseGuard {
        CloseGuard { worker: worker.clone(), report }
    }
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        if let Some(report) = &self.report {
            report.open.fetch_sub(1, Ordering::SeqCst);
            // The listener may be gone, and with it the primary's interest. The report waits
            // for room as acks do: dropped on a full queue, the worker's count in the primary
            // would never come down and `least-conn` would starve it. The primary reads
            // hand-off channels whenever they are readable, so the wait is short.
            if let Some(channel) = report.channel.upgrade().filter(|_| report.to_primary) {
                let _ = channel.send_value(&FromWorker::Closed { count: 1 }, &[]);
            }
        }
        self.worker.inner.connection_closed();
    }
}

impl Connection {
    /// The peer's address (as `accept(2)` gave it, in the primary for a connection it handed
    /// over; `getpeername(2)` for a Unix-domain connection handed over).
    pub fn peer_addr(&self) -> io::Result<PeerAddr> {
        match &self.peer {
            Some(peer) => Ok(peer.clone()),
            None => self.stream.peer_addr(),
        }
    }

    /// The stream.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The stream and its [`CloseGuard`], which every connection has: keep the guard exactly
    /// as long as the stream (dropping it counts the connection as closed).
    pub fn into_parts(self) -> (Stream, CloseGuard) {
        (self.stream, self.guard)
    }

    /// The stream, the peer and the guard, for the async layer.
    #[cfg(feature = "tokio")]
    pub(crate) fn into_all(self) -> io::Result<(Stream, PeerAddr, CloseGuard)> {
        let peer = match self.peer {
            Some(peer) => peer,
            None => self.stream.peer_addr()?,
        };
        Ok((self.stream, peer, self.guard))
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// A UDP socket shared by every worker (UDP is always shared, as in Node). Derefs to
/// [`UdpSocket`]; dropping it tells the primary.
pub struct Datagram {
    socket: UdpSocket,
    address: Spec,
    _registration: Registration,
}

impl Datagram {
    /// The bound address, with the real port.
    pub fn local_addr(&self) -> &Spec {
        &self.address
    }
}

impl Deref for Datagram {
    type Target = UdpSocket;

    fn deref(&self) -> &UdpSocket {
        &self.socket
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    use herd_ipc::Channel;
    use herd_registry::wire::{FromWorker, ToWorker};

    use super::{CloseGuard, Report};
    use crate::Worker;
    use crate::sys;

    const DEADLINE: Duration = Duration::from_secs(20);

    /// Waits until `done` holds, within [`DEADLINE`].
    #[track_caller]
    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < DEADLINE, "{what}: not within {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Starts `f` on a thread and waits until it has either finished or blocked in `sendmsg`.
    fn until_blocked_in_send(f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            tid_tx.send(sys::thread_id()).unwrap();
            f();
        });
        let tid = tid_rx.recv().unwrap();
        wait_until("the thread ends or blocks", || {
            thread.is_finished() || sys::blocked_in_sendmsg(tid)
        });
        thread
    }

    /// A hand-off channel with its primary's end, for a worker of its own (its control channel's
    /// other end is returned so it stays open), taking at most `max_connections`.
    fn handoff_for_test(
        max_connections: Option<usize>,
    ) -> (Channel, Channel, Worker, Arc<super::Handoff>) {
        let (primary, worker_end) = Channel::pair().unwrap();
        let (control, other) = Channel::pair().unwrap();
        let worker = Worker::for_test(control).unwrap();
        let handoff = Arc::new(super::Handoff {
            channel: Arc::new(worker_end),
            report_closes: false,
            open: Arc::new(AtomicUsize::new(0)),
            max_connections,
            waiting: AtomicUsize::new(0),
        });
        (primary, other, worker, handoff)
    }

    /// `max_connections` holds with several acceptor threads: the place is taken in the same
    /// atomic step as the check. Built so that two threads pass the check before either
    /// counts its connection: the channel back to the primary is full, so each blocks sending
    /// its ack, after deciding.
    #[test]
    fn max_connections_holds_across_acceptor_threads() {
        let (primary, _control, worker, handoff) = handoff_for_test(Some(1));
        // Fill the worker → primary direction, so every ack waits for the primary to read.
        while handoff.channel.try_send(b"filler", &[]).is_ok() {}
        let mut clients = Vec::new();
        for conn in [1, 2] {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            clients.push(ours);
            let fd = std::os::fd::OwnedFd::from(theirs);
            primary
                .send_value(
                    &ToWorker::NewConn { conn, tcp_peer: None, nonblocking: false },
                    &[std::os::fd::AsFd::as_fd(&fd)],
                )
                .unwrap();
        }
        let mut threads = Vec::new();
        let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
        for _ in 0..2 {
            let (handoff, worker, accepted) =
                (Arc::clone(&handoff), worker.clone(), Arc::clone(&accepted));
            threads.push(until_blocked_in_send(move || {
                if let Ok(conn) = handoff.accept(&worker, true, false) {
                    accepted.lock().unwrap().push(conn);
                }
            }));
        }
        // Both threads have decided; now read the answers.
        let mut answers = Vec::new();
        while answers.len() < 2 {
            match primary.try_recv() {
                Ok(message) => {
                    if let Ok((FromWorker::Ack { conn, accepted, .. }, _)) = decode(message) {
                        answers.push((conn, accepted));
                    }
                }
                Err(e) if e.is_would_block() => {
                    assert!(threads.iter().any(|t| !t.is_finished()), "answers: {answers:?}");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        for thread in threads {
            thread.join().unwrap();
        }
        answers.sort();
        let taken = answers.iter().filter(|(_, accepted)| *accepted).count();
        assert_eq!(taken, 1, "max_connections = 1, answers {answers:?}");
        assert_eq!(accepted.lock().unwrap().len(), 1);
    }

    /// Each ack carries the worker's credit: how many threads still wait in a blocking
    /// `accept` on the channel once this one took its connection. Two threads wait; the first
    /// hand-off's ack says one still waits, the second's that none does.
    #[test]
    fn an_ack_says_how_many_threads_still_wait_in_accept() {
        let (primary, _control, worker, handoff) = handoff_for_test(None);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (handoff, worker) = (Arc::clone(&handoff), worker.clone());
                std::thread::spawn(move || handoff.accept(&worker, false, false).map(drop))
            })
            .collect();
        wait_until("both threads wait in accept", || {
            handoff.waiting.load(std::sync::atomic::Ordering::SeqCst) == 2
        });
        let mut idles = Vec::new();
        for conn in 1..=2 {
            let (_client, server) = std::os::unix::net::UnixStream::pair().unwrap();
            let fd = std::os::fd::OwnedFd::from(server);
            let message = ToWorker::NewConn { conn, tcp_peer: None, nonblocking: false };
            primary.send_value(&message, &[std::os::fd::AsFd::as_fd(&fd)]).unwrap();
            drop(fd);
            let (answer, _) = primary.recv_value::<FromWorker>().unwrap();
            let FromWorker::Ack { conn: acked, accepted: true, idle } = answer else {
                panic!("not an ack of a taken connection: {answer:?}");
            };
            assert_eq!(acked, conn);
            idles.push(idle);
        }
        assert_eq!(idles, [1, 0], "threads still waiting after each hand-off");
        for thread in threads {
            thread.join().unwrap().unwrap();
        }
    }

    /// A hand-off whose descriptor was lost on the way in (`MSG_CTRUNC`, as at the descriptor
    /// limit; here the worker's end takes no descriptor at all) is deferred, never left
    /// unanswered nor refused: the primary still holds the connection and gives it to another
    /// worker, or to this one after a pause, never closing it for this.
    #[test]
    fn a_hand_off_whose_descriptor_was_lost_is_deferred() {
        let (primary, mut worker_end) = Channel::pair().unwrap();
        worker_end.set_limits(herd_ipc::Limits { max_bytes: 1024, max_fds: 0 });
        let (control, _unused) = Channel::pair().unwrap();
        let worker = Worker::for_test(control).unwrap();
        let handoff = super::Handoff {
            channel: Arc::new(worker_end),
            report_closes: false,
            open: Arc::new(AtomicUsize::new(0)),
            max_connections: None,
            waiting: AtomicUsize::new(0),
        };
        let (_client, server) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = std::os::fd::OwnedFd::from(server);
        primary
            .send_value(
                &ToWorker::NewConn { conn: 5, tcp_peer: None, nonblocking: false },
                &[std::os::fd::AsFd::as_fd(&fd)],
            )
            .unwrap();
        let error = handoff.accept(&worker, true, false).err().expect("nothing to take");
        assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock, "{error}");
        let (answer, _) = primary.try_recv_value::<FromWorker>().expect("an answer");
        assert_eq!(answer, FromWorker::Deferred { conn: 5 });
        assert_eq!(handoff.open.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(worker.open_connections(), 0);
    }

    /// A handed-off TCP connection is adopted as the hand-off says, with no question to the
    /// kernel: its peer is the one the primary's accept got, and its mode is switched only
    /// when it is not what the caller wants.
    #[test]
    fn a_hand_off_is_adopted_with_its_peer_in_the_mode_asked_for() {
        let (primary, worker_end) = Channel::pair().unwrap();
        let (control, _unused) = Channel::pair().unwrap();
        let worker = Worker::for_test(control).unwrap();
        let handoff = super::Handoff {
            channel: Arc::new(worker_end),
            report_closes: false,
            open: Arc::new(AtomicUsize::new(0)),
            max_connections: None,
            waiting: AtomicUsize::new(0),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // (sent nonblocking, wanted nonblocking)
        for (sent, wanted) in [(false, false), (false, true), (true, true), (true, false)] {
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, peer) = listener.accept().unwrap();
            server.set_nonblocking(sent).unwrap();
            let fd = std::os::fd::OwnedFd::from(server);
            let message = ToWorker::NewConn { conn: 1, tcp_peer: Some(peer), nonblocking: sent };
            primary.send_value(&message, &[std::os::fd::AsFd::as_fd(&fd)]).unwrap();
            drop(fd);
            let connection = handoff.accept(&worker, true, wanted).unwrap();
            let (answer, _) = primary.try_recv_value::<FromWorker>().unwrap();
            assert_eq!(answer, FromWorker::Ack { conn: 1, accepted: true, idle: 0 });
            let Some(herd_handle::PeerAddr::Tcp(told)) = connection.peer else {
                panic!("no TCP peer: {:?}", connection.peer)
            };
            assert_eq!(told, peer);
            assert_eq!(peer, client.local_addr().unwrap());
            let flags = std::fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                std::os::fd::AsRawFd::as_raw_fd(&connection.stream)
            ))
            .unwrap();
            let flags = flags.lines().find_map(|l| l.strip_prefix("flags:")).unwrap();
            let nonblocking = u32::from_str_radix(flags.trim(), 8).unwrap() & 0o4000 != 0;
            assert_eq!(nonblocking, wanted, "sent {sent}, wanted {wanted}");
        }
    }

    /// Whether thread `tid` of this process is asleep (`S` in `/proc/self/task/<tid>/stat`):
    /// blocked in a system call, not running.
    fn sleeping(tid: i32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"));
        let stat = stat.unwrap_or_default();
        stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) == Some("S")
    }

    /// A listening socket the primary shut down (a stop) before the worker read its disconnect:
    /// the worker's blocking accept neither fails nor spins; it waits, asleep, for the
    /// disconnect, then says the worker is disconnecting (so `incoming()` ends).
    #[test]
    fn an_accept_on_a_socket_the_primary_shut_down_waits_for_the_disconnect() {
        // Shut down before the accept starts, and while it waits.
        for while_waiting in [false, true] {
            accept_on_a_shut_down_socket_waits_for_the_disconnect(while_waiting);
        }
    }

    fn accept_on_a_shut_down_socket_waits_for_the_disconnect(while_waiting: bool) {
        let (control, _primary) = Channel::pair().unwrap();
        let worker = Worker::for_test(control).unwrap();
        let spec: herd_handle::Spec = "tcp://127.0.0.1:0".parse().unwrap();
        let bound = herd_handle::bind(&spec, &herd_handle::BindOptions::default())
            .unwrap()
            .into_listener()
            .unwrap();
        let primary_copy = bound.try_clone().unwrap();
        let address = bound.local_addr().unwrap();
        let listener = super::Listener {
            kind: super::Kind::Socket(bound),
            worker: worker.clone(),
            address,
            _registration: None,
        };
        if !while_waiting {
            primary_copy.stop_listening().unwrap();
        }
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let accepting = std::thread::spawn(move || {
            tid_tx.send(sys::thread_id()).unwrap();
            listener.accept().err().map(|e| e.kind())
        });
        let tid = tid_rx.recv().unwrap();
        wait_until("the accept ends or sleeps", || accepting.is_finished() || sleeping(tid));
        if while_waiting {
            // The accept sleeps in poll on the listening socket; the shutdown wakes it.
            primary_copy.stop_listening().unwrap();
            wait_until("the accept ends or sleeps again", || {
                accepting.is_finished() || sleeping(tid)
            });
        }
        assert!(
            !accepting.is_finished(),
            "while waiting {while_waiting}: the accept returned: {:?}",
            accepting.join()
        );

        // The disconnect arrives (as `begin_disconnect` marks it, without its drain thread,
        // which would end this test process).
        worker.inner.disconnecting.store(true, std::sync::atomic::Ordering::SeqCst);
        worker.inner.stop.raise();
        let kind = accepting.join().unwrap();
        assert_eq!(kind, Some(std::io::ErrorKind::NotConnected));
    }

    /// Decodes a raw message as the worker's typed frame (fillers are not).
    fn decode(message: herd_ipc::Message) -> Result<(FromWorker, Vec<std::os::fd::OwnedFd>), ()> {
        let (version, body) = message.bytes.split_first().ok_or(())?;
        if *version != herd_ipc::WIRE_VERSION {
            return Err(());
        }
        let value = postcard::from_bytes(body).map_err(|_| ())?;
        Ok((value, message.fds))
    }

    /// A worker's `Closed` reports on a full hand-off channel wait for room; none is dropped.
    /// The primary's end is not read until the dropping thread has either finished (reports
    /// lost: the old behaviour) or is blocked in `sendmsg` on the full queue; then every
    /// report must arrive.
    #[test]
    fn closed_reports_wait_for_room_on_a_full_channel() {
        // Well past what a socket buffer holds (a few hundred small records by default).
        const CONNECTIONS: usize = 4096;
        let (primary, worker_end) = Channel::pair().unwrap();
        let channel = Arc::new(worker_end);
        let (control, _unused) = Channel::pair().unwrap();
        let worker = Worker::for_test(control).unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let guards: Vec<CloseGuard> = (0..CONNECTIONS)
            .map(|_| {
                worker.inner.open_with(|| Ok(())).unwrap();
                open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let report = Report {
                    channel: Arc::downgrade(&channel),
                    to_primary: true,
                    open: Arc::clone(&open),
                };
                CloseGuard::new(&worker, Some(report))
            })
            .collect();
        let dropper = until_blocked_in_send(move || drop(guards));
        let started = Instant::now();
        let mut reported = 0;
        while reported < CONNECTIONS {
            match primary.try_recv_value::<FromWorker>() {
                Ok((FromWorker::Closed { count }, _)) => reported += count as usize,
                Ok((other, _)) => panic!("unexpected {other:?}"),
                Err(e) if e.is_would_block() && !dropper.is_finished() => {
                    assert!(started.elapsed() < DEADLINE, "{reported} of {CONNECTIONS} reports");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{reported} of {CONNECTIONS} close reports arrived: {e}"),
            }
        }
        dropper.join().unwrap();
        assert_eq!(worker.open_connections(), 0);
        assert_eq!(open.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
