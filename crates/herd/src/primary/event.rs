//! [`Event`]: what the primary reports.

use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use std::time::Duration;

use herd_handle::Spec;

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
    /// A worker's control channel closed (Node's `disconnect`).
    Disconnect(WorkerId),
    /// A worker exited (Node's `exit`): see [`ExitStatus::code`] and, through
    /// `std::os::unix::process::ExitStatusExt`, `signal()`.
    Exit {
        /// The worker.
        worker: WorkerId,
        /// How it ended.
        status: ExitStatus,
        /// Whether the exit followed a disconnect (Node's `worker.exitedAfterDisconnect`):
        /// `false` for a crash, a signal from outside, or an exit of its own.
        after_disconnect: bool,
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
    /// The workers of one place kept dying past [`RespawnPolicy::max_restarts`]
    /// (`crate::RespawnPolicy`): that place is no longer respawned (and its sockets are
    /// vacated), while the other places go on. Never sent with the default policy, which
    /// retries a crash-looping place for ever at the capped delay.
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
    /// A rolling restart replaced every worker it set out to replace.
    Restarted,
    /// A rolling restart stopped early: the replacement for `place` could not be forked,
    /// died before it was ready, or was not ready within
    /// [`Cluster::ready_timeout`](crate::Cluster::ready_timeout) (it is killed then). Places
    /// rolled before keep their new workers; a later [`Primary::restart_all`] starts over.
    RestartAborted {
        /// The place whose replacement failed; its old worker keeps serving.
        place: usize,
        /// Why, in words, naming the replacement: `replacement worker 7 did not listen on
        /// 127.0.0.1:0:4:undefined:1 within 30s`, `replacement worker 7 died before
        /// listening: exit status: 1`, or the fork's error.
        reason: String,
    },
    /// Every worker has exited and every bound socket is released, after
    /// [`disconnect_all`](Primary::disconnect_all) (Node's `cluster.disconnect` callback, but
    /// only once it is really true).
    Drained,
}
