//! What the primary holds for each worker, and the limits on it, so that one worker that floods
//! its control channel cannot starve the others, grow the primary without bound, or use up its
//! descriptors.
//!
//! - **What a worker sends** becomes events that wait in the primary until the application
//!   takes them with [`next_event`](Primary::next_event). Past
//!   [`MAX_HELD_EVENTS`](Primary::MAX_HELD_EVENTS) events or
//!   [`MAX_HELD_FDS`](Primary::MAX_HELD_FDS) descriptors, the primary stops reading that
//!   worker's channel until the application has taken enough of them: the kernel's queue fills
//!   and the worker's `send` waits (backpressure, as on a full pipe). Nothing is dropped, the
//!   other workers' channels and the listeners are served meanwhile, and the worker is not
//!   counted as silent by hang detection while the primary is the one not reading.
//! - **What the primary sends a worker** waits in its outbox while the worker does not read.
//!   The application's own messages are bounded at the call ([`Error::QueueFull`]); the
//!   replies to a worker's listen requests are owed to it, so a worker with more than
//!   [`MAX_UNREAD_REPLIES`](Primary::MAX_UNREAD_REPLIES) of them unread breaks the protocol (a
//!   herd worker reads its channel on a thread of its own): it is reported
//!   ([`Event::CutOff`]) and killed, and respawned as after any death.
//!
//! [`Error::QueueFull`]: crate::Error::QueueFull

use super::{Event, Primary};
use crate::protocol::ToWorker;
use crate::{Signal, WorkerId, sys};

impl Primary {
    /// The most events that come from one worker's messages (user messages, `online`,
    /// `listening`, failed listens) that the primary holds before it stops reading that worker's channel until
    /// the application takes some: 256. Enough that a burst is read at once, few enough that
    /// a worker that sends faster than the application handles waits on its own `send` rather
    /// than growing the primary.
    pub const MAX_HELD_EVENTS: usize = 256;

    /// The most descriptors that came with one worker's messages that the primary holds (in
    /// events the application has not taken) before it stops reading that worker's channel:
    /// 128. A message carries at most [`herd_ipc::MAX_FDS_PER_MESSAGE`], so the primary holds
    /// at most that many more than this per worker. The rest wait in the kernel's queue, where
    /// they count against the sender's descriptor limit, not the primary's (`unix(7)`).
    ///
    /// Over all workers together the primary holds at most a quarter of its descriptor limit
    /// (`RLIMIT_NOFILE`, read when it starts; between 128 and 16,384): past that, a worker whose
    /// message brings descriptors is not read further until the total is down to half, so many
    /// workers flooding at once cannot use up the descriptors the primary needs to accept,
    /// bind and fork.
    pub const MAX_HELD_FDS: usize = 128;

    /// The cap on descriptors held over all workers, from the soft descriptor limit.
    pub(super) fn total_fd_budget(nofile: Option<u64>) -> usize {
        let quarter = nofile.map_or(16_384, |n| usize::try_from(n / 4).unwrap_or(usize::MAX));
        quarter.clamp(Self::MAX_HELD_FDS, 16_384)
    }

    /// The most replies to a worker's own listen requests that may wait unread in the primary
    /// for it: 64. A herd worker reads its channel on a thread of its own and has at most one
    /// listen request in flight per calling thread; a worker past this sends requests without
    /// reading the answers, each of which holds a descriptor, so it is cut off
    /// ([`Event::CutOff`]) and killed.
    pub const MAX_UNREAD_REPLIES: usize = 64;

    /// Queues an event that came from worker `id`'s channel, counting it against the worker's
    /// budget; past the budget, reading that channel pauses.
    pub(super) fn hold(&mut self, id: WorkerId, event: Event) {
        let fds = match &event {
            Event::Message { fds, .. } => fds.len(),
            _ => 0,
        };
        self.events.push_back(event);
        self.held_fds_total += fds;
        let over_total = fds > 0 && self.held_fds_total >= self.max_held_fds_total;
        let Some(slot) = self.workers.get_mut(&id) else { return };
        slot.held_events += 1;
        slot.held_fds += fds;
        if (slot.over_budget() || over_total) && !slot.reading_paused {
            slot.reading_paused = true;
            // Silence while the primary does not read is the primary's doing, not the worker's.
            slot.unanswered_since = None;
            super::trace::held_back(id, slot.pid, slot.held_events, slot.held_fds);
            if let Some(control) = &slot.control {
                // Taken out of the poller: a level-triggered channel (or its hang-up, once the
                // worker is gone) would otherwise wake the loop for ever.
                if control.suspend().is_err() {
                    // Still registered: the reads go on, and the budget is only overrun.
                    slot.reading_paused = false;
                }
            }
        }
    }

