//! [`Cluster`]: the primary's settings (Node's `cluster.setupPrimary`) and its start.

use std::ffi::OsString;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use herd_handle::Spec;
use herd_sched::Policy;

use crate::Error;
use crate::primary::{Primary, RespawnPolicy};

/// [`Cluster::ready_timeout`]'s default.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// [`Cluster::hang_timeout`]'s default: gunicorn's worker `timeout`.
const DEFAULT_HANG_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest timeout or delay a [`Cluster`] keeps: 100 years (3,153,600,000 s). A longer one
/// given to [`Cluster::kill_timeout`], [`Cluster::ready_timeout`], [`Cluster::hang_timeout`]
/// or [`Readiness::Delay`] is taken as this, which is "never" for any process, and keeps the
/// deadlines computed from it within what a clock instant holds.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// Where a worker's standard output and error go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stdio {
    /// The primary's own (Node's default).
    #[default]
    Inherit,
    /// Nowhere (`/dev/null`).
    Silent,
    /// Piped through the primary, each line prefixed with `[worker N] ` (`[NAME worker N] `
    /// with [`Cluster::name`]); standard output to the primary's standard output, standard
    /// error to its standard error. A line longer than 64 KiB is written in 64 KiB parts, each
    /// but the last ending with ` [herd: line split at 65536 bytes]`, so output without
    /// newlines never grows the primary's memory; what is left without a newline when the
    /// worker closes its output is written as a line of its own.
    Prefixed,
}

/// How a socket-activated worker ([`Cluster::socket_activation`]) tells that it is ready, in
/// place of herd's own `online` message, which such a program does not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Readiness {
    /// Ready this long after its fork, whatever it does (a program that speaks no protocol);
    /// at most [`MAX_DURATION`].
    Delay(Duration),
    /// Ready when it sends `READY=1` to the datagram socket named by its `NOTIFY_SOCKET`
    /// (systemd's protocol, `sd_notify(3)`; every `sd_notify` library speaks it). Each worker
    /// gets a socket of its own, in the abstract namespace (`@herd-notify/…`); a datagram is
    /// heard only from the worker or one of its descendants (the sender's pid, by
    /// `SO_PASSCRED`), since any local process could send to the name.
    Notify,
}

/// A socket handed to socket-activated workers: its spec and the name `LISTEN_FDNAMES` gives
/// it (`sd_listen_fds_with_names(3)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActivationListen {
    pub(crate) name: String,
    pub(crate) spec: Spec,
}

/// The primary's settings, as Node's `cluster.settings`, and a builder for them.
///
/// ```no_run
/// let primary = herd::Cluster::new().workers(4).policy("rr".parse()?).start()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Cluster {
    pub(crate) workers: usize,
    pub(crate) policy: Option<Policy>,
    pub(crate) exec: Option<PathBuf>,
    pub(crate) args: Option<Vec<OsString>>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) stdio: Stdio,
    pub(crate) max_in_flight: NonZeroUsize,
    pub(crate) kill_timeout: Duration,
    pub(crate) ready_timeout: Duration,
    pub(crate) hang_timeout: Option<Duration>,
    pub(crate) respawn: RespawnPolicy,
    pub(crate) allow_listen: Vec<Spec>,
    /// Socket-activated workers: how they get ready (`None`: herd workers).
    pub(crate) activation: Option<Readiness>,
    pub(crate) activation_listen: Vec<ActivationListen>,
    /// What prefixes the workers' output lines under [`Stdio::Prefixed`].
    pub(crate) name: Option<String>,
    pub(crate) subreaper: bool,
    pub(crate) forward_signals: bool,
    pub(crate) notify_systemd: bool,
    /// Where the control socket listens (`None`: no control socket).
    pub(crate) control: Option<PathBuf>,
    /// Where the metrics listener binds ([`Cluster::metrics_listen`]).
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<std::net::SocketAddr>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

