//! Helpers shared by the integration tests: a primary whose event loop the test drives, the
//! worker side of a hand-off channel, clients, and descriptor inspection. Every wait ends by
//! [`DEADLINE`].
//!
//! Everything runs in the test's process: a "worker" is a [`WorkerId`] and what a worker
//! process would do with its grant, the test does itself.

// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use std::{fs, process};

use herd_handle::{Listener, Spec, Stream, stream_from_fd};
use herd_ipc::Channel;
use herd_registry::wire::{FromWorker, ToWorker};
use herd_registry::{Events, Poller};
use herd_registry::{Grant, Key, Mode, Registry};
use herd_sched::WorkerId;

/// The longest any test waits for anything.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How long one turn of the event loop waits on the poller.
const TICK: Duration = Duration::from_millis(10);

/// Poller keys from here up are the registry's.
const TOKEN_BASE: usize = 1000;

/// The primary: a registry and the poller its handles are registered with. The test runs its
/// event loop one [`turn`](Primary::turn) at a time.
pub struct Primary {
    pub registry: Registry,
    poller: Arc<Poller>,
    events: Events,
}

impl Primary {
    /// A primary with `policy` (`none`, `rr`, `least-conn`, `reuseport`) and at most
    /// `max_in_flight` unacknowledged hand-offs per worker and handle.
    pub fn new(policy: &str, max_in_flight: usize) -> Primary {
        let poller = Arc::new(Poller::new().expect("create a poller"));
        let max_in_flight = NonZeroUsize::new(max_in_flight).expect("max_in_flight > 0");
        let policy = policy.parse().expect("a policy name");
        let registry = Registry::new(policy, max_in_flight, Arc::clone(&poller), TOKEN_BASE);
        Primary { registry, poller, events: Events::new() }
    }

    /// Worker `worker` listens on `spec` (a string) at `index`, with default options.
    #[track_caller]
    pub fn query(&mut self, worker: WorkerId, spec: &str, index: u32) -> Grant {
        let spec: Spec = spec.parse().expect("a valid spec");
        match self.registry.query(worker, &spec, index, &Default::default()) {
            Ok(grant) => grant,
            Err(error) => panic!("query of worker {worker} for {spec}: {error}"),
        }
    }

    /// [`query`](Primary::query) for a worker in place `place` (what the primary does).
    #[track_caller]
    pub fn query_in_place(&mut self, worker: WorkerId, spec: &str, place: usize) -> Grant {
        let spec: Spec = spec.parse().expect("a valid spec");
        match self.registry.query_in_slot(worker, &spec, 0, &Default::default(), Some(place)) {
            Ok(grant) => grant,
            Err(error) => panic!("query of worker {worker} in place {place} for {spec}: {error}"),
        }
    }

    /// One turn of the event loop: wait on the poller at most [`TICK`], pass each of the
    /// registry's events to it, and run its timers. Handles are level-triggered, so a source
    /// not fully handled is reported again on the next turn.
    pub fn turn(&mut self) {
        self.events.clear();
        match self.poller.wait(&mut self.events, Some(TICK)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("poller wait: {e}"),
        }
        for event in self.events.iter() {
            if self.registry.owns(event.key) {
                self.registry.on_event(event.key);
            }
        }
        if self.registry.deadline().is_some_and(|at| at <= Instant::now()) {
            self.registry.on_timer(Instant::now());
        }
    }

    /// Runs the event loop until `done` gives a value, at most [`DEADLINE`]; panics naming
    /// `what` if it never does.
    #[track_caller]
    pub fn run_until<T>(
        &mut self,
        what: &str,
        mut done: impl FnMut(&mut Registry) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(value) = done(&mut self.registry) {
                return value;
            }
            assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
            self.turn();
        }
    }

    /// Runs the event loop until the hand-off handle `key` has had `count` connections
    /// acknowledged as accepted.
    #[track_caller]
    pub fn run_until_delivered(&mut self, key: &Key, count: u64) {
        self.run_until(&format!("{count} connections delivered on {key}"), |registry| {
            let stats = registry.handoff_stats(key).expect("a hand-off handle");
            (stats.delivered >= count).then_some(())
        });
    }

    /// Runs the event loop until one of `workers` receives a connection, which is returned
    /// with the worker that got it.
    #[track_caller]
    pub fn next_conn(&mut self, workers: &[&Worker]) -> (WorkerId, Received) {
        self.run_until("a connection handed to a worker", |_| {
            workers.iter().find_map(|w| w.try_conn().map(|conn| (w.id, conn)))
        })
    }
}

