//! Log lines for the cluster's lifecycle, through `tracing` (feature `tracing`): each emitted
//! where its facts are known, with structured fields, so the application's subscriber decides
//! the format and the destination. Without the feature every function here is empty and
//! inlined away.
//!
//! Fields, named alike in every line: `worker` (id), `pid`, `place`, `reason` / `status` /
//! `error` (in words), and durations as seconds in `f64` fields ending in `_seconds`
//! (Prometheus' base unit). Levels: `info` for what an operator asked for or expects (a
//! restart, a scale step, an exit after a disconnect), `warn` for what the cluster recovers
//! from by itself (a crash and its respawn, a hang, a cut-off, a failed listen, an aborted
//! restart), `error` for what it gives up on (a halted place, a failed fork); `debug` for the
//! routine steps of each worker (fork, online, listening, disconnect).
//!
//! Every event's target is `herd::primary` (a filter such as `RUST_LOG=herd=warn` keeps the
//! warnings and errors).

// The arguments are used only with the feature.
#![cfg_attr(not(feature = "tracing"), allow(unused_variables))]

use std::process::ExitStatus;
use std::time::Duration;

use crate::WorkerId;

/// Expands to a `tracing` event with target `herd::primary` when the feature is on, to nothing
/// otherwise.
macro_rules! emit {
    ($level:ident, $($rest:tt)*) => {
        #[cfg(feature = "tracing")]
        ::tracing::$level!(target: "herd::primary", $($rest)*);
    };
}

/// `Fork`.
pub(super) fn fork(worker: WorkerId, pid: u32, place: usize) {
    emit!(debug, worker, pid, place, "worker {worker} (pid {pid}) forked into place {place}");
}

/// `Online`.
pub(super) fn online(worker: WorkerId, pid: u32) {
    emit!(debug, worker, pid, "worker {worker} (pid {pid}) online");
}

/// `Listening`.
pub(super) fn listening(worker: WorkerId, address: &dyn std::fmt::Display) {
    emit!(debug, worker, %address, "worker {worker} listens on {address}");
}

/// `ListenFailed`.
pub(super) fn listen_failed(
    worker: WorkerId,
    address: &dyn std::fmt::Display,
    error: &dyn std::fmt::Display,
) {
    emit!(warn, worker, %address, %error, "worker {worker} could not listen: {error}");
}

/// `Disconnect`: the worker's control channel closed.
pub(super) fn disconnect(worker: WorkerId, pid: u32, disconnecting: bool) {
    emit!(debug, worker, pid, disconnecting, "worker {worker} (pid {pid}) disconnected");
}

/// `Exit`.
pub(super) fn exit(
    worker: WorkerId,
    pid: u32,
    status: ExitStatus,
    after_disconnect: bool,
    uptime: Duration,
) {
    let uptime_seconds = uptime.as_secs_f64();
    if after_disconnect {
        emit!(info, worker, pid, %status, after_disconnect, uptime_seconds,
            "worker {worker} (pid {pid}) exited: {status}");
    } else {
        emit!(warn, worker, pid, %status, after_disconnect, uptime_seconds,
            "worker {worker} (pid {pid}) exited: {status}");
    }
}

/// `Respawning`: why the worker died (`status`), after how long, and the backoff.
pub(super) fn respawning(
    worker: WorkerId,
    pid: u32,
    place: usize,
    status: ExitStatus,
    uptime: Duration,
    delay: Duration,
) {
    let (uptime_seconds, backoff_seconds) = (uptime.as_secs_f64(), delay.as_secs_f64());
    emit!(warn, worker, pid, place, %status, uptime_seconds, backoff_seconds,
        "respawning worker {worker}'s place {place} in {delay:?}: it died ({status}) after {uptime_seconds:.1}s");
}

/// `RespawnHalted`.
pub(super) fn respawn_halted(place: usize, reason: &str) {
    emit!(error, place, reason, "respawn halted: {reason}");
}

/// `ForkFailed`.
pub(super) fn fork_failed(place: Option<usize>, reason: &str) {
    emit!(error, place, reason, "{reason}");
}

