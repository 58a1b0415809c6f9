//! [`Event`]: what the primary reports.

use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use std::time::Duration;

use herd_handle::Spec;

use super::WorkerInfo;
#[cfg(doc)]
use crate::Primary;
use crate::{Signal, WorkerId};

/// What happened in the cluster: Node's `cluster` events.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A worker was forked (Node's `fork`).
    Fork(WorkerId),
    /// A worker is up (Node's `online`).
    Online(WorkerId),
    /// A worker listens on `address`, with the real port when port 0 was asked (Node's
    /// `listening`); once per listen.
    Listening {
        /// The worker.
        worker: WorkerId,
        /// Where.
        address: Spec,
    },
    /// A listen (or UDP bind) the primary did for a worker failed: the worker's
    /// [`listen`](crate::Worker::listen) returns the same error. Node leaves this to the
    /// worker's `error` event, so every application must invent a way to tell its primary;
    /// here the primary, which did the bind, says it. Listens with
    /// [`ListenOptions::exclusive`](crate::ListenOptions::exclusive) bind in the worker and
    /// are not reported.
    ///
    /// A worker that then exits before it ever listened is not respawned
    /// ([`RespawnHalted`](Event::RespawnHalted)): it would fail the same way in a loop. What
    /// to do (stop, as the README's program does; fork again later) is the application's call.
    ListenFailed {
        /// The worker that asked.
        worker: WorkerId,
        /// What it asked for (`tcp://127.0.0.1:0` for port 0).
        address: Spec,
        /// The failure, as the worker sees it: `bind tcp://127.0.0.1:8080: Address already in
        /// use (os error 98)`. [`raw_os_error`](herd_handle::Error::raw_os_error) gives the
        /// errno of the system call that failed (`EADDRINUSE`, `EACCES`, ...);
        /// [`op`](herd_handle::Error::op) the operation (`bind`, `listen`, ...). A bind the
        /// primary refused itself for workers under other ids
        /// ([`Cluster::uid`](crate::Cluster::uid)) is `PermissionDenied`, its message saying
        /// why, with no system call's errno.
        error: herd_handle::Error,
    },
    /// A worker sent a message, with descriptors (Node's `message`).
    Message {
        /// The sender.
        worker: WorkerId,
        /// The payload.
        data: Vec<u8>,
        /// Descriptors sent with it, owned by the receiver now.
        fds: Vec<OwnedFd>,
    },
    /// A worker's message arrived without the descriptors it carried: this process was at its
    /// descriptor limit, so the kernel could not install them and closed them (`MSG_CTRUNC`,
    /// see `unix(7)`). The data is here; the descriptors are lost. Raise the limit, or hold
    /// fewer descriptors, if this comes.
    DescriptorsLost {
        /// The sender.
        worker: WorkerId,
        /// The payload.
        data: Vec<u8>,
    },
    /// A worker's control channel closed (Node's `disconnect`): it exited, or is about to.
    Disconnect {
        /// The worker.
        worker: WorkerId,
        /// Its state when its channel closed, kept here because [`Primary::worker`] may have
        /// forgotten it by the time the event is read (a worker leaves the table once its
        /// channel is closed and its process reaped). `info.state` is
        /// [`State::Disconnected`](crate::State::Disconnected) (or `Dead` if its exit was
        /// seen first); `info.disconnecting` is Node's `worker.exitedAfterDisconnect` as known
        /// at this point: `true` when a disconnect was asked for (by the primary,
        /// [`Primary::disconnect`], a stop, a rolling restart or a removal; or by the worker,
        /// `Worker::disconnect`, `Worker::kill`, SIGTERM), `false` when the channel closed with
        /// no disconnect under way (a crash, a kill from outside).
        info: WorkerInfo,
    },
    /// A worker exited (Node's `exit`): see [`ExitStatus::code`] and, through
    /// `std::os::unix::process::ExitStatusExt`, `signal()`.
    Exit {
        /// The worker.
        worker: WorkerId,
        /// How it ended: an exit code, or the signal that killed it.
        status: ExitStatus,
        /// Whether it exited by itself (an exit code, not a signal) after a disconnect was
        /// started: a graceful drain. `false` for a crash, an exit of its own with no
        /// disconnect, and any worker killed by a signal, even one that was disconnecting
        /// (killed at [`Cluster::kill_timeout`](crate::Cluster::kill_timeout), by
        /// [`Primary::kill`] with `Signal::Kill`, by anyone): a kill is reported as a kill,
        /// with its signal in `status`. `info.disconnecting` still says whether a disconnect
        /// was under way (Node's `exitedAfterDisconnect`, which is also `true` after a kill
        /// the application asked for).
        after_disconnect: bool,
        /// Its state at its exit (`info.state` is [`State::Dead`](crate::State::Dead)):
        /// [`Primary::worker`] forgets a worker once it has exited and its channel is closed.
        info: WorkerInfo,
    },
    /// A worker died unexpectedly and will be replaced after `delay` (backoff).
    Respawning {
        /// The worker that died.
        worker: WorkerId,
        /// Its place in the cluster, which the replacement takes.
        place: usize,
        /// How long until the replacement is forked.
        delay: Duration,
    },
    /// A place is no longer respawned (its sockets are vacated), while the other places go
    /// on: its workers kept dying past [`RespawnPolicy::max_restarts`] (`crate::RespawnPolicy`;
    /// never with the default policy, which retries a crash-looping place for ever at the
    /// capped delay), or its worker exited before it ever listened, its last listen having
    /// failed ([`ListenFailed`](Event::ListenFailed) said why; a respawn would fail the same
    /// way). A later [`Primary::fork`] may fill the place again.
    ///
    /// [`RespawnPolicy::max_restarts`]: crate::RespawnPolicy::max_restarts
    RespawnHalted {
        /// The place that halted.
        place: usize,
        /// Why, in words.
        reason: String,
    },
    /// A worker stopped answering the primary, or stopped taking the connections meant for
    /// it, for [`Cluster::hang_timeout`](crate::Cluster::hang_timeout): it is being killed
    /// (SIGKILL), and is respawned in its place as after any death (gunicorn's worker
    /// `timeout`).
    Hung {
        /// The worker.
        worker: WorkerId,
        /// Which sign, and for how long.
        reason: String,
    },
    /// A worker went past a limit on what the primary holds for it, which only a worker that
    /// breaks the protocol does (it sends listen requests and does not read the replies, past
    /// [`Primary::MAX_UNREAD_REPLIES`]): it is being killed (SIGKILL) and is respawned in its
    /// place as after any death. A worker that merely sends faster than the application takes
    /// its messages is not cut off: it waits (see [`Primary::MAX_HELD_EVENTS`]).
    CutOff {
        /// The worker.
        worker: WorkerId,
        /// Which limit, with the figures: `it does not read its control channel: 64 replies to
        /// its listen requests wait unread (the limit is 64)`.
        reason: String,
    },
    /// A signal arrived and is being acted on (see [`Primary::handle_signals`]).
    Signal(Signal),
    /// A worker the primary forks by itself could not be started: for SIGTTIN (the cluster
    /// keeps the workers it has), or as a respawn (retried after the next backoff step, within
    /// the restart limit, until [`RespawnHalted`](Event::RespawnHalted)). A failed rolling
    /// replacement is reported as [`RestartAborted`](Event::RestartAborted).
    ForkFailed {
        /// Why: the [`Error`](crate::Error) in words, naming the worker id, the program and
        /// the errno.
        reason: String,
    },
    /// SIGTTIN or SIGTTOU was acted on (see [`Primary::handle_signals`]): the cluster
    /// counted `from` workers and now counts `to` (a place waiting for its respawn counts as a
    /// worker). `from == to` after a SIGTTOU at one worker: a signal never removes the last
    /// worker (gunicorn's floor), see [`Primary::remove_worker`]. A SIGTTIN whose fork failed
    /// is [`ForkFailed`](Event::ForkFailed) instead.
    Scaled {
        /// Workers before.
        from: usize,
        /// Workers after.
        to: usize,
    },
    /// A rolling restart began ([`Primary::restart_all`], or SIGHUP): `workers` places will
    /// be replaced one at a time. [`Restarted`](Event::Restarted) or
    /// [`RestartAborted`](Event::RestartAborted) ends it.
    Restarting {
        /// How many places it will roll.
        workers: usize,
    },
    /// A rolling restart replaced every worker it set out to replace, including the places a
    /// merged request ([`RestartMerged`](Event::RestartMerged)) added.
    Restarted,
    /// A restart was asked for ([`Primary::restart_all`], SIGHUP) while one was under way: the
    /// request is merged into it rather than ignored or run twice. The places in `places`
    /// (rolled, or rolling, before the request: their workers were forked before it, perhaps
    /// from an older binary) are rolled again at the end of the restart under way; the places
    /// it had not reached yet roll once, after the request. So every worker serving at the
    /// end was forked after the last request, and one [`Restarted`](Event::Restarted) (or
    /// [`RestartAborted`](Event::RestartAborted)) ends them all.
    RestartMerged {
        /// The places that roll again, in the order they will.
        places: Vec<usize>,
    },
    /// A rolling restart stopped early: the replacement for `place` could not be forked,
    /// died before it was ready, or was not ready within
    /// [`Cluster::ready_timeout`](crate::Cluster::ready_timeout) (it is killed then); or the
    /// cluster began to stop ([`Primary::disconnect_all`], SIGTERM, SIGINT), which disconnects
    /// both workers of the place too (`the cluster is stopping`). Places rolled before keep
    /// their new workers; a later [`Primary::restart_all`] starts over.
    RestartAborted {
        /// The place whose replacement failed; its old worker keeps serving (unless the
        /// cluster is stopping: then it drains like every other worker).
        place: usize,
        /// Why, in words, naming the replacement and what it said last:
        /// `replacement worker 7 did not listen on 127.0.0.1:0:4:undefined:1 within 30s`;
        /// `replacement worker 7 died before it was ready: exit status: 1; its last listen
        /// failed: bind tcp://127.0.0.1:8080: Address already in use (os error 98); its last
        /// message: "config: no such file"`; or the fork's error, with the program and the
        /// exec's error (`fork a replacement for place 0: fork worker 7: spawn /srv/app:
        /// Permission denied (os error 13)`); or `the cluster is stopping`.
        reason: String,
    },
    /// Every worker has exited and every bound socket is released, after
    /// [`disconnect_all`](Primary::disconnect_all) (Node's `cluster.disconnect` callback, but
    /// only once it is really true). It ends the stop: respawning and restarts work again for
    /// workers forked after it, and a later `disconnect_all` is a new stop with a `Drained` of
    /// its own. Calls made while a stop is under way join it: one `Drained` answers them all.
    Drained,
}