/// A connection handed to a worker: the primary's token and the descriptor that came with it.
#[derive(Debug)]
pub struct Received {
    pub conn: u64,
    pub fd: OwnedFd,
}

impl Received {
    /// The descriptor as a blocking TCP stream with read and write timeouts of [`DEADLINE`].
    #[track_caller]
    pub fn into_tcp(self) -> TcpStream {
        let stream = match stream_from_fd(self.fd) {
            Ok(Stream::Tcp(stream)) => stream,
            Ok(other) => panic!("connection {}: expected a TCP stream, got {other:?}", self.conn),
            Err(e) => panic!("connection {}: not a connected stream: {e}", self.conn),
        };
        set_timeouts(&stream);
        stream
    }
}

/// The worker side of a hand-off grant: its end of the hand-off channel.
pub struct Worker {
    pub id: WorkerId,
    pub channel: Channel,
}

impl Worker {
    /// Takes a [`Mode::Handoff`] grant.
    #[track_caller]
    pub fn new(id: WorkerId, grant: Grant) -> Worker {
        assert_eq!(grant.mode, Mode::Handoff, "worker {id}: grant for {}", grant.key);
        let channel = Channel::from_fd(grant.fd).expect("a hand-off grant is a channel end");
        Worker { id, channel }
    }

    /// The next connection handed to this worker, if one is queued. Every `NewConn` must
    /// carry exactly one descriptor.
    #[track_caller]
    pub fn try_conn(&self) -> Option<Received> {
        match self.channel.try_recv_value::<ToWorker>() {
            Ok((ToWorker::NewConn { conn, .. }, mut fds)) => {
                assert_eq!(
                    fds.len(),
                    1,
                    "worker {}: NewConn {conn} with {} descriptors",
                    self.id,
                    fds.len()
                );
                let fd = fds.pop().expect("one descriptor");
                Some(Received { conn, fd })
            }
            Err(e) if e.is_would_block() => None,
            Err(e) => panic!("worker {}: receive from the primary: {e}", self.id),
        }
    }

    /// Answers the primary's `NewConn { conn }`, with no thread said to wait for more.
    #[track_caller]
    pub fn ack(&self, conn: u64, accepted: bool) {
        self.ack_idle(conn, accepted, 0);
    }

    /// Answers the primary's `NewConn { conn }`, saying `idle` threads wait in `accept`.
    #[track_caller]
    pub fn ack_idle(&self, conn: u64, accepted: bool, idle: u32) {
        self.send(&FromWorker::Ack { conn, accepted, idle });
    }

    /// Sends the primary one message.
    #[track_caller]
    pub fn send(&self, message: &FromWorker) {
        if let Err(e) = self.channel.send_value(message, &[]) {
            panic!("worker {}: send {message:?}: {e}", self.id);
        }
    }
}

/// The TCP address of a grant.
#[track_caller]
pub fn tcp_address(grant: &Grant) -> SocketAddr {
    grant
        .address
        .socket_addr()
        .unwrap_or_else(|| panic!("{}: not an IP address: {}", grant.key, grant.address))
}

/// A client connected to `address`, with read and write timeouts of [`DEADLINE`].
#[track_caller]
pub fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&address, DEADLINE)
        .unwrap_or_else(|e| panic!("connect to {address}: {e}"));
    set_timeouts(&stream);
    stream
}

/// Connects to `address` and writes `byte`, which the server side reads to tell clients apart.
#[track_caller]
pub fn connect_and_write(address: SocketAddr, byte: u8) -> TcpStream {
    let mut stream = connect(address);
    stream.write_all(&[byte]).expect("client write");
    stream
}

