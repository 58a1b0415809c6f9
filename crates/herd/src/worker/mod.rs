//! The worker side: the control channel to the primary, listening through it, and messages.
//!
//! A background thread reads the control channel: it routes replies to the `listen` calls
//! waiting for them and user messages to an inbox, and ends the process when the primary
//! goes away (end of stream), as a Node worker does on `disconnect`. Another waits for
//! SIGTERM, which disconnects the worker gracefully (gunicorn's workers do the same), so that
//! a SIGTERM sent to every process of a service at once (systemd's default
//! `KillMode=control-group`) loses no request in flight.

mod listener;
mod wait;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once, OnceLock, Weak};

use herd_handle::Spec;
use herd_ipc::Channel;
use herd_registry::{Indexes, Key};

use crate::protocol::{Failure, GrantMode, IPC_FD_VAR, ToPrimary, ToWorker, WireOptions};
use crate::role::{Role, role};
use crate::sys::Notify;
use crate::{Signal, WorkerId, sys};

pub use listener::{CloseGuard, Connection, Datagram, ListenOptions, Listener};
pub use wait::Disconnected;
pub(crate) use wait::Until;

/// This process's side of the cluster (Node's `cluster.worker`). Cheap to clone; every clone
/// is the same worker.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    id: WorkerId,
    channel: Channel,
    seq: AtomicU64,
    state: Mutex<Shared>,
    changed: Condvar,
    /// Readable while the inbox holds a message.
    notify: Notify,
    indexes: Mutex<Indexes>,
    disconnecting: AtomicBool,
    /// Readable once disconnecting: wakes accepts blocked on a listening socket.
    stop: Notify,
    /// The hand-off channels of this worker's listeners, to half-close on disconnect.
    handoffs: Mutex<Vec<Weak<Channel>>>,
    at_exit: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    exiting: Once,
    /// The application asked to be told of the disconnect ([`Worker::disconnected`]): it ends
    /// the process itself, and herd does not exit for it after the drain.
    exit_owned: AtomicBool,
    /// The next id of a [`Disconnected`] future's waker.
    next_waiter: AtomicU64,
}

/// The primary's answer to a query, with the granted descriptor.
type Reply = (Result<(GrantMode, String), Failure>, Vec<OwnedFd>);

#[derive(Default)]
struct Shared {
    replies: HashMap<u64, Reply>,
    inbox: VecDeque<(Vec<u8>, Vec<OwnedFd>)>,
    closed: bool,
    /// Accepted connections not yet dropped, over every listener.
    open: usize,
    /// Tasks waiting for the disconnect, or for the drain's end.
    waiters: wait::Waiters,
}

static WORKER: OnceLock<Result<Worker, String>> = OnceLock::new();

/// This process's [`Worker`], connected on first use: its channel is taken from the
/// environment, SIGTERM is handled, and `online` is sent to the primary.
///
/// From then on SIGTERM disconnects this worker gracefully, exactly as
/// [`Worker::disconnect`] does (the primary is told, so the worker is not respawned): its
/// listeners stop yielding connections, the connections it took are finished, and it exits
/// with 0 (see [`Worker::finish`]; an application that awaits [`Worker::disconnected`] exits
/// by itself). That is what a SIGTERM to the whole service means
/// (systemd's `KillMode=control-group` sends one to the primary and every worker at once, and
/// the primary stops gracefully too), and what `kill <worker pid>` does to one worker. A
/// second SIGTERM changes nothing; SIGKILL still ends the worker at once. The handler acts only
/// in this process (a child it forks and that has not exec'd yet ignores it), and runs beside
/// the application's own SIGTERM handlers (it is registered in signal-hook's registry, which
/// `tokio::signal` and `signal-hook` use too, and which also calls a `sigaction` handler
/// installed before it).
///
/// If the primary is already gone (the channel is closed), the process exits with 0, as a
/// worker does whenever its primary goes away (Node's workers exit on `disconnect`), so a
/// worker started by a primary that has just stopped on an error adds nothing to its report.
///
/// # Errors
/// `NotFound` when this process is not a worker (see [`role`](crate::role)), or the channel
/// cannot be recovered; the error of installing the SIGTERM handler (`pipe2`, `sigaction`).
pub fn worker() -> io::Result<Worker> {
    WORKER
        .get_or_init(|| Worker::connect().map_err(|e| e.to_string()))
        .clone()
        .map_err(io::Error::other)
}