    /// The application took `event`: gives its share of the budget back to the worker it came
    /// from, and reads that worker's channel again if it was paused and is now within budget.
    pub(super) fn release(&mut self, event: &Event) {
        let (id, fds) = match event {
            Event::Message { worker, fds, .. } => (*worker, fds.len()),
            Event::DescriptorsLost { worker, .. }
            | Event::ListenFailed { worker, .. }
            | Event::Listening { worker, .. }
            | Event::Online(worker) => (*worker, 0),
            _ => return,
        };
        let was_over_half = self.held_fds_total >= self.max_held_fds_total / 2;
        self.held_fds_total = self.held_fds_total.saturating_sub(fds);
        let total_low = self.held_fds_total < self.max_held_fds_total / 2;
        if let Some(slot) = self.workers.get_mut(&id) {
            slot.held_events = slot.held_events.saturating_sub(1);
            slot.held_fds = slot.held_fds.saturating_sub(fds);
        }
        if was_over_half && total_low {
            // The total is down to half: every worker held back for it may be read again.
            let paused: Vec<WorkerId> =
                self.workers.values().filter(|w| w.reading_paused).map(|w| w.id).collect();
            for worker in paused {
                self.resume_if_low(worker);
            }
        } else {
            self.resume_if_low(id);
        }
    }

    /// Reads worker `id`'s channel again if it is held back and its own holdings are down to
    /// half their limits, and so is the total unless the worker holds no descriptor any more;
    /// so a worker at a limit is not held back and read again for every single event (two
    /// `epoll_ctl` calls each).
    fn resume_if_low(&mut self, id: WorkerId) {
        let total_low = self.held_fds_total < self.max_held_fds_total / 2;
        let Some(slot) = self.workers.get_mut(&id) else { return };
        let low = slot.held_events <= Self::MAX_HELD_EVENTS / 2
            && slot.held_fds <= Self::MAX_HELD_FDS / 2
            && (total_low || slot.held_fds == 0);
        if !(slot.reading_paused && low) {
            return;
        }
        if let Some(control) = &slot.control {
            if control.resume().is_err() {
                // Not registered again (ENOMEM): tried again at the next release.
                return;
            }
        }
        slot.reading_paused = false;
        super::trace::resumed(id, slot.pid);
        // Hang detection counts from here: what it did while held back was the primary's doing.
        slot.read_since = std::time::Instant::now();
        // The rest of what it sent, and its exit if that waited for it, come on the next
        // turn of the loop (level-triggered: the channel reports while it holds messages).
        if slot.exit_deferred {
            slot.exit_deferred = false;
            if let Some(exit) = &slot.exit {
                let _ = exit.resume();
            }
        }
    }

    /// Posts the reply to one of worker `id`'s listen requests, or cuts the worker off if it
    /// leaves too many of them unread.
    pub(super) fn reply(&mut self, id: WorkerId, reply: ToWorker, fds: Vec<std::os::fd::OwnedFd>) {
        let unread = self.workers.get(&id).map_or(0, |slot| {
            slot.outbox.iter().filter(|(m, _)| matches!(m, ToWorker::Reply { .. })).count()
        });
        if unread >= Self::MAX_UNREAD_REPLIES {
            drop(fds);
            let reason = format!(
                "it does not read its control channel: {unread} replies to its listen \
                 requests wait unread (the limit is {})",
                Self::MAX_UNREAD_REPLIES
            );
            return self.cut_off(id, reason);
        }
        let _ = self.post(id, reply, fds);
    }

    /// Reports worker `id` as past a limit and kills it (SIGKILL): its exit comes as any
    /// worker's, and it is respawned as the settings say. Once only.
    pub(super) fn cut_off(&mut self, id: WorkerId, reason: String) {
        let Some(slot) = self.workers.get_mut(&id) else { return };
        if slot.cut_off || slot.exit.is_none() {
            return;
        }
        slot.cut_off = true;
        let pid = slot.pid;
        // What it queued for itself is of no use to it any more, and its descriptors are the
        // primary's to free now.
        slot.outbox.clear();
        // Nothing new goes to it; what it was handed goes elsewhere when it dies.
        super::trace::cut_off(id, pid, &reason);
        self.registry.lock().retire_worker(id);
        self.events.push_back(Event::CutOff { worker: id, reason });
        let _ = sys::kill(pid, Signal::Kill.number());
    }
}
