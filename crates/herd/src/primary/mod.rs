//! The primary's runtime: one epoll loop over the workers' control channels, their exits
//! (pidfds), and the registry's listeners and hand-off channels.

mod activated;
mod budget;
mod control;
mod event;
mod hang;
mod init;
mod lifecycle;
mod listen_fds;
#[cfg(feature = "metrics")]
mod metrics;
mod registry_thread;
mod respawn;
mod spawn;
mod stats;
mod systemd;
mod trace;
mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_handle::{BindOptions, Spec};
use herd_registry::{Events, Mode, Poller, Watched};
use herd_sched::Policy;

use crate::cluster::Cluster;
use crate::protocol::{Failure, GrantMode, ToPrimary, ToWorker, WireOptions};
use crate::{Error, Signal, WorkerId, sys};

pub use event::Event;
pub use respawn::RespawnPolicy;
use worker::Slot;
pub use worker::{State, WorkerInfo};

/// At most this many messages of one worker's control channel are handled per wake-up (the
/// registry's hand-off channels and accepts are batched alike, on the registry's thread).
const CONTROL_BATCH: usize = 64;
/// The poller key of the signal pipe; below, `2 * id` is a worker's control channel and
/// `2 * id + 1` its pidfd.
const SIGNAL_TOKEN: usize = usize::MAX;
/// The poller key of the `SIGCHLD` pipe of a subreaper primary.
const REAP_TOKEN: usize = usize::MAX - 1;
/// The poller key of the metrics thread's requests (feature `metrics`).
const METRICS_TOKEN: usize = usize::MAX - 2;
/// The poller key of the control socket's requests (`Cluster::control_socket`).
const CONTROL_TOKEN: usize = usize::MAX - 3;

/// How long a message that failed to send for want of a kernel resource (`ENOBUFS`,
/// `ENOMEM`, `ETOOMANYREFS`) waits before the next attempt.
const SEND_RETRY: Duration = Duration::from_millis(10);

/// The ids the workers run under, if they differ from this process's effective ones.
fn worker_credentials(settings: &Cluster) -> Option<herd_handle::Credentials> {
    let (euid, egid) = sys::effective_ids();
    let creds = herd_handle::Credentials {
        uid: settings.uid.unwrap_or(euid),
        gid: settings.gid.unwrap_or(egid),
    };
    (creds.uid != euid || creds.gid != egid).then_some(creds)
}

/// Refuses, at the call, a message to worker `id` that no channel could ever carry: more than
/// [`herd_ipc::MAX_FDS_PER_MESSAGE`] descriptors, or an encoded frame (wire-version byte and
/// postcard body) longer than [`herd_ipc::MAX_MESSAGE_BYTES`].
fn check_limits(id: WorkerId, message: &ToWorker, fds: usize) -> Result<(), Error> {
    let max = herd_ipc::MAX_FDS_PER_MESSAGE;
    if fds > max {
        return Err(Error::Channel { id, source: herd_ipc::Error::TooManyFds { count: fds, max } });
    }
    let body = postcard::experimental::serialized_size(message)
        .map_err(|e| Error::Channel { id, source: herd_ipc::Error::Encode(e) })?;
    let len = body + 1;
    let max = herd_ipc::MAX_MESSAGE_BYTES;
    if len > max {
        return Err(Error::Channel { id, source: herd_ipc::Error::TooLarge { len, max } });
    }
    Ok(())
}

/// A query the primary could not grant: the failure for the worker and, for a spec it could
/// parse, the error to report ([`Event::ListenFailed`]).
struct Refused {
    failure: Failure,
    error: Option<(Spec, herd_handle::Error)>,
}

impl Refused {
    /// A query for `spec` that failed with `error`: said to the worker, errno kept, and
    /// reported.
    fn failed(spec: Spec, error: herd_handle::Error) -> Box<Refused> {
        let failure = Failure {
            op: error.op().into(),
            address: error.address().into(),
            errno: error.raw_os_error(),
            message: error.io_error().to_string(),
        };
        Box::new(Refused { failure, error: Some((spec, error)) })
    }
}