impl Worker {
    fn connect() -> io::Result<Worker> {
        let Role::Worker(id) = role() else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "not a herd worker (HERD_WORKER_ID is not set by a live primary)",
            ));
        };
        let channel = Channel::from_env(IPC_FD_VAR)?;
        let inner = Arc::new(Inner::new(id, channel)?);
        let signals = sys::install_signals(&[Signal::Term])?;
        let watcher = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("herd-sigterm".into())
            .spawn(move || watcher.on_sigterm(&signals))?;
        match inner.channel.send_value(&ToPrimary::Online, &[]) {
            Ok(()) => {}
            // The primary is gone: nothing to serve, nobody to tell.
            Err(herd_ipc::Error::Closed) => std::process::exit(0),
            Err(e) => return Err(e.into()),
        }
        let reader = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("herd-control".into())
            .spawn(move || reader.read_loop())?;
        Ok(Worker { inner })
    }

    /// A worker over `channel` with no background reader, for unit tests of the worker side.
    #[cfg(test)]
    pub(crate) fn for_test(channel: Channel) -> io::Result<Worker> {
        Ok(Worker { inner: Arc::new(Inner::new(1, channel)?) })
    }

    /// This worker's id (Node's `cluster.worker.id`).
    pub fn id(&self) -> WorkerId {
        self.inner.id
    }

    /// Listens on `spec` (`tcp://…`, `host:port`, `unix:…`, `fd://N`, or `systemd:NAME`: a
    /// socket systemd passed the primary, see [`Cluster::primary`](crate::Cluster::primary))
    /// through the primary, with the default options.
    pub fn listen(&self, spec: &str) -> io::Result<Listener> {
        self.listen_with(spec, &ListenOptions::default())
    }

    /// Listens with options. Under every policy the result behaves the same: accept,
    /// nonblocking accept, `incoming()`, `local_addr()`, and `AsFd` for event loops.
    ///
    /// # Errors
    /// The primary's bind error as an `io::Error` of the same kind whose message names the
    /// address (`bind tcp://127.0.0.1:80: Permission denied (os error 13)`); its errno is
    /// reachable through `get_ref()` and `downcast_ref::<herd_handle::Error>()`.
    pub fn listen_with(&self, spec: &str, options: &ListenOptions) -> io::Result<Listener> {
        let spec = parse(spec)?;
        if spec.is_datagram() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("listen {spec}: a UDP address; use bind_udp"),
            ));
        }
        listener::listen(self, spec, options)
    }

    /// Binds a UDP socket through the primary; every worker shares the one socket (as Node).
    pub fn bind_udp(&self, spec: &str) -> io::Result<Datagram> {
        let spec = parse(spec)?;
        listener::bind_udp(self, spec)
    }

    /// Sends a message to the primary, with descriptors (Node's `process.send`).
    pub fn send(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        Ok(self.inner.channel.send_value(&ToPrimary::Message { data: data.to_vec() }, fds)?)
    }

    /// The next message from the primary, waiting for one.
    ///
    /// # Errors
    /// `UnexpectedEof` once the primary is gone and the inbox is empty.
    pub fn recv(&self) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
        let mut state = self.inner.lock();
        loop {
            if let Some(message) = self.inner.pop(&mut state) {
                return Ok(message);
            }
            if state.closed {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            state = self.inner.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The next message if one is waiting (`WouldBlock` otherwise). [`AsFd`] on the worker is
    /// readable while one is.
    pub fn try_recv(&self) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
        let mut state = self.inner.lock();
        self.inner.pop(&mut state).ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))
    }

    /// Disconnects this worker (Node's `worker.disconnect()` in a worker): its listeners stop
    /// yielding connections (`incoming()` ends, `accept` fails), the primary stops handing it
    /// any, and once every connection it took has been dropped the process runs its
    /// [`at_exit`](Worker::at_exit) functions and exits with 0 (unless the application asked
    /// for [`disconnected`](Worker::disconnected): then it ends the process itself). The
    /// primary's `exit` event then says the exit followed a disconnect.
    pub fn disconnect(&self) {
        self.inner.begin_disconnect(true);
    }

    /// Ends this worker at once (Node's `cluster.worker.kill()` in a worker): the primary is
    /// told first that the exit is intended (so it is not respawned, and its `Exit` event says
    /// `after_disconnect`, Node's `exitedAfterDisconnect`), then the process exits with 0
    /// without waiting for anything: its listeners and every connection it holds close with
    /// it (a client whose request was in flight sees the connection closed, or reset if its
    /// request was unread), the connections handed to it and not yet taken go to the other
    /// workers, and the [`at_exit`](Worker::at_exit) functions do not run (they belong to a
    /// graceful exit; [`disconnect`](Worker::disconnect) is the graceful way out).
    pub fn kill(&self) -> ! {
        // On the channel before the exit: the primary reads everything a worker sent before
        // it handles its exit.
        self.notify_primary(&ToPrimary::Disconnecting);
        std::process::exit(0)
    }

    /// Whether this worker is disconnecting (by itself, or told by the primary).
    pub fn is_disconnecting(&self) -> bool {
        self.inner.disconnecting.load(Ordering::SeqCst)
    }

    /// A future that resolves once this worker is disconnecting, for whatever reason: the
    /// primary's [`disconnect`](crate::Primary::disconnect) (a rolling restart, a stop, a
    /// removal), this worker's own [`disconnect`](Worker::disconnect), or SIGTERM (see
    /// [`worker`]). At once if it already is. Made to be handed to a server's graceful
    /// shutdown, such as axum's `with_graceful_shutdown`: it is `Send + 'static` and needs no
    /// particular runtime (the task's waker is kept under the worker's lock and woken by the
    /// disconnect itself).
    ///
    /// **The application owns its exit from this call on.** Without it, a disconnected worker
    /// exits by itself (`std::process::exit(0)`, after its [`at_exit`](Worker::at_exit)
    /// functions) as soon as its last connection is dropped, as a blocking server wants. An
    /// application that asks to be told of the disconnect is taken to drain by itself: herd
    /// then never exits for it after the drain, so the code after its server's
    /// `serve(..).await` runs and the process ends when `main` returns (with status 0 for the
    /// primary's `Exit { after_disconnect: true }`). The [`at_exit`](Worker::at_exit)
    /// functions then run only where herd still ends the process itself: in
    /// [`finish`](Worker::finish), and when the primary goes away. What stays herd's either
    /// way: the primary kills a worker that has not exited [`kill_timeout`] after its
    /// disconnect, and a worker whose primary is gone exits at once.
    ///
    /// [`kill_timeout`]: crate::Cluster::kill_timeout
    pub fn disconnected(&self) -> Disconnected {
        self.inner.exit_owned.store(true, Ordering::SeqCst);
        Disconnected::new(self, Until::Disconnecting)
    }

    /// A future for herd's own use: resolves when `until` holds, and does not take over the
    /// exit.
    #[cfg(feature = "tokio")]
    pub(crate) fn until(&self, until: Until) -> Disconnected {
        Disconnected::new(self, until)
    }

    /// Connections taken by this worker and not yet dropped (counting, for the instant of
    /// the system call, an accept under way).
    pub fn open_connections(&self) -> usize {
        self.inner.lock().open
    }

    /// Runs `f` just before the process exits after a disconnect (or when the primary goes
    /// away): the place to send a last message to the primary, such as final counts.
    pub fn at_exit(&self, f: impl FnOnce() + Send + 'static) {
        self.inner.at_exit.lock().unwrap_or_else(|p| p.into_inner()).push(Box::new(f));
    }

    /// Waits until this worker is disconnecting and every connection it took is dropped, then
    /// runs the [`at_exit`](Worker::at_exit) functions and exits with 0. Call it where a
    /// worker's main loop ends (after `incoming()` ends), so `main` does not return before the
    /// connections still being served are done.
    pub fn finish(&self) -> ! {
        let mut state = self.inner.lock();
        while !(self.is_disconnecting() && state.open == 0) {
            state = self.inner.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        drop(state);
        self.inner.exit()
    }

    /// Sends a request and waits for its reply.
    fn request(&self, spec: &Spec, key: &Key, options: WireOptions) -> io::Result<Reply> {
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let query = ToPrimary::Query { seq, spec: spec.to_string(), index: key.index(), options };
        self.inner.channel.send_value(&query, &[])?;
        let mut state = self.inner.lock();
        loop {
            if let Some(reply) = state.replies.remove(&seq) {
                return Ok(reply);
            }
            if state.closed {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the primary went away"));
            }
            state = self.inner.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn notify_primary(&self, message: &ToPrimary) {
        // The primary may be gone; then there is nobody to tell.
        let _ = self.inner.channel.send_value(message, &[]);
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.inner.id)
            .field("disconnecting", &self.is_disconnecting())
            .finish_non_exhaustive()
    }
}

impl AsFd for Worker {
    /// Readable while a message from the primary waits in the inbox.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.notify.as_fd()
    }
}

