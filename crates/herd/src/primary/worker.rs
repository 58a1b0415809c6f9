//! The primary's record of one worker.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::process::{Child, ExitStatus};
use std::time::Instant;

use herd_ipc::Channel;
use herd_registry::Watched;

use crate::WorkerId;
use crate::protocol::ToWorker;

/// A worker's state as the primary sees it (Node's `worker.state`). Serialised as Node
/// spells it in lower case (`"online"`, `"listening"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Forked, not yet online.
    Forked,
    /// Its `online` message arrived.
    Online,
    /// It listens on at least one handle.
    Listening,
    /// Its control channel closed.
    Disconnected,
    /// It exited.
    Dead,
}

/// What [`Primary::workers`](crate::Primary::workers) tells about a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Its id.
    pub id: WorkerId,
    /// Its process id.
    pub pid: u32,
    /// Its state.
    pub state: State,
    /// Its place in the cluster: 0, 1, … up to the number of workers. A replacement (respawn
    /// or rolling restart) takes its predecessor's place.
    pub place: Option<usize>,
    /// Whether a disconnect has been started (Node's `exitedAfterDisconnect`).
    pub disconnecting: bool,
    /// Whether the primary holds as many of its messages as it may
    /// ([`Primary::MAX_HELD_EVENTS`](crate::Primary::MAX_HELD_EVENTS) events or
    /// [`MAX_HELD_FDS`](crate::Primary::MAX_HELD_FDS) descriptors) and has stopped reading its
    /// channel until the application takes half of them: its `send` waits meanwhile.
    pub held_back: bool,
}

pub(crate) struct Slot {
    pub(crate) id: WorkerId,
    pub(crate) pid: u32,
    pub(crate) child: Child,
    /// `None` once the channel closed.
    pub(crate) control: Option<Watched<Channel>>,
    /// A socket-activated worker ([`Cluster::socket_activation`](crate::Cluster::socket_activation)):
    /// no control channel; a disconnect is SIGTERM.
    pub(crate) activated: bool,
    /// A socket-activated worker's `NOTIFY_SOCKET` (`--ready notify`), until it exits.
    pub(crate) notify: Option<Watched<std::os::unix::net::UnixDatagram>>,
    /// When a socket-activated worker counts as ready (`Readiness::Delay`), until it is.
    pub(crate) ready_at: Option<Instant>,
    /// The pidfd; `None` once the worker exited.
    pub(crate) exit: Option<Watched<OwnedFd>>,
    /// Messages the worker's full queue did not take yet, in order.
    pub(crate) outbox: VecDeque<(ToWorker, Vec<OwnedFd>)>,
    pub(crate) state: State,
    pub(crate) status: Option<ExitStatus>,
    /// Its place in the cluster (`None` once it gave the place up, being removed).
    pub(crate) place: Option<usize>,
    /// A disconnect was started, by either side (Node's `exitedAfterDisconnect`).
    pub(crate) after_disconnect: bool,
    /// When a disconnecting worker is killed if it has not exited.
    pub(crate) kill_at: Option<Instant>,
    /// When to try the outbox again after a transient send error.
    pub(crate) retry_at: Option<Instant>,
    pub(crate) started: Instant,
    /// When it first listened (its first `Listening`): the start of its share of hand-offs.
    pub(crate) listening_since: Option<Instant>,
    /// Since when a ping to it has gone unanswered (`None`: it answered, or nothing was
    /// asked). Anything received from it on the control channel counts as an answer.
    pub(crate) unanswered_since: Option<Instant>,
    /// Reported hung and killed: not checked again.
    pub(crate) hung: bool,
    /// Events from its messages that the application has not taken yet, and the descriptors
    /// they carry (see `budget.rs`).
    pub(crate) held_events: usize,
    pub(crate) held_fds: usize,
    /// Its channel is out of the poller until the application takes some of its events.
    pub(crate) reading_paused: bool,
    /// It exited while its channel was paused: its exit is handled once what it sent before
    /// is read (its last words come before its `exit`).
    pub(crate) exit_deferred: bool,
    /// Reported past a limit and killed: not reported again.
    pub(crate) cut_off: bool,
    /// Since when the primary has read this worker's channel without a break of its own
    /// (forked, read again after being held back, or the application back after a long
    /// absence): hang detection counts no sign from before, since a worker that waits on the
    /// primary (its `send` blocked on a full channel) cannot take connections either.
    pub(crate) read_since: Instant,
    /// It was granted a listen, or said it listens (an exclusive listen), at least once.
    pub(crate) listened: bool,
    /// Its latest listen through the primary failed, so: the error, as the worker got it.
    /// Cleared by a later successful one.
    pub(crate) listen_failure: Option<String>,
    /// The start of the latest message it sent (empty: none): [`LAST_MESSAGE_BYTES`] bytes,
    /// and one more if there were more.
    pub(crate) last_message: Vec<u8>,
    /// Application messages read from it (`Event::Message`), and sent to it (`send`).
    pub(crate) messages_received: u64,
    pub(crate) messages_sent: u64,
}

/// How much of a worker's latest message the primary keeps, to say it when the worker dies
/// before it is ready.
pub(crate) const LAST_MESSAGE_BYTES: usize = 200;

impl Slot {
    /// Sends `signal` to the worker: a socket-activated one with its whole process group
    /// (what it started and did not move elsewhere dies with it, systemd's
    /// `KillMode=control-group`); herd's own workers alone. Errors (it is gone) are ignored.
    pub(crate) fn kill(&self, signal: crate::Signal) {
        let _ = if self.activated {
            crate::sys::kill_group(self.pid, signal.number())
        } else {
            crate::sys::kill(self.pid, signal.number())
        };
    }

    pub(crate) fn info(&self) -> WorkerInfo {
        WorkerInfo {
            id: self.id,
            pid: self.pid,
            state: self.state,
            place: self.place,
            disconnecting: self.after_disconnect,
            held_back: self.reading_paused,
        }
    }

    /// Whether the primary holds as much of what it sent as it may (see `budget.rs`).
    pub(crate) fn over_budget(&self) -> bool {
        self.held_events >= crate::Primary::MAX_HELD_EVENTS
            || self.held_fds >= crate::Primary::MAX_HELD_FDS
    }

    /// What the worker said last, for a report of its death: `; its last listen failed: …`
    /// and `; its last message: "…"`, each when there is one; empty otherwise.
    pub(crate) fn last_words(&self) -> String {
        let mut words = String::new();
        if let Some(failure) = &self.listen_failure {
            words.push_str(&format!("; its last listen failed: {failure}"));
        }
        if !self.last_message.is_empty() {
            let kept = &self.last_message[..self.last_message.len().min(LAST_MESSAGE_BYTES)];
            let text = String::from_utf8_lossy(kept);
            let more = if self.last_message.len() > LAST_MESSAGE_BYTES { "..." } else { "" };
            words.push_str(&format!("; its last message: {:?}{more}", text.trim_end()));
        }
        words
    }

    /// Keeps the start of a message the worker sent, as its latest.
    pub(crate) fn record_message(&mut self, data: &[u8]) {
        self.last_message.clear();
        self.last_message.extend_from_slice(&data[..data.len().min(LAST_MESSAGE_BYTES + 1)]);
    }

    /// Both the channel and the process are gone: the worker leaves the table.
    pub(crate) fn is_finished(&self) -> bool {
        self.control.is_none() && self.exit.is_none()
    }
}