impl Cluster {
    /// The defaults: one worker per available core, the policy from `HERD_SCHED_POLICY` or
    /// `rr`, this program (see [`exec`](Cluster::exec)) with this process's arguments, the
    /// primary's stdio.
    pub fn new() -> Cluster {
        Cluster {
            workers: std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            policy: None,
            exec: None,
            args: None,
            env: Vec::new(),
            cwd: None,
            uid: None,
            gid: None,
            stdio: Stdio::Inherit,
            max_in_flight: NonZeroUsize::MIN,
            kill_timeout: Duration::from_secs(5),
            ready_timeout: DEFAULT_READY_TIMEOUT,
            hang_timeout: Some(DEFAULT_HANG_TIMEOUT),
            respawn: RespawnPolicy::default(),
            allow_listen: Vec::new(),
            activation: None,
            activation_listen: Vec::new(),
            name: None,
            subreaper: false,
            forward_signals: false,
            notify_systemd: false,
            control: None,
            #[cfg(feature = "metrics")]
            metrics: None,
        }
    }

    /// How many workers [`start`](Cluster::start) forks.
    pub fn workers(mut self, count: usize) -> Cluster {
        self.workers = count;
        self
    }

    /// The scheduling policy. Set here, it wins over `HERD_SCHED_POLICY` (as
    /// `cluster.schedulingPolicy` wins over `NODE_CLUSTER_SCHED_POLICY`).
    pub fn policy(mut self, policy: Policy) -> Cluster {
        self.policy = Some(policy);
        self
    }

    /// The program workers run (Node's `exec`). Default: this program, by the path it was
    /// started by, resolved when the primary starts: each worker then runs what is at that
    /// path when it is forked, so a binary replaced on disk (renamed over the running one, or
    /// a switched symlink) is what a rolling restart brings up. `argv[0]` is used when it names
    /// the running file at start (relative paths are resolved against the directory the
    /// primary started in, bare names on `PATH`), else the path `/proc/self/exe` names then.
    pub fn exec(mut self, program: impl Into<PathBuf>) -> Cluster {
        self.exec = Some(program.into());
        self
    }

