//! What a PID 1 does, done by the primary as tini does it in a container: reaping the orphans
//! reparented to it ([`Cluster::subreaper`]) as they die, and forwarding to every worker the
//! signals it does not act on itself ([`Cluster::forward_signals`]).
//!
//! [`Cluster::subreaper`]: crate::Cluster::subreaper
//! [`Cluster::forward_signals`]: crate::Cluster::forward_signals

use std::os::fd::AsFd;
use std::sync::Arc;

use herd_registry::{Poller, Watched};

use super::{Primary, REAP_TOKEN};
use crate::{Error, Signal, sys};

/// The signals a forwarding primary passes on to every worker: those tini forwards, less the
/// ones herd acts on (`SIGINT`, `SIGTERM`, `SIGHUP`, `SIGTTIN`, `SIGTTOU`, `SIGCHLD`) and the
/// ones it leaves alone (see [`Cluster::forward_signals`](crate::Cluster::forward_signals)).
pub(super) const FORWARDED: [Signal; 4] = [Signal::Quit, Signal::Usr1, Signal::Usr2, Signal::Winch];

/// Makes this process a child subreaper and watches its `SIGCHLD`s on `poller`, so orphans
/// are reaped as they exit. The handler goes first: an orphan that dies from then on is heard
/// (one reparented already dead is announced to its new parent by the kernel too).
pub(super) fn start_reaping(poller: &Arc<Poller>) -> Result<Watched<sys::InstalledSignals>, Error> {
    let exits = sys::install_child_exits().map_err(Error::io("install the SIGCHLD handler"))?;
    let watched =
        Watched::new(poller, exits, REAP_TOKEN).map_err(Error::io("watch the SIGCHLD pipe"))?;
    sys::set_child_subreaper().map_err(Error::io("prctl PR_SET_CHILD_SUBREAPER"))?;
    Ok(watched)
}

impl Primary {
    /// A child exited: reaps every child that is not a worker and has exited (orphans
    /// reparented to this subreaper). Workers are reaped through their pidfds, with their
    /// status.
    pub(super) fn on_child_exits(&mut self) {
        let Some(exits) = &self.reaper else { return };
        // Emptied first: an exit from here on makes the pipe readable again.
        sys::drain_signals(exits.get().as_fd());
        for pid in sys::children() {
            if !self.workers.values().any(|w| w.pid == pid) {
                sys::reap(pid);
            }
        }
    }

    /// Sends `signal` to every worker whose process runs (is not reaped yet).
    pub(super) fn forward(&self, signal: Signal) {
        for slot in self.workers.values().filter(|w| w.exit.is_some()) {
            let _ = sys::kill(slot.pid, signal.number());
        }
    }
}