/// The primary process of a cluster. Get one from [`Cluster::start`] or [`Cluster::primary`].
///
/// Nothing happens between calls: connections are handed out, queries answered and events
/// collected while [`next_event`](Primary::next_event) runs, so a primary calls it in a loop.
///
/// Keep the primary on one long-lived thread: workers are given the parent-death signal, which
/// Linux sends when the *thread* that forked them ends, so a worker forked from a short-lived
/// thread would be killed with it.
pub struct Primary {
    settings: Cluster,
    /// The program workers run: `Cluster::exec`, or this program's path as resolved when the
    /// primary started ([`spawn::this_program`]).
    exec: std::path::PathBuf,
    policy: Policy,
    poller: Arc<Poller>,
    /// The handle table, run by a thread of its own (see `registry_thread.rs`).
    registry: registry_thread::RegistryThread,
    workers: BTreeMap<WorkerId, Slot>,
    events: VecDeque<Event>,
    last_id: WorkerId,
    polled: Events,
    /// Worker places: index = place, the worker holding it. A replacement takes its
    /// predecessor's place (and under `reuseport` its socket).
    places: Vec<Option<WorkerId>>,
    /// Places waiting for a respawn, and when.
    respawns: Vec<(usize, Instant)>,
    /// Places whose respawned worker (the id) must listen on its predecessor's handles by
    /// then, or the handles stop waiting for it ([`Registry::expire_awaiting`]). A deadline
    /// counts only while that worker still holds the place: a later respawn has its own.
    awaiting: Vec<(usize, WorkerId, Instant)>,
    /// The ids workers run under, when they differ from the primary's: then the primary binds
    /// for them only what they could bind themselves or `Cluster::allow_listen` names.
    worker_credentials: Option<herd_handle::Credentials>,
    /// When hang detection samples next.
    hang_check_at: Instant,
    /// Each place's backoff and restart count: one place's crash loop does not touch others.
    respawners: BTreeMap<usize, respawn::Respawner>,
    rolling: Option<lifecycle::Rolling>,
    /// A stop (`disconnect_all`) is under way: no respawn, no restart; `Drained` ends it.
    stopping: bool,
    signals: Option<Watched<sys::InstalledSignals>>,
    /// An event was returned since the last turn of the loop: before the next, the sources
    /// get a look (see `next_event`).
    returned_since_turn: bool,
    /// When the last turn of the loop ended: a long gap before the next one is the
    /// application's absence, during which nobody read the workers (see `hang.rs`).
    last_turn: Option<Instant>,
    /// Descriptors held in events over all workers, and the most that may be (a quarter of
    /// the descriptor limit; see `budget.rs`).
    held_fds_total: usize,
    max_held_fds_total: usize,
    /// The `SIGCHLD` pipe of a subreaper primary (`Cluster::subreaper`, see `init.rs`).
    reaper: Option<Watched<sys::InstalledSignals>>,
    /// systemd's notification socket (`Cluster::notify_systemd`), if there is one.
    systemd: Option<systemd::Systemd>,
    /// The control socket (`Cluster::control_socket`), if there is one.
    control: Option<control::ControlServer>,
    /// When the primary was created (its uptime in [`Primary::stats`]).
    created: Instant,
    /// Each place's restarts and last exit, for [`Primary::stats`].
    place_history: BTreeMap<usize, stats::PlaceHistory>,
    /// The metrics listener's thread ([`Cluster::metrics_listen`]).
    #[cfg(feature = "metrics")]
    metrics: Option<metrics::Metrics>,
}

impl Primary {
    pub(crate) fn new(settings: Cluster) -> Result<Primary, Error> {
        let policy = settings.resolved_policy()?;
        activated::check(&settings, policy)?;
        // The sockets systemd passed this process are taken (made close-on-exec) before any
        // worker is forked, whether or not a `systemd:` spec will ask for one.
        let _ = listen_fds::passed();
        let poller = Arc::new(Poller::new().map_err(Error::io("create poller"))?);
        let registry = registry_thread::RegistryThread::start(policy, settings.max_in_flight)
            .map_err(Error::io("start the registry thread"))?;
        let worker_credentials = worker_credentials(&settings);
        let notify_systemd = settings.notify_systemd;
        let reaper = if settings.subreaper { Some(init::start_reaping(&poller)?) } else { None };
        let control = match &settings.control {
            Some(path) => Some(control::ControlServer::start(path, &poller)?),
            None => None,
        };
        #[cfg(feature = "metrics")]
        let metrics =
            settings.metrics.map(|at| metrics::Metrics::start(&poller, at)).transpose()?;
        let exec = match &settings.exec {
            Some(exec) => exec.clone(),
            None => spawn::this_program().map_err(Error::io("find this program's path"))?,
        };
        Ok(Primary {
            settings,
            exec,
            policy,
            poller,
            registry,
            workers: BTreeMap::new(),
            events: VecDeque::new(),
            last_id: 0,
            polled: Events::new(),
            places: Vec::new(),
            respawns: Vec::new(),
            awaiting: Vec::new(),
            respawners: BTreeMap::new(),
            hang_check_at: Instant::now(),
            worker_credentials,
            rolling: None,
            stopping: false,
            signals: None,
            returned_since_turn: false,
            last_turn: None,
            held_fds_total: 0,
            max_held_fds_total: Self::total_fd_budget(sys::nofile_limit()),
            reaper,
            systemd: if notify_systemd { systemd::Systemd::from_env() } else { None },
            control,
            created: Instant::now(),
            place_history: BTreeMap::new(),
            #[cfg(feature = "metrics")]
            metrics,
        })
    }

    /// The scheduling policy, frozen when the primary was created.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Starts a new worker; its id is the next one (ids start at 1 and are never reused).
    pub fn fork(&mut self) -> Result<WorkerId, Error> {
        self.fork_with_env(&[])
    }

    /// Starts a new worker with extra environment variables (Node's `cluster.fork(env)`). It
    /// takes the lowest free place in the cluster (no worker in it and no respawn scheduled for
    /// it), or a new one.
    ///
    /// # Errors
    /// [`Error::Spawn`] when the process cannot be started; [`Error::SpawnSetup`] when it
    /// started but could not be watched (it is killed and reaped then). Either way no place,
    /// id or descriptor is used up: the next fork gets the same id.
    pub fn fork_with_env(&mut self, env: &[(String, String)]) -> Result<WorkerId, Error> {
        let free = (0..self.places.len()).find(|&p| !self.place_taken(p));
        let (place, added) = match free {
            Some(free) => (free, false),
            None => {
                self.places.push(None);
                (self.places.len() - 1, true)
            }
        };
        let forked = self.fork_into(place, env);
        if forked.is_err() && added && self.places.len() == place + 1 {
            self.places.pop();
        }
        if forked.is_ok() {
            // A worker the application forks starts its place's backoff and count afresh
            // (the place may have halted before).
            self.respawners.remove(&place);
        }
        forked
    }