    /// The workers' arguments (Node's `args`); default: this process's arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Cluster {
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// An environment variable for every worker, on top of the primary's environment.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Cluster {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The workers' working directory; default: the primary's.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Cluster {
        self.cwd = Some(dir.into());
        self
    }

    /// The user id workers run as (the primary must be allowed to switch to it).
    ///
    /// # Security
    /// The primary binds what workers listen on, with its own privileges. When workers run
    /// under other ids than the primary's (`uid`, [`gid`](Cluster::gid)), it binds for them
    /// only what they could bind themselves ([`herd_handle::check_bind_access`]: ports from
    /// 1024 up, socket files in directories they may write, abstract names) or what
    /// [`allow_listen`](Cluster::allow_listen) names; anything else fails with `EACCES`, as the
    /// worker's own bind would. Socket files it creates for them belong to them (`lchown`),
    /// and it removes a stale socket file for them only if they could remove it themselves.
    /// A root primary running `nobody` workers so gives them nothing they could not take.
    pub fn uid(mut self, uid: u32) -> Cluster {
        self.uid = Some(uid);
        self
    }

    /// The group id workers run as (see the security note on [`uid`](Cluster::uid)).
    pub fn gid(mut self, gid: u32) -> Cluster {
        self.gid = Some(gid);
        self
    }

    /// Lets workers that run under other ids than the primary's listen on `spec` through the
    /// primary although they could not bind it themselves: a port below 1024, a socket file
    /// in a directory only the primary may write, an inherited `fd://` or `systemd:`. The spec
    /// must be the one the worker asks for, as it resolves it (an absolute path for a socket
    /// file).
    /// Without other ids, everything is allowed and this changes nothing.
    pub fn allow_listen(mut self, spec: Spec) -> Cluster {
        self.allow_listen.push(spec);
        self
    }

    /// Makes the workers *socket-activated* programs, in any language, instead of herd
    /// workers: they speak no herd protocol (no control channel, no `HERD_IPC_FD`); each gets
    /// the sockets named by [`activation_listen`](Cluster::activation_listen) at descriptors 3,
    /// 4, … with `LISTEN_FDS` (their count), `LISTEN_FDNAMES` (their names, `:`-separated) and
    /// `LISTEN_PID` (its own pid), as systemd passes them (`sd_listen_fds(3)`), plus
    /// `HERD_WORKER_ID`; the primary's own `LISTEN_*`, `NOTIFY_SOCKET` and `WATCHDOG_*` are
    /// not passed on, nor is any other variable of herd's. [`exec`](Cluster::exec) names the
    /// program, [`args`](Cluster::args) its arguments (default: none).
    ///
    /// The primary binds each socket once, through its handle table, when the first worker is
    /// forked: `none` shares one socket among all workers; `reuseport` gives each place its own
    /// `SO_REUSEPORT` socket, kept by the primary, so a place's replacement (a respawn, a
    /// rolling restart) inherits it with its queue. The hand-off policies (`rr`,
    /// `least-conn`) need herd's worker protocol: [`Cluster::primary`] refuses them
    /// ([`Error::Activation`]).
    ///
    /// The lives are the primary's (respawn per place, [`Primary::restart_all`], scaling), with
    /// `readiness` in place of the `online` and `listening` messages: a worker is
    /// [`Event::Online`](crate::Event::Online) when it is ready, a rolling replacement not
    /// ready within [`ready_timeout`](Cluster::ready_timeout) aborts the restart and the old
    /// worker keeps serving. A disconnect (and so a graceful stop) is SIGTERM to the worker's
    /// process group (each worker leads its own, so what it started and kept in it stops with
    /// it: systemd's `KillMode=control-group`, `tini -g`), then SIGKILL to it after
    /// [`kill_timeout`](Cluster::kill_timeout). Each worker's standard input is `/dev/null`
    /// (systemd's `StandardInput=null`), its signals all at their default dispositions and
    /// unblocked, and no descriptor but its sockets and standard streams passes its exec. Hang detection does not
    /// apply (nothing answers the primary's pings).
    pub fn socket_activation(mut self, readiness: Readiness) -> Cluster {
        self.activation = Some(match readiness {
            Readiness::Delay(delay) => Readiness::Delay(delay.min(MAX_DURATION)),
            other => other,
        });
        self
    }

    /// A socket for socket-activated workers ([`socket_activation`](Cluster::socket_activation)):
    /// the next descriptor from 3 on, named `name` in `LISTEN_FDNAMES` (systemd's rules: at
    /// most 255 printable characters, no `:`; `unknown` is `sd_listen_fds_with_names(3)`'s
    /// name for an unnamed one).
    pub fn activation_listen(mut self, name: impl Into<String>, spec: Spec) -> Cluster {
        self.activation_listen.push(ActivationListen { name: name.into(), spec });
        self
    }

    /// The name the workers' output lines are prefixed with under [`Stdio::Prefixed`]:
    /// `[NAME worker 3] ` (without a name, `[worker 3] `).
    pub fn name(mut self, name: impl Into<String>) -> Cluster {
        self.name = Some(name.into());
        self
    }

    /// Makes the primary listen on a unix socket at `path` for `herd status`, `herd reload`,
    /// `herd scale N` and `herd stop` (the protocol: [`crate::control`]); default off.
    /// [`crate::control::default_path`] gives the path `herd run` uses for a name.
    ///
    /// The socket file is created when the primary is (its parent directory too, mode 0700,
    /// if missing), made mode 0600, and removed when the primary is dropped (only the file
    /// it bound). A file already at the path is replaced if no process listens on it (a
    /// stale socket of a primary that died), else the start fails (`EADDRINUSE`). Only the
    /// primary's effective uid and root are served, checked on every connection by
    /// `SO_PEERCRED`, so a mode changed by hand lets no one else in. Requests are read and
    /// answered on threads of their own, with timeouts and bounded reads
    /// ([`crate::control::IO_TIMEOUT`], [`crate::control::MAX_REQUEST_BYTES`]), and acted on
    /// by the primary's loop while [`Primary::next_event`] runs, so no client can stall
    /// the cluster.
    pub fn control_socket(mut self, path: impl Into<PathBuf>) -> Cluster {
        self.control = Some(path.into());
        self
    }

    /// Makes the primary a child subreaper, as tini is in a container (and as a PID 1 is
    /// anyway): a process a worker leaves behind (a daemon's double fork) is reparented to
    /// the primary when its parent exits, and the primary reaps it as soon as it exits (on
    /// the `SIGCHLD` it gets, handled through signal-hook's registry like its other signals,
    /// while [`Primary::next_event`] runs), so no zombie piles up. Default off: the primary
    /// then reaps *every* child of its own that is not a worker, so an application that waits
    /// for children of its own must leave it off.
    pub fn subreaper(mut self, on: bool) -> Cluster {
        self.subreaper = on;
        self
    }

    /// Makes [`Primary::handle_signals`] also forward, to every worker, the signals tini
    /// forwards that the primary does not act on itself: `SIGQUIT`, `SIGUSR1`, `SIGUSR2`,
    /// `SIGWINCH` (each arrives as [`Event::Signal`](crate::Event::Signal) too). What they
    /// mean is the workers' (log reopening, a stack dump, ...); a worker whose default action
    /// for one is to exit (`SIGUSR1` in most programs that do not handle it, `SIGQUIT` in
    /// all) dies of it and is respawned. Default off, since a library cluster's workers are
    /// the application's own. Not forwarded: what the primary acts on (`SIGINT`, `SIGTERM`,
    /// `SIGHUP`, `SIGTTIN`, `SIGTTOU`; `SIGCHLD`, reaped); `SIGCONT` (the kernel resumes the
    /// primary whatever its handler does, and passing it on would also resume a worker
    /// someone stopped on purpose); `SIGTSTP` (the primary keeps its default, stopping
    /// itself: its workers run in their own process group and are not stopped with it); and
    /// what the kernel sends a process about itself (`SIGPIPE`, `SIGALRM`, `SIGXCPU`,
    /// `SIGXFSZ`, ...), which says nothing to the workers.
    pub fn forward_signals(mut self, on: bool) -> Cluster {
        self.forward_signals = on;
        self
    }

    /// Serves the cluster's metrics and health probes over HTTP on `address` (feature
    /// `metrics`; default off), from a thread of the primary's, bound when the primary is
    /// created:
    ///
    /// - `GET /metrics`: [`Primary::stats`] in Prometheus' text format (0.0.4): `herd_worker_…`
    ///   series labelled `worker` and `place`, `herd_place_…` by `place`, `herd_listener_…`
    ///   by `listener` (the handle's key), the hand-off latency as the histogram
    ///   `herd_listener_handoff_latency_seconds`, Jain's index as `herd_fairness_jain_index`.
    /// - `GET /readyz`: 200 while every place has a ready worker and no stop is under way,
    ///   503 otherwise, so a load balancer drains the host as soon as a stop begins.
    /// - `GET /livez`: 200 while the primary's loop turns (it answers the thread within
    ///   500 ms, [`PROBE_TIMEOUT`](crate::stats::PROBE_TIMEOUT)), 503 when it is stuck (or the
    ///   application stopped calling [`Primary::next_event`]).
    ///
    /// Each request is answered from a fresh snapshot that the thread asks the primary's loop
    /// for (so figures are exact at the moment of the scrape), with no async runtime; a
    /// primary's loop that does not answer in time gets `/metrics` the last snapshot taken
    /// (`herd_primary_responsive 0`). Bind a loopback or private address: nothing is
    /// authenticated. `Primary::metrics_address` gives the bound address (port 0 resolved).
    ///
    /// # Errors
    /// [`Cluster::primary`] and [`Cluster::start`] fail with [`Error::Listen`] (operation
    /// `bind the metrics listener`, the address and its errno) when it cannot be bound.
    #[cfg(feature = "metrics")]
    pub fn metrics_listen(mut self, address: std::net::SocketAddr) -> Cluster {
        self.metrics = Some(address);
        self
    }

    /// Makes the primary tell systemd how the cluster is (`sd_notify(3)`, for a `Type=notify`
    /// service), if `NOTIFY_SOCKET` names a socket (nothing is sent without it): `READY=1` once
    /// every place's first worker is online ([`Event::Online`](crate::Event::Online); for
    /// socket-activated workers, ready), `RELOADING=1` with `MONOTONIC_USEC=` (which systemd
    /// 253 and later require) when a rolling restart begins and `READY=1` when it ends or is
    /// aborted, `STOPPING=1` when a stop begins ([`Primary::disconnect_all`]), a `STATUS=` line
    /// a person can read with each, and `WATCHDOG=1` every half of `WATCHDOG_USEC` when that is
    /// set for this process. Sent as the events are returned by
    /// [`Primary::next_event`]. Default off. The workers never see the primary's
    /// `NOTIFY_SOCKET` when they are socket-activated; herd workers inherit the environment.
    pub fn notify_systemd(mut self, on: bool) -> Cluster {
        self.notify_systemd = on;
        self
    }

    /// Where the workers' output goes.
    pub fn stdio(mut self, stdio: Stdio) -> Cluster {
        self.stdio = stdio;
        self
    }

    /// How many connections may be handed to one worker without an acknowledgement, per
    /// handle, under `rr` and `least-conn`. 1 (the default) is Node's behaviour; more lets a
    /// busy worker queue a few while it finishes its current accept.
    ///
    /// A floor, not a ceiling, per worker: a worker whose listener is taken by an event loop
    /// (herd's tokio listener) may have 8 in flight, and under `rr` a worker whose threads
    /// wait in [`Listener::accept`](crate::Listener::accept) as many as wait there (up to 8;
    /// each ack says how many), so the connections of one wake-up go to it in one system
    /// call without any waiting behind a busy thread.
    pub fn max_in_flight(mut self, count: NonZeroUsize) -> Cluster {
        self.max_in_flight = count;
        self
    }

    /// How long a disconnecting worker may take to finish its connections and exit before the
    /// primary kills it (pm2's `kill_timeout`); default 5 s, at most [`MAX_DURATION`].
    pub fn kill_timeout(mut self, timeout: Duration) -> Cluster {
        self.kill_timeout = timeout.min(MAX_DURATION);
        self
    }

    /// How long a rolling restart ([`Primary::restart_all`]) waits for a replacement to be
    /// ready, from its fork: online, and listening on every key its predecessor listens on.
    /// A replacement not ready by then is killed, the old worker keeps serving, and the
    /// restart ends with [`Event::RestartAborted`](crate::Event::RestartAborted) naming what
    /// was missing. Default 30 s, at most [`MAX_DURATION`].
    ///
    /// The default follows gunicorn's worker `timeout` (30 s). pm2's `listen_timeout` (3 s)
    /// is far shorter because pm2 then goes on *as if* the new process were ready and stops
    /// the old one; here the timeout throws the new worker away instead, so it must cover a
    /// slow but healthy start (loading caches, connecting to a database on a busy host).
    /// systemd's `TimeoutStartSec` (90 s by default) bounds a whole service start; a rolling
    /// restart holds one place at a time, and every restart request is ignored while it
    /// runs, so it should give up sooner.
    pub fn ready_timeout(mut self, timeout: Duration) -> Cluster {
        self.ready_timeout = timeout.min(MAX_DURATION);
        self
    }

    /// How long a worker may stop answering the primary, or stop taking the connections meant
    /// for it, before it is reported ([`Event::Hung`](crate::Event::Hung)), killed (SIGKILL)
    /// and respawned in its place. Default 30 s, gunicorn's worker `timeout`, at most
    /// [`MAX_DURATION`]; `None` turns detection off. No heartbeat call is asked of the application: the primary pings the
    /// worker's control thread (catching a worker stopped as a whole), watches hand-offs left
    /// unanswered (`rr`, `least-conn`) and, under `reuseport`, an accept queue that does not
    /// drain (catching a worker whose every thread is stuck). Disconnecting workers are left
    /// to [`kill_timeout`](Cluster::kill_timeout), workers not yet online to the ready timeout.
    pub fn hang_timeout(mut self, timeout: Option<Duration>) -> Cluster {
        self.hang_timeout = timeout.map(|t| t.min(MAX_DURATION));
        self
    }

    /// How workers that die unexpectedly are replaced, each place on its own; by default they
    /// are, after 100 ms doubling to 15 s for a place whose workers keep dying quickly, for
    /// ever (no restart limit, so a crash-looping place neither halts nor slows the others).
    pub fn respawn(mut self, policy: RespawnPolicy) -> Cluster {
        self.respawn = policy;
        self
    }

    /// The policy this cluster will use: the one set in code, else `HERD_SCHED_POLICY`, else
    /// `rr`.
    ///
    /// # Errors
    /// [`Error::Policy`] when `HERD_SCHED_POLICY` names no policy (the message lists the valid
    /// ones). Node falls back to the default silently; a typo in production config deserves
    /// better.
    pub fn resolved_policy(&self) -> Result<Policy, Error> {
        if let Some(policy) = self.policy {
            return Ok(policy);
        }
        let value = std::env::var(herd_sched::ENV_VAR).ok();
        herd_sched::from_env_value(value.as_deref())
            .map(Option::unwrap_or_default)
            .map_err(|source| Error::Policy { var: herd_sched::ENV_VAR, source })
    }

    /// Becomes the primary with no worker yet: fork them with [`Primary::fork`].
    ///
    /// # Socket activation
    /// The first primary of a process takes the sockets systemd (or any service manager
    /// speaking the protocol) passed it, as `sd_listen_fds_with_names(3)` reads them: only if
    /// `LISTEN_PID` is this process's pid, `LISTEN_FDS` sockets from descriptor 3, named by
    /// `LISTEN_FDNAMES` (`unknown` without it), each made close-on-exec and kept for the
    /// process's life. A worker's `listen("systemd:NAME")` (or an
    /// [`activation_listen`](Cluster::activation_listen) of [`Spec::Systemd`]) gets the
    /// first socket of that name (`systemd:NAME:1` the second), shared like an inherited
    /// `fd://` socket under every policy (under `reuseport` too: one socket for all places)
    /// and never shut down by a stop, since systemd holds it too. A name that was not passed
    /// fails that listen, and [`Event::ListenFailed`](crate::Event::ListenFailed) says
    /// `listen systemd:NAME: systemd passed no socket named "NAME" (LISTEN_FDNAMES: …)`; a
    /// malformed `LISTEN_PID`, `LISTEN_FDS` or `LISTEN_FDNAMES` (or a descriptor it names that
    /// is not open) fails it naming the variable. The variables are not unset: changing the
    /// environment while other threads may read it is unsound; no worker gets them, and a
    /// child the application starts itself sees a `LISTEN_PID` that is not its own.
    ///
    /// # Errors
    /// [`Error::Policy`] for a bad `HERD_SCHED_POLICY`; [`Error::Control`] when the control
    /// socket ([`control_socket`](Cluster::control_socket)) cannot be bound; [`Error::Io`] when
    /// the event loop cannot be set up, or, without [`exec`](Cluster::exec), when this program's path cannot
    /// be found (`/proc/self/exe` unreadable).
    pub fn primary(self) -> Result<Primary, Error> {
        Primary::new(self)
    }

    /// Becomes the primary and forks the configured number of workers.
    ///
    /// # Errors
    /// As [`primary`](Cluster::primary), and [`Primary::fork`]'s errors.
    pub fn start(self) -> Result<Primary, Error> {
        let count = self.workers;
        let mut primary = Primary::new(self)?;
        for _ in 0..count {
            primary.fork()?;
        }
        Ok(primary)
    }
}