impl Inner {
    fn new(id: WorkerId, channel: Channel) -> io::Result<Inner> {
        Ok(Inner {
            id,
            channel,
            seq: AtomicU64::new(0),
            state: Mutex::new(Shared::default()),
            changed: Condvar::new(),
            notify: Notify::new()?,
            indexes: Mutex::new(Indexes::default()),
            disconnecting: AtomicBool::new(false),
            stop: Notify::new()?,
            handoffs: Mutex::new(Vec::new()),
            at_exit: Mutex::new(Vec::new()),
            exiting: Once::new(),
            exit_owned: AtomicBool::new(false),
            next_waiter: AtomicU64::new(0),
        })
    }

    fn begin_disconnect(self: &Arc<Self>, by_worker: bool) {
        if self.disconnecting.swap(true, Ordering::SeqCst) {
            return;
        }
        if by_worker {
            // The primary then stops handing connections here, as for its own disconnect.
            let _ = self.channel.send_value(&ToPrimary::Disconnecting, &[]);
        }
        self.stop.raise();
        {
            let mut state = self.lock();
            state.waiters.wake(Until::Disconnecting);
            if state.open == 0 {
                state.waiters.wake(Until::Idle);
            }
        }
        let handoffs: Vec<Weak<Channel>> =
            std::mem::take(&mut *self.handoffs.lock().unwrap_or_else(|p| p.into_inner()));
        for channel in handoffs.iter().filter_map(Weak::upgrade) {
            listener::refuse_queued(&channel);
        }
        self.changed.notify_all();
        if self.exit_owned.load(Ordering::SeqCst) {
            // The application ends the process itself, after its own drain.
            return;
        }
        let inner = Arc::clone(self);
        // Waits for the connections still open, then exits; `finish` may get there first.
        let _ = std::thread::Builder::new().name("herd-drain".into()).spawn(move || {
            let mut state = inner.lock();
            while state.open > 0 {
                state = inner.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            drop(state);
            // Asked meanwhile: the application owns the exit now.
            if !inner.exit_owned.load(Ordering::SeqCst) {
                inner.exit();
            }
        });
    }

    /// Waits for SIGTERM on the signal pipe's read end, and disconnects this worker as if it
    /// had called [`Worker::disconnect`]. Runs for the life of the process.
    fn on_sigterm(self: &Arc<Self>, signals: &sys::InstalledSignals) {
        loop {
            if sys::wait_readable(signals.as_fd()).is_err() {
                // Polling a pipe we own fails only for want of memory (ENOMEM): try again
                // shortly rather than spin, or give up the handling.
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
            if sys::drain_signals(signals.as_fd()).contains(&Signal::Term) {
                self.begin_disconnect(true);
            }
        }
    }

    /// Runs the at-exit functions once and exits with 0.
    fn exit(&self) -> ! {
        self.exiting.call_once(|| {
            let hooks =
                std::mem::take(&mut *self.at_exit.lock().unwrap_or_else(|p| p.into_inner()));
            for hook in hooks {
                hook();
            }
            std::process::exit(0);
        });
        // Another thread is running the at-exit functions and will exit the process.
        loop {
            std::thread::park();
        }
    }

    /// Runs `take` (an accept) and counts what it gives as an open connection, only while not
    /// disconnecting. The count is taken first, under the lock the disconnect drain waits on,
    /// and given back if `take` fails: a drain that starts during the accept waits for it, and
    /// the lock is not held across the accept's system call (threads accepting at once would
    /// queue on it: measured in issue 13, five `futex` calls per connection).
    fn open_with<T>(&self, take: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        {
            let mut state = self.lock();
            if self.disconnecting.load(Ordering::SeqCst) {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the worker is disconnecting",
                ));
            }
            state.open += 1;
        }
        take().inspect_err(|_| self.connection_closed())
    }