    /// Forks a worker into `place` (which it then holds). On failure, nothing changes: the
    /// id is not used up, and a process that started is killed and reaped.
    fn fork_into(&mut self, place: usize, env: &[(String, String)]) -> Result<WorkerId, Error> {
        let id = self.last_id + 1;
        let (spawned, notify) = if self.settings.activation.is_some() {
            self.spawn_activated(id, place, env)?
        } else {
            (spawn::spawn(&self.settings, &self.exec, id, env)?, None)
        };
        let spawn::Spawned { child, channel, exec } = spawned;
        let pid = child.id();
        let (control, exit, notify) = match self.watch(id, pid, channel, notify) {
            Ok(watched) => watched,
            Err((op, source)) => {
                if self.settings.activation.is_some() {
                    let expected = self.places.get(place).is_some_and(Option::is_some);
                    self.registry.lock().remove_worker(id, expected);
                }
                return Err(spawn::abandon(child, id, exec, op, source));
            }
        };
        // From here on nothing fails: the worker is the primary's.
        self.last_id = id;
        self.workers.insert(
            id,
            Slot {
                id,
                pid,
                child,
                control,
                exit: Some(exit),
                activated: false,
                notify: None,
                ready_at: None,
                outbox: VecDeque::new(),
                state: State::Forked,
                status: None,
                place: Some(place),
                after_disconnect: false,
                kill_at: None,
                retry_at: None,
                started: Instant::now(),
                listening_since: None,
                unanswered_since: None,
                hung: false,
                held_events: 0,
                held_fds: 0,
                reading_paused: false,
                exit_deferred: false,
                cut_off: false,
                listened: false,
                listen_failure: None,
                last_message: Vec::new(),
                read_since: Instant::now(),
                messages_received: 0,
                messages_sent: 0,
            },
        );
        self.places[place] = Some(id);
        trace::fork(id, pid, place);
        self.events.push_back(Event::Fork(id));
        if self.settings.activation.is_some() {
            self.watch_readiness(id, notify);
        }
        Ok(id)
    }

    /// Registers a new worker's control channel (or, for a socket-activated worker, its
    /// `NOTIFY_SOCKET`, if any) and exit (a pidfd) with the event loop, or says which step
    /// failed.
    #[allow(clippy::type_complexity)]
    fn watch(
        &self,
        id: WorkerId,
        pid: u32,
        channel: Option<herd_ipc::Channel>,
        notify: Option<std::os::unix::net::UnixDatagram>,
    ) -> Result<
        (
            Option<Watched<herd_ipc::Channel>>,
            Watched<OwnedFd>,
            Option<Watched<std::os::unix::net::UnixDatagram>>,
        ),
        (&'static str, std::io::Error),
    > {
        let key = 2 * id as usize;
        let control = spawn::inject(spawn::Step::WatchControl, pid)
            .and_then(|()| channel.map(|c| Watched::new(&self.poller, c, key)).transpose())
            .map_err(|e| ("watch the control channel", e))?;
        let notify = notify
            .map(|n| Watched::new(&self.poller, n, key))
            .transpose()
            .map_err(|e| ("watch the notify socket", e))?;
        let pidfd = spawn::inject(spawn::Step::Pidfd, pid)
            .and_then(|()| sys::pidfd_open(pid))
            .map_err(|e| ("pidfd_open", e))?;
        let exit = spawn::inject(spawn::Step::WatchExit, pid)
            .and_then(|()| Watched::new(&self.poller, pidfd, key + 1))
            .map_err(|e| ("watch the pidfd", e))?;
        Ok((control, exit, notify))
    }

    /// The workers, by id (those whose channel is closed and process exited are gone).
    pub fn workers(&self) -> impl Iterator<Item = WorkerInfo> + '_ {
        self.workers.values().map(Slot::info)
    }

    /// One worker.
    pub fn worker(&self, id: WorkerId) -> Option<WorkerInfo> {
        self.workers.get(&id).map(Slot::info)
    }

    /// The most messages [`send`](Primary::send) keeps waiting in the primary for one worker
    /// that does not read: 1,024 (beyond the few hundred the channel's socket buffer holds).
    /// Node queues without bound; here a stopped or hung worker cannot make the primary grow
    /// without limit.
    pub const MAX_QUEUED_MESSAGES: usize = 1024;

    /// The most descriptors [`send`](Primary::send) keeps waiting in the primary for one
    /// worker: 256. Each is a duplicate held open by the primary until sent, so without a bound
    /// one worker that does not read could use up the primary's descriptors, and with them its
    /// accepts, binds and forks.
    pub const MAX_QUEUED_FDS: usize = 256;

