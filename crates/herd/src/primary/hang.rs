//! Hung-worker detection: a worker that stops answering the primary, or stops taking the
//! connections meant for it, for [`Cluster::hang_timeout`](crate::Cluster::hang_timeout) is
//! reported ([`Event::Hung`]), killed and, as any worker that dies, respawned in its place
//! (under `reuseport` its replacement inherits the place's socket and the connections queued
//! on it). gunicorn does the same with its worker `timeout`.
//!
//! Nothing depends on the application: three signs are watched from the primary.
//! - **Silence**: the primary pings every worker's control channel; the worker's control
//!   thread answers. A worker stopped as a whole (SIGSTOP, a debugger, swapped out) cannot.
//! - **Hand-offs not taken** (`rr`, `least-conn`): a connection in flight to the worker with
//!   no answer from it for the whole timeout (every acceptor thread stuck in a handler).
//! - **A queue that does not drain** (`reuseport`): the place's socket has had connections
//!   queued, never fewer from one sample to the next, for the whole timeout (`TCP_INFO`).

use std::time::{Duration, Instant};

use super::{Event, Primary, State};
use crate::protocol::ToWorker;
use crate::{Signal, WorkerId, sys};

impl Primary {
    /// How often the signs are sampled and the workers pinged: an eighth of the timeout,
    /// between 10 ms and 1 s.
    fn hang_interval(timeout: Duration) -> Duration {
        (timeout / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// When the next sample is due, if hang detection is on.
    pub(super) fn hang_deadline(&self) -> Option<Instant> {
        self.settings.hang_timeout.map(|_| self.hang_check_at)
    }

    /// Samples the signs, reports and kills the workers that show one for the whole timeout,
    /// and pings the others.
    pub(super) fn check_hangs(&mut self, now: Instant) {
        let Some(timeout) = self.settings.hang_timeout else { return };
        if now < self.hang_check_at {
            return;
        }
        self.hang_check_at = now + Self::hang_interval(timeout);
        self.registry.lock().sample_queues(now);
        let watched: Vec<WorkerId> = self
            .workers
            .values()
            .filter(|w| {
                matches!(w.state, State::Online | State::Listening)
                    && !w.after_disconnect
                    && !w.hung
                    && !w.cut_off
                    // The primary is the one not reading: the worker's answers wait in the
                    // kernel's queue.
                    && !w.reading_paused
                    && w.exit.is_some()
                    && w.control.is_some()
            })
            .map(|w| w.id)
            .collect();
        for id in watched {
            match self.hang_reason(id, now, timeout) {
                Some(reason) => self.kill_hung(id, reason),
                None => self.ping(id, now),
            }
        }
    }

    /// A turn of the loop starts at `now`: if the application stayed away from
    /// [`next_event`](Primary::next_event) for half the timeout or more, nobody read the workers
    /// meanwhile, and a worker whose `send` waited on its full channel could take no
    /// connection either: every worker's signs count afresh from now.
    pub(super) fn note_absence(&mut self, now: Instant) {
        let (Some(timeout), Some(last)) = (self.settings.hang_timeout, self.last_turn) else {
            return;
        };
        if now.saturating_duration_since(last) >= timeout / 2 {
            for slot in self.workers.values_mut() {
                slot.read_since = now;
            }
        }
    }

    /// Why worker `id` counts as hung now, if it does. A sign counts only from when the
    /// primary last started reading the worker without a break (`read_since`).
    fn hang_reason(&self, id: WorkerId, now: Instant, timeout: Duration) -> Option<String> {
        let slot = self.workers.get(&id)?;
        let over =
            |since: Instant| now.saturating_duration_since(since.max(slot.read_since)) >= timeout;
        if slot.unanswered_since.is_some_and(over) {
            return Some(format!("no answer on its control channel for {timeout:?}"));
        }
        if self.registry.read().stalled_since(id).is_some_and(over) {
            return Some(format!("connections handed to it not taken for {timeout:?}"));
        }
        let holds_place = slot.place.is_some_and(|p| self.places.get(p) == Some(&Some(id)));
        if let Some(place) = slot.place.filter(|_| holds_place) {
            if self.registry.read().slot_stuck_since(place).is_some_and(over) {
                return Some(format!(
                    "the connections queued on its socket not accepted for {timeout:?}"
                ));
            }
        }
        None
    }

    /// Asks worker `id` whether it is there, unless a question is already open (the silence
    /// counts from the first unanswered ping).
    fn ping(&mut self, id: WorkerId, now: Instant) {
        let Some(slot) = self.workers.get_mut(&id) else { return };
        // A ping still in its outbox is a question already asked.
        let asked = slot.outbox.iter().any(|(m, _)| matches!(m, ToWorker::Ping));
        if slot.unanswered_since.is_none() && !asked {
            slot.unanswered_since = Some(now);
            let _ = self.post(id, ToWorker::Ping, Vec::new());
        }
    }

    /// Reports worker `id` as hung and kills it; its exit then comes as any worker's, and it
    /// is respawned as the settings say.
    fn kill_hung(&mut self, id: WorkerId, reason: String) {
        let Some(slot) = self.workers.get_mut(&id) else { return };
        slot.hung = true;
        let pid = slot.pid;
        // Nothing new goes to it meanwhile; what it was handed goes elsewhere when it dies.
        super::trace::hung(id, pid, slot.place, &reason);
        self.registry.lock().retire_worker(id);
        self.events.push_back(Event::Hung { worker: id, reason });
        let _ = sys::kill(pid, Signal::Kill.number());
    }
}