/// `Hung`: the worker is being killed.
pub(super) fn hung(worker: WorkerId, pid: u32, place: Option<usize>, reason: &str) {
    emit!(
        warn,
        worker,
        pid,
        place,
        reason,
        "worker {worker} (pid {pid}) hung: {reason}: killing it (SIGKILL)"
    );
}

/// `CutOff`: the worker is being killed.
pub(super) fn cut_off(worker: WorkerId, pid: u32, reason: &str) {
    emit!(
        warn,
        worker,
        pid,
        reason,
        "worker {worker} (pid {pid}) cut off: {reason}: killing it (SIGKILL)"
    );
}

/// The primary stopped reading a worker's channel: the application has not taken what it sent.
pub(super) fn held_back(worker: WorkerId, pid: u32, events: usize, fds: usize) {
    emit!(
        warn,
        worker,
        pid,
        events,
        fds,
        "worker {worker} (pid {pid}) held back: {events} of its events ({fds} descriptors) \
         wait for the application; its sends wait until half are taken"
    );
}

/// The primary reads a held-back worker again.
pub(super) fn resumed(worker: WorkerId, pid: u32) {
    emit!(info, worker, pid, "worker {worker} (pid {pid}) read again");
}

/// `Scaled`.
pub(super) fn scaled(from: usize, to: usize) {
    emit!(info, from, to, "scaled from {from} to {to} workers");
}

/// `Signal`: acted on, or `forwarded` to every worker (`Cluster::forward_signals`).
pub(super) fn signal(signal: crate::Signal, forwarded: bool) {
    let name = signal.name();
    if forwarded {
        emit!(info, signal = name, forwarded, "{name} received, forwarded to every worker");
    } else {
        emit!(info, signal = name, forwarded, "{name} received");
    }
}

/// `Restarting`.
pub(super) fn restart_begins(workers: usize) {
    emit!(info, workers, "rolling restart of {workers} workers");
}

/// A rolling restart replaced the worker of `place`: its replacement is ready (listens on
/// everything its predecessor did) `ready` after its fork, and the predecessor is told to
/// disconnect.
pub(super) fn replaced(place: usize, old: WorkerId, new: WorkerId, pid: u32, ready: Duration) {
    let ready_seconds = ready.as_secs_f64();
    emit!(
        info,
        place,
        old,
        worker = new,
        pid,
        ready_seconds,
        "place {place}: worker {old} replaced by worker {new} (pid {pid}), ready in {ready_seconds:.2}s"
    );
}

/// `Restarted`.
pub(super) fn restarted(replaced: usize, took: Duration) {
    let seconds = took.as_secs_f64();
    emit!(info, replaced, seconds, "restarted: {replaced} workers replaced in {seconds:.2}s");
}

/// `RestartMerged`.
pub(super) fn restart_merged(places: &[usize]) {
    emit!(info, places = ?places, "restart merged: places {places:?} roll again");
}

/// `RestartAborted`.
pub(super) fn restart_aborted(place: usize, reason: &str, took: Option<Duration>) {
    let seconds = took.map(|t| t.as_secs_f64());
    emit!(warn, place, reason, seconds, "restart aborted at place {place}: {reason}");
}

/// `disconnect_all`: a stop begins.
pub(super) fn stopping(workers: usize) {
    emit!(info, workers, "stopping: disconnecting {workers} workers");
}

/// `Drained`.
pub(super) fn drained() {
    emit!(info, "drained: every worker exited, every socket released");
}

/// The control socket ([`Cluster::control_socket`](crate::Cluster::control_socket)).
pub(super) fn control_listening(path: &std::path::Path) {
    let path = path.display();
    emit!(info, %path, "control socket at {path}");
}

/// A control connection refused, or broken off.
pub(super) fn control_refused(reason: &str) {
    emit!(warn, reason, "control socket: {reason}");
}

/// A control request was acted on.
pub(super) fn control_request(request: &str, uid: u32, pid: u32) {
    emit!(info, request, uid, pid, "control: {request} (from pid {pid}, uid {uid})");
}