    /// Sends a message to a worker, with descriptors (Node's `worker.send`). Messages to one
    /// worker arrive in order; one that its queue cannot take now waits in the primary and goes
    /// out as soon as the worker reads (a transient send error such as `ENOBUFS` is retried
    /// every 10 ms). `Ok` means the message is sent or queued, and a queued
    /// message is dropped only if the worker's control channel closes.
    ///
    /// # Errors
    /// - [`Error::NoSuchWorker`] when no worker has this id.
    /// - [`Error::Channel`] with [`herd_ipc::Error::TooLarge`] when the encoded message (`data`
    ///   plus a few bytes of framing: the wire-version byte and postcard's length prefix) is
    ///   larger than [`herd_ipc::MAX_MESSAGE_BYTES`], or [`herd_ipc::Error::TooManyFds`] for
    ///   more than [`herd_ipc::MAX_FDS_PER_MESSAGE`] descriptors; nothing is queued. Checked
    ///   here because a message that can never be sent must fail at the call, not later.
    /// - [`Error::Channel`] with [`herd_ipc::Error::Closed`] when the worker's channel is
    ///   closed already.
    /// - [`Error::QueueFull`] when [`MAX_QUEUED_MESSAGES`](Primary::MAX_QUEUED_MESSAGES)
    ///   messages or [`MAX_QUEUED_FDS`](Primary::MAX_QUEUED_FDS) descriptors (this message's
    ///   included) would wait in the primary for the worker: it does not read. Nothing is
    ///   queued; send again later.
    /// - [`Error::Io`] (`dup`) when the descriptors cannot be duplicated (`EMFILE`).
    pub fn send(&mut self, id: WorkerId, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
        let slot = self.workers.get(&id).ok_or(Error::NoSuchWorker(id))?;
        let messages = slot.outbox.len();
        let queued_fds: usize = slot.outbox.iter().map(|(_, fds)| fds.len()).sum();
        if messages + 1 > Self::MAX_QUEUED_MESSAGES || queued_fds + fds.len() > Self::MAX_QUEUED_FDS
        {
            return Err(Error::QueueFull {
                id,
                messages,
                fds: queued_fds,
                max_messages: Self::MAX_QUEUED_MESSAGES,
                max_fds: Self::MAX_QUEUED_FDS,
            });
        }
        let message = ToWorker::Message { data: data.to_vec() };
        check_limits(id, &message, fds.len())?;
        let owned = fds
            .iter()
            .map(|fd| fd.try_clone_to_owned())
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::io("dup"))?;
        self.post(id, message, owned)
    }

    /// Sends a signal to a worker's process (Node's `worker.kill(signal)`, without Node's
    /// disconnect first). What it does is the signal's: [`Signal::Kill`] ends the worker at
    /// once (its `Exit` says `after_disconnect: false` and carries the signal, and it is
    /// respawned as after any unexpected death unless a disconnect was under way);
    /// [`Signal::Term`] disconnects it gracefully, since every worker handles SIGTERM as its
    /// own [`Worker::disconnect`](crate::Worker::disconnect) (see [`crate::worker`]): it
    /// finishes its connections, exits 0 and is not respawned. A worker that has exited
    /// already is left alone (`Ok`).
    ///
    /// # Errors
    /// [`Error::NoSuchWorker`] when no worker has this id; [`Error::Io`] (`kill`) when
    /// `kill(2)` fails.
    pub fn kill(&mut self, id: WorkerId, signal: Signal) -> Result<(), Error> {
        let slot = self.workers.get(&id).ok_or(Error::NoSuchWorker(id))?;
        if slot.exit.is_none() {
            return Ok(());
        }
        sys::kill(slot.pid, signal.number()).map_err(Error::io("kill"))
    }

    /// The keys of the open handles, as Node prints them.
    pub fn handles(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.registry.read().keys().map(ToString::to_string).collect();
        keys.sort();
        keys
    }

    /// Connections the primary holds right now (accepted, not yet taken by a worker).
    pub fn connections_held(&self) -> usize {
        self.registry.read().connections_held()
    }

    /// Waits for the next event, for at most `timeout` (`None`: no limit), doing the cluster's
    /// work meanwhile. `Ok(None)` when the time is up.
    pub fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<Event>, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(event) = self.take_event()? {
                return Ok(Some(event));
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| d <= now) {
                return Ok(None);
            }
            let wake = deadline.into_iter().chain(self.wake_at()).min();
            self.turn(wake.map(|w| w.saturating_duration_since(now)))?;
        }
    }

    /// The next queued event, if any, once what waits on others has moved on. Events are
    /// waiting, but the application may take its time over each: before each, one look at
    /// the sources that cannot wait (the workers' channels, signals), so they are not held up
    /// behind the queue.
    fn take_event(&mut self) -> Result<Option<Event>, Error> {
        self.advance();
        if !self.events.is_empty() && self.returned_since_turn {
            self.turn(Some(Duration::ZERO))?;
            self.advance();
        }
        let Some(event) = self.events.pop_front() else { return Ok(None) };
        self.release(&event);
        self.systemd_on(&event);
        self.returned_since_turn = true;
        Ok(Some(event))
    }

    /// The earliest moment the primary has work of its own (timers, retries, restarts, hang
    /// checks, readiness, systemd's watchdog), whatever its sources report.
    fn wake_at(&self) -> Option<Instant> {
        [
            self.timer(),
            self.retry_deadline(),
            self.rolling_deadline(),
            self.hang_deadline(),
            self.ready_deadline(),
            self.systemd.as_ref().and_then(systemd::Systemd::deadline),
            self.control_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next event, awaited without blocking the thread (feature `tokio`): what
    /// [`next_event`](Primary::next_event) returns, with no time limit (wrap it in
    /// `tokio::time::timeout` for one). The cluster's work is done while it is awaited, as
    /// while `next_event` runs: the primary's epoll descriptor is watched by tokio's reactor,
    /// and its timers (respawns, kill and ready timeouts, hang checks) by tokio's timer, so it
    /// sits in a `tokio::select!` beside the application's own futures (`tokio::signal`, a
    /// socket). Cancel safe: an event is taken only in the poll that returns it.
    ///
    /// Await it from the task that runs `main` (`#[tokio::main]`'s, or `block_on`'s), not a
    /// spawned one: a worker is killed when the *thread* that forked it ends (see
    /// [`Primary`]), and a spawned task may move between the runtime's threads.
    ///
    /// # Errors
    /// As [`next_event`](Primary::next_event); and [`Error::Io`] (`register the primary's
    /// poller with tokio`) when the reactor refuses the descriptor.
    ///
    /// # Panics
    /// Outside a tokio runtime with its I/O and time drivers enabled.
    #[cfg(feature = "tokio")]
    pub async fn next_event_async(&mut self) -> Result<Event, Error> {
        let mut reactor = None;
        loop {
            if let Some(event) = self.take_event()? {
                return Ok(event);
            }
            // The reactor reports readiness that arises, not readiness that stays (a channel
            // left with messages past its batch): everything ready now is handled first.
            if self.turn(Some(Duration::ZERO))? > 0 || !self.events.is_empty() {
                continue;
            }
            self.advance();
            if !self.events.is_empty() {
                continue;
            }
            let ready = match &mut reactor {
                Some(ready) => ready,
                None => reactor.insert(
                    sys::register_readable(self.poller.as_fd())
                        .map_err(Error::io("register the primary's poller with tokio"))?,
                ),
            };
            let readable = match self.wake_at() {
                Some(at) => {
                    let at = ::tokio::time::Instant::from_std(at);
                    ::tokio::time::timeout_at(at, ready.readable()).await.ok()
                }
                None => Some(ready.readable().await),
            };
            if let Some(guard) = readable {
                // Cleared before the sources are read: what becomes ready from here on is
                // reported again.
                guard.map_err(Error::io("wait for the primary's poller"))?.clear_ready();
            }
        }
    }

    /// One turn of the loop: waits for what is ready (at most `timeout`), handles it, then
    /// the timers. Returns how many sources were ready.
    fn turn(&mut self, timeout: Option<Duration>) -> Result<usize, Error> {
        self.returned_since_turn = false;
        self.note_absence(Instant::now());
        self.polled.clear();
        match self.poller.wait(&mut self.polled, timeout) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io { op: "poll", source: e }),
        }
        let ready: Vec<(usize, bool)> = self.polled.iter().map(|e| (e.key, e.writable)).collect();
        for (key, writable) in ready {
            if key == SIGNAL_TOKEN {
                self.on_signals();
            } else if key == REAP_TOKEN {
                self.on_child_exits();
            } else if key == CONTROL_TOKEN {
                self.on_control_socket();
            } else if cfg!(feature = "metrics") && key == METRICS_TOKEN {
                #[cfg(feature = "metrics")]
                self.on_metrics_request();
            } else {
                let id = (key / 2) as WorkerId;
                if key % 2 == 1 {
                    self.on_exit(id);
                } else if self.workers.get(&id).is_some_and(|w| w.notify.is_some()) {
                    self.on_notify(id);
                } else {
                    if writable {
                        self.flush(id);
                    }
                    self.on_control(id, CONTROL_BATCH);
                }
            }
        }
        let now = Instant::now();
        self.on_timer(now);
        self.on_ready_timers(now);
        self.systemd_watchdog(now);
        // After everything ready was read: answers that waited for the loop count.
        self.check_hangs(now);
        self.retry_sends(now);
        self.last_turn = Some(Instant::now());
        Ok(self.polled.len())
    }

    /// Queues a message for a worker and sends what its channel takes now.
    fn post(&mut self, id: WorkerId, message: ToWorker, fds: Vec<OwnedFd>) -> Result<(), Error> {
        let slot = self.workers.get_mut(&id).ok_or(Error::NoSuchWorker(id))?;
        if slot.control.is_none() {
            return Err(Error::Channel { id, source: herd_ipc::Error::Closed });
        }
        slot.outbox.push_back((message, fds));
        self.flush(id);
        Ok(())
    }

    /// Sends queued messages until the worker's queue is full (then waits for writability).
    ///
    /// Only a closed channel empties the queue. A message outside the limits cannot be queued
    /// (`send` and the replies are checked first); should one get here all the same, it alone
    /// is dropped. Any other error (`ENOBUFS`, `ENOMEM`, `ETOOMANYREFS`: the kernel is short
    /// of something for now) keeps the message at the front, and the loop's timer tries again
    /// after [`SEND_RETRY`].
    fn flush(&mut self, id: WorkerId) {
        let Some(slot) = self.workers.get_mut(&id) else { return };
        let Some(control) = &slot.control else {
            slot.outbox.clear();
            slot.retry_at = None;
            return;
        };
        slot.retry_at = None;
        while let Some((message, fds)) = slot.outbox.front() {
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            match control.get().try_send_value(message, &borrowed) {
                Ok(()) => {
                    if matches!(message, ToWorker::Message { .. }) {
                        slot.messages_sent += 1;
                    }
                    slot.outbox.pop_front();
                }
                Err(e) if e.is_would_block() => break,
                // Closed: end of stream on the read side will tell the rest.
                Err(herd_ipc::Error::Closed) => {
                    slot.outbox.clear();
                    break;
                }
                Err(
                    herd_ipc::Error::TooLarge { .. }
                    | herd_ipc::Error::TooManyFds { .. }
                    | herd_ipc::Error::Empty
                    | herd_ipc::Error::Encode(_),
                ) => {
                    slot.outbox.pop_front();
                }
                Err(_) => {
                    slot.retry_at = Some(Instant::now() + SEND_RETRY);
                    break;
                }
            }
        }
        // Writability is what a full queue waits for; a retry waits for the timer instead
        // (level-triggered writability would spin while the kernel is short of buffers).
        let waiting = !slot.outbox.is_empty() && slot.retry_at.is_none();
        if control.set_interest(true, waiting).is_err() && waiting {
            // Without the writability interest (epoll_ctl failed: ENOMEM) nothing would wake
            // the queue again; the timer does.
            slot.retry_at = Some(Instant::now() + SEND_RETRY);
        }
    }

    /// When the earliest send retry is due.
    fn retry_deadline(&self) -> Option<Instant> {
        self.workers.values().filter_map(|w| w.retry_at).min()
    }

    /// Retries the sends that failed for want of a kernel resource.
    fn retry_sends(&mut self, now: Instant) {
        let due: Vec<WorkerId> = self
            .workers
            .values()
            .filter(|w| w.retry_at.is_some_and(|at| at <= now))
            .map(|w| w.id)
            .collect();
        for id in due {
            self.flush(id);
        }
    }

    /// Reads and handles what the worker sent on its control channel: at most `limit`
    /// messages, so one worker that floods its channel cannot hold the loop while the others
    /// wait (the channel is level-triggered: the rest is read on the next turn).
    fn on_control(&mut self, id: WorkerId, limit: usize) {
        for _ in 0..limit {
            let Some(slot) = self.workers.get(&id) else { return };
            // Past its budget, the rest waits in the kernel until the application catches up.
            if slot.reading_paused {
                return;
            }
            let Some(control) = slot.control.as_ref() else { return };
            match control.get().try_recv_value::<ToPrimary>() {
                Ok((message, fds)) => {
                    if let Some(slot) = self.workers.get_mut(&id) {
                        slot.unanswered_since = None;
                    }
                    self.on_message(id, message, fds);
                }
                Err(e) if e.is_would_block() => return,
                Err(herd_ipc::Error::Closed) => return self.on_disconnect(id),
                // A message whose descriptors could not be received (this process is at its
                // descriptor limit): said, never skipped.
                Err(e) if matches!(e, herd_ipc::Error::FdsTruncated { .. }) => {
                    if let Some(ToPrimary::Message { data }) = e.truncated_value::<ToPrimary>() {
                        self.hold(id, Event::DescriptorsLost { worker: id, data });
                    }
                }
                // A receive that failed in the kernel (ENOMEM and the like) consumed nothing:
                // try again on the next turn rather than here in a loop.
                Err(e) if e.raw_os_error().is_some() => return,
                // A message this build cannot read: the worker runs another protocol. Skip it
                // (it was consumed); the next one may still be readable.
                Err(_) => continue,
            }
        }
    }

    fn on_message(&mut self, id: WorkerId, message: ToPrimary, fds: Vec<OwnedFd>) {
        match message {
            ToPrimary::Online => {
                if let Some(slot) = self.workers.get_mut(&id) {
                    slot.state = State::Online;
                    trace::online(id, slot.pid);
                }
                self.hold(id, Event::Online(id));
            }
            ToPrimary::Query { seq, spec, index, options } => {
                let (result, fds) = match self.query(id, &spec, index, &options) {
                    Ok((mode, address, fd)) => {
                        if let Some(slot) = self.workers.get_mut(&id) {
                            slot.listened = true;
                            slot.listen_failure = None;
                        }
                        (Ok((mode, address)), vec![fd])
                    }
                    Err(refused) => {
                        let Refused { failure, error } = *refused;
                        if let Some(slot) = self.workers.get_mut(&id) {
                            let shown = error.as_ref().map(|(_, e)| e.to_string());
                            slot.listen_failure =
                                Some(shown.unwrap_or_else(|| failure.message.clone()));
                        }
                        if let Some((address, error)) = error {
                            trace::listen_failed(id, &address, &error);
                            self.hold(id, Event::ListenFailed { worker: id, address, error });
                        }
                        (Err(failure), Vec::new())
                    }
                };
                self.reply(id, ToWorker::Reply { seq, result }, fds);
            }
            ToPrimary::Listening { address, .. } => {
                if let Some(slot) = self.workers.get_mut(&id) {
                    slot.state = State::Listening;
                    slot.listened = true;
                    slot.listening_since.get_or_insert_with(Instant::now);
                }
                if let Ok(address) = address.parse::<Spec>() {
                    trace::listening(id, &address);
                    self.hold(id, Event::Listening { worker: id, address });
                }
            }
            ToPrimary::Close { spec, index } => {
                let spec = spec.parse::<Spec>().ok().and_then(|s| listen_fds::resolve(&s).ok());
                if let Some(spec) = spec {
                    self.registry.lock().release(id, &herd_registry::Key::new(&spec, index));
                }
            }
            ToPrimary::Disconnecting => self.mark_disconnecting(id),
            // Heard (every message counts as an answer to a ping): nothing else to do.
            ToPrimary::Pong => {}
            ToPrimary::Message { data } => {
                if let Some(slot) = self.workers.get_mut(&id) {
                    slot.record_message(&data);
                    slot.messages_received += 1;
                }
                self.hold(id, Event::Message { worker: id, data, fds });
            }
        }
    }

    /// Answers a worker's query: binds (or shares) what it asks for, or says why not.
    fn query(
        &mut self,
        id: WorkerId,
        spec: &str,
        index: u32,
        options: &WireOptions,
    ) -> Result<(GrantMode, String, OwnedFd), Box<Refused>> {
        let parsed = match spec.parse::<Spec>() {
            Ok(parsed) => parsed,
            // The worker parsed it first: a spec only another build of the program could send.
            Err(e) => {
                let failure = Failure {
                    op: "listen".into(),
                    address: spec.into(),
                    errno: None,
                    message: e.to_string(),
                };
                return Err(Box::new(Refused { failure, error: None }));
            }
        };
        if self.workers.get(&id).is_some_and(|w| w.after_disconnect) {
            // A disconnecting worker takes no new connection, so no new handle either: one
            // granted now would listen for nobody (and, after a stop, bind anew).
            let failure = Failure {
                op: "listen".into(),
                address: parsed.to_string(),
                errno: Some(sys::ENOTCONN),
                message: format!("worker {id} is disconnecting: it gets no new handle"),
            };
            // Not a failed bind (no `ListenFailed`): the worker is on its way out.
            return Err(Box::new(Refused { failure, error: None }));
        }
        let defaults = BindOptions::default();
        let mut bind = BindOptions {
            backlog: options.backlog.unwrap_or(defaults.backlog),
            ipv6_only: options.ipv6_only,
            readable_all: options.readable_all,
            writable_all: options.writable_all,
            ..defaults
        };
        if let Some(creds) = self.worker_credentials {
            // The primary binds with its own privileges: for workers under other ids it binds
            // only what they could bind themselves, or what the application allowed.
            if !self.settings.allow_listen.contains(&parsed) {
                if let Err(e) = herd_handle::check_bind_access(&parsed, &creds) {
                    let failure = Failure {
                        op: "bind".into(),
                        address: parsed.to_string(),
                        errno: Some(sys::EACCES),
                        message: e.to_string(),
                    };
                    let error = herd_handle::Error::new("bind", &parsed, e);
                    return Err(Box::new(Refused { failure, error: Some((parsed, error)) }));
                }
            }
            bind.owner = Some((creds.uid, creds.gid));
            // Nor does it remove for them a socket file they could not remove themselves.
            if let Spec::Unix(path) = &parsed {
                bind.remove_stale = herd_handle::could_remove(path, &creds);
            }
        }
        // A `systemd:` name stands for a socket this process was passed: shared as any
        // inherited one (`fd://`).
        let resolved = match listen_fds::resolve(&parsed) {
            Ok(resolved) => resolved,
            Err(e) => return Err(Refused::failed(parsed, e)),
        };
        let place = self.workers.get(&id).and_then(|w| w.place);
        match self.registry.lock().query_in_slot(id, &resolved, index, &bind, place) {
            Ok(grant) => {
                let mode = match grant.mode {
                    Mode::Listener => GrantMode::Listener,
                    Mode::Datagram => GrantMode::Datagram,
                    Mode::Handoff => GrantMode::Handoff {
                        report_closes: self.policy == Policy::LeastConnections,
                    },
                };
                Ok((mode, grant.address.to_string(), grant.fd))
            }
            Err(e) => Err(Refused::failed(parsed, e)),
        }
    }

    fn on_disconnect(&mut self, id: WorkerId) {
        // Node removes a disconnected worker's handles at once: no new connection goes to it.
        // Handles its replacement will want stay open for it.
        let expected = self.replacement_expected(id);
        self.registry.lock().remove_worker(id, expected);
        if let Some(slot) = self.workers.get_mut(&id) {
            slot.control = None;
            slot.outbox.clear();
            if slot.state != State::Dead {
                slot.state = State::Disconnected;
            }
            // Its state as of now: by the time the event is read, the worker may have left
            // the table (Node's handler reads `worker.state` and `exitedAfterDisconnect`).
            let info = slot.info();
            trace::disconnect(id, info.pid, info.disconnecting);
            self.events.push_back(Event::Disconnect { worker: id, info });
        }
        self.forget_if_finished(id);
    }

    fn on_exit(&mut self, id: WorkerId) {
        // What the worker sent before it died comes first (its last words, an error), all of
        // it: nothing it sent may be read after its exit.
        self.on_control(id, usize::MAX);
        let Some(slot) = self.workers.get_mut(&id) else { return };
        if slot.reading_paused {
            // Not all of it could be read within its budget: the exit waits for the rest, and
            // the pidfd leaves the poller meanwhile (it would report in a loop).
            if let Some(exit) = &slot.exit {
                if exit.suspend().is_ok() {
                    slot.exit_deferred = true;
                    return;
                }
            }
        }
        let status = match slot.child.try_wait() {
            Ok(Some(status)) => status,
            // The pidfd is readable only once the process has exited; not reaped yet means
            // another wake-up will come.
            Ok(None) => return,
            Err(_) => return,
        };
        slot.exit = None;
        slot.notify = None;
        slot.ready_at = None;
        slot.status = Some(status);
        slot.state = State::Dead;
        slot.kill_at = None;
        let (place, disconnecting, uptime) =
            (slot.place, slot.after_disconnect, slot.started.elapsed());
        let last_words = slot.last_words();
        // A worker that never listened, its last listen having failed, would fail the same
        // way if respawned.
        let failed_to_listen = if slot.listened { None } else { slot.listen_failure.clone() };
        let info = slot.info();
        let expected = self.replacement_expected(id);
        self.registry.lock().remove_worker(id, expected);
        // A clean drain only if it exited by itself (an exit code): a worker killed by a signal
        // (the kill timeout, `kill`, anyone) is reported killed, its signal in `status`.
        let after_disconnect = disconnecting && status.code().is_some();
        trace::exit(id, info.pid, status, after_disconnect, uptime);
        self.record_exit(place, id, status, after_disconnect, uptime);
        self.events.push_back(Event::Exit { worker: id, status, after_disconnect, info });
        self.forget_if_finished(id);
        if self.rolling_on_exit(id, status, &last_words) {
            return;
        }
        let death = lifecycle::Death {
            place,
            after_disconnect: disconnecting,
            uptime,
            failed_to_listen,
            pid: info.pid,
            status,
        };
        self.on_worker_gone(id, death);
    }

    fn forget_if_finished(&mut self, id: WorkerId) {
        if self.workers.get(&id).is_some_and(Slot::is_finished) {
            self.workers.remove(&id);
        }
    }
}