/// Reads exactly one byte.
#[track_caller]
pub fn read_byte(stream: &mut TcpStream) -> u8 {
    let mut byte = [0];
    stream.read_exact(&mut byte).expect("read one byte");
    byte[0]
}

/// Reads one byte without consuming it.
#[track_caller]
pub fn peek_byte(stream: &TcpStream) -> u8 {
    let mut byte = [0];
    let n = stream.peek(&mut byte).expect("peek one byte");
    assert_eq!(n, 1, "end of file before the client's byte");
    byte[0]
}

/// Asserts that the peer closed or reset the connection: a read gives end of file or
/// `ECONNRESET`, not data and not a timeout.
#[track_caller]
pub fn assert_closed_by_peer(stream: &mut TcpStream) {
    let mut buf = [0; 16];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("expected end of file, read {n} bytes"),
        Err(e) => panic!("expected end of file or a reset, got {e}"),
    }
}

/// Asserts that nothing listens on `address` any more: a connect is refused.
#[track_caller]
pub fn assert_refused(address: SocketAddr) {
    match TcpStream::connect_timeout(&address, DEADLINE) {
        Ok(_) => panic!("connect to {address}: accepted, expected ECONNREFUSED"),
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "connect to {address}: {e}")
        }
    }
}

fn set_timeouts(stream: &TcpStream) {
    stream.set_read_timeout(Some(DEADLINE)).expect("set read timeout");
    stream.set_write_timeout(Some(DEADLINE)).expect("set write timeout");
}

/// Waits until `fd` is readable (`poll(2)`), at most [`DEADLINE`].
#[track_caller]
pub fn wait_readable(fd: BorrowedFd<'_>) {
    let mut pollfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let timeout = libc::c_int::try_from(DEADLINE.as_millis()).expect("a short deadline");
    loop {
        // SAFETY: one valid pollfd, borrowed for the call; the descriptor is open (borrowed).
        let n = unsafe { libc::poll(&mut pollfd, 1, timeout) };
        match n {
            1 => return,
            0 => panic!("fd {}: not readable within {DEADLINE:?}", fd.as_raw_fd()),
            _ => {
                let e = io::Error::last_os_error();
                assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll: {e}");
            }
        }
    }
}

/// Accepts one connection on `listener` (a worker's shared listening socket), waiting for
/// readability first.
#[track_caller]
pub fn accept(listener: &Listener) -> Stream {
    let deadline = Instant::now() + DEADLINE;
    loop {
        wait_readable(listener.as_fd());
        match listener.try_accept() {
            Ok((stream, _)) => return stream,
            // Another holder of the same socket took it first: wait again.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "accept: nothing within {DEADLINE:?}");
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// The inode of the file (socket) a descriptor refers to: equal for two descriptors exactly
/// when they share one socket.
#[track_caller]
pub fn inode(fd: impl AsFd) -> u64 {
    let path = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    fs::metadata(&path).unwrap_or_else(|e| panic!("stat {path}: {e}")).ino()
}

/// `fcntl(F_GETFD)`: whether `FD_CLOEXEC` is set.
#[track_caller]
pub fn is_cloexec(fd: impl AsFd) -> bool {
    herd_ipc::is_cloexec(fd.as_fd()).expect("fcntl(F_GETFD)")
}

/// How many descriptors the process has open.
#[track_caller]
pub fn open_fds() -> usize {
    // The directory's own descriptor is open while it is read, in every count alike.
    fs::read_dir("/proc/self/fd").expect("read /proc/self/fd").count()
}

/// `getsockopt(SO_REUSEPORT)`.
#[track_caller]
pub fn reuse_port(fd: impl AsFd) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(size_of::<libc::c_int>()).expect("small");
    // SAFETY: `value` and `len` are valid for writes and `len` is `value`'s size; the
    // descriptor is borrowed, so open for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt(SO_REUSEPORT): {}", io::Error::last_os_error());
    value != 0
}

/// A directory under the system temporary directory, removed with everything in it on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory whose name holds the process id, a counter and `tag`.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("herd-registry-{}-{n}-{tag}", process::id()));
        fs::create_dir(&path).expect("create temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