    fn connection_closed(&self) {
        let mut state = self.lock();
        state.open = state.open.saturating_sub(1);
        // What waits on the count (`finish`, the drain thread) waits for zero while
        // disconnecting: a wake-up for any other close, or for an accept given back, would
        // cost a `futex` call per connection for nothing.
        if state.open == 0 && self.disconnecting.load(Ordering::SeqCst) {
            state.waiters.wake(Until::Idle);
            drop(state);
            self.changed.notify_all();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pop(&self, state: &mut Shared) -> Option<(Vec<u8>, Vec<OwnedFd>)> {
        let message = state.inbox.pop_front()?;
        if state.inbox.is_empty() {
            self.notify.clear();
        }
        Some(message)
    }

    fn read_loop(self: &Arc<Self>) {
        loop {
            match self.channel.recv_value::<ToWorker>() {
                Ok((ToWorker::Disconnect, _)) => self.begin_disconnect(false),
                // Answered from this thread: a worker stopped as a whole (SIGSTOP, a debugger)
                // cannot answer; one whose other threads are stuck is caught by its accepts.
                Ok((ToWorker::Ping, _)) => {
                    let _ = self.channel.send_value(&ToPrimary::Pong, &[]);
                }
                Ok((ToWorker::Reply { seq, result }, fds)) => {
                    self.lock().replies.insert(seq, (result, fds));
                    self.changed.notify_all();
                }
                Ok((ToWorker::Message { data }, fds)) => {
                    let mut state = self.lock();
                    if state.inbox.is_empty() {
                        self.notify.raise();
                    }
                    state.inbox.push_back((data, fds));
                    drop(state);
                    self.changed.notify_all();
                }
                Err(herd_ipc::Error::Closed) => break,
                // A reply whose descriptor was lost (this process is at its descriptor limit)
                // still answers its request, as a failure, so the listen does not wait forever.
                Err(e) => {
                    if let Some(ToWorker::Reply { seq, result }) = e.truncated_value::<ToWorker>() {
                        let lost = Failure {
                            op: "recvmsg".into(),
                            address: result.map(|(_, address)| address).unwrap_or_default(),
                            errno: Some(crate::sys::EMFILE),
                            message: "the granted descriptor was lost on the way in \
                                      (MSG_CTRUNC: at the descriptor limit)"
                                .into(),
                        };
                        self.lock().replies.insert(seq, (Err(lost), Vec::new()));
                        self.changed.notify_all();
                    }
                    // Otherwise unreadable: skip it (the primary runs another build?).
                }
            }
        }
        self.lock().closed = true;
        self.changed.notify_all();
        // The primary is gone: a worker does not outlive it (Node exits with 0 here).
        self.exit();
    }
}

fn parse(spec: &str) -> io::Result<Spec> {
    let parsed: Spec = spec.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // A relative unix path is resolved here, as Node's `path.resolve` in the worker, so every
    // worker names the same key whatever its own directory.
    let cwd = std::env::current_dir()?;
    Ok(parsed.resolve(&cwd))
}