impl Drop for Primary {
    /// Closing the control channels tells every worker to exit (as a Node worker does when its
    /// channel disconnects); stragglers are killed after two seconds. Every process is reaped,
    /// and what the workers wrote last is relayed (for up to one second: `spawn::RELAY_FLUSH`).
    fn drop(&mut self) {
        for slot in self.workers.values_mut() {
            slot.control = None;
            if slot.activated && slot.status.is_none() {
                // No channel to close: SIGTERM is how a socket-activated program is stopped.
                slot.kill(Signal::Term);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for slot in self.workers.values_mut() {
            while slot.status.is_none() {
                match slot.child.try_wait() {
                    Ok(Some(status)) => slot.status = Some(status),
                    Ok(None) if Instant::now() < deadline => {
                        // Bounded reaping at shutdown: no event loop runs any more.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    _ => {
                        let _ = slot.child.kill();
                        slot.status = slot.child.wait().ok();
                        break;
                    }
                }
            }
        }
        // Every worker is gone: what they wrote last reaches the primary's stdout and stderr.
        spawn::flush_relays();
    }
}

#[cfg(test)]
mod tests {
    use super::spawn::{Step, injection};
    use super::*;
    use crate::Stdio;

    /// Whether `pid` is no child of this process any more: gone from `/proc`, or the number
    /// now belongs to someone else's process. A zombie (killed, not reaped) is still ours.
    fn reaped(pid: u32) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return true };
        // `pid (comm) state ppid ...`: the command may hold spaces, the fields follow the `)`.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
        ppid != Some(std::process::id().to_string().as_str())
    }

    /// The program a worker runs by default is this one, by an absolute path that names the
    /// running file (here the test binary, started by cargo with an absolute `argv[0]`).
    #[test]
    fn this_program_is_an_absolute_path_to_the_running_file() {
        use std::os::unix::fs::MetadataExt;
        let program = spawn::this_program().unwrap();
        assert!(program.is_absolute(), "{}", program.display());
        let (found, running) =
            (std::fs::metadata(&program).unwrap(), std::fs::metadata("/proc/self/exe").unwrap());
        assert_eq!((found.dev(), found.ino()), (running.dev(), running.ino()));
        let arg0 = std::env::args_os().next().unwrap();
        if std::path::Path::new(&arg0).is_absolute() {
            assert_eq!(program.as_os_str(), arg0, "argv[0] is kept as given");
        }
    }

    #[test]
    fn a_failure_after_the_spawn_kills_and_reaps_the_child_and_uses_up_nothing() {
        for step in [Step::Relay, Step::WatchControl, Step::Pidfd, Step::WatchExit] {
            let settings = Cluster::new().exec("/bin/sleep").args(["30"]).stdio(Stdio::Prefixed);
            let mut primary = settings.primary().unwrap();
            injection::SPAWNED.set(None);
            injection::FAIL_AT.set(Some(step));
            let forked = primary.fork();
            injection::FAIL_AT.set(None);
            let error = forked.expect_err("an injected failure");
            let pid = injection::SPAWNED.get().expect("a child was spawned");
            assert!(
                matches!(&error, Error::SpawnSetup { id: 1, pid: p, .. } if *p == pid),
                "{step:?}: {error:?}"
            );
            let text = error.to_string();
            assert!(
                text.starts_with("fork worker 1: ")
                    && text.contains("/bin/sleep")
                    && text.contains(&format!("pid {pid}"))
                    && text.contains("injected failure"),
                "{step:?}: {text}"
            );
            assert!(reaped(pid), "{step:?}: child {pid} is alive or a zombie");
            assert_eq!(primary.workers().count(), 0, "{step:?}");
            assert!(primary.places.is_empty(), "{step:?}: a place was left: {:?}", primary.places);
            assert!(primary.events.is_empty(), "{step:?}: {:?}", primary.events);
            // Nothing was used up: the next fork gets the same id and the first place.
            let id = primary.fork().unwrap();
            assert_eq!((id, primary.worker(id).unwrap().place), (1, Some(0)), "{step:?}");
            primary.kill(id, Signal::Kill).unwrap();
        }
    }
}
