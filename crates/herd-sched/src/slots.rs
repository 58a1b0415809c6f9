//! Slot assignment for the `reuseport` policy.

use crate::dispatch::WorkerId;

/// Numbered `SO_REUSEPORT` sockets and the worker holding each.
///
/// Under [`Policy::ReusePort`](crate::Policy::ReusePort) the registry keeps one listening
/// socket per slot, all in the same reuseport group. A worker is assigned the lowest free
/// slot and listens on that slot's socket; when it exits its slot is released, and the next
/// worker assigned takes over the same socket, with the connections already queued on it.
/// Keeping the socket open across the replacement means the kernel's hashing does not shift
/// and queued connections are not reset.
///
/// ```
/// use herd_sched::Slots;
///
/// let mut slots = Slots::new(2);
/// assert_eq!(slots.assign(7), Some(0));
/// assert_eq!(slots.assign(8), Some(1));
/// assert_eq!(slots.assign(9), None); // full
/// assert_eq!(slots.release(7), Some(0));
/// assert_eq!(slots.assign(9), Some(0)); // the replacement inherits slot 0
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slots {
    holders: Vec<Option<WorkerId>>,
}

impl Slots {
    /// Creates `count` free slots.
    pub fn new(count: usize) -> Self {
        Slots { holders: vec![None; count] }
    }

    /// The number of slots, free or held.
    pub fn count(&self) -> usize {
        self.holders.len()
    }

    /// The number of held slots.
    pub fn held(&self) -> usize {
        self.holders.iter().filter(|h| h.is_some()).count()
    }

    /// Gives the worker the lowest free slot and returns it. A worker that already holds a
    /// slot gets the same one back. `None` if every slot is held by another worker.
    pub fn assign(&mut self, w: WorkerId) -> Option<usize> {
        if let Some(slot) = self.slot_of(w) {
            return Some(slot);
        }
        let slot = self.holders.iter().position(Option::is_none)?;
        self.holders[slot] = Some(w);
        Some(slot)
    }

    /// Frees the worker's slot and returns it, or `None` if it held none. The slot's socket
    /// should stay open for the next worker assigned to it.
    pub fn release(&mut self, w: WorkerId) -> Option<usize> {
        let slot = self.slot_of(w)?;
        self.holders[slot] = None;
        Some(slot)
    }

    /// The slot the worker holds, if any.
    pub fn slot_of(&self, w: WorkerId) -> Option<usize> {
        self.holders.iter().position(|&h| h == Some(w))
    }

    /// The worker holding the slot, if the slot exists and is held.
    pub fn holder(&self, slot: usize) -> Option<WorkerId> {
        self.holders.get(slot).copied().flatten()
    }

    /// Changes the number of slots. Growing adds free slots at the end. Shrinking drops the
    /// highest slots and returns their holders as `(slot, worker)`, lowest slot first: the
    /// registry closes those sockets and moves or stops those workers.
    pub fn resize(&mut self, count: usize) -> Vec<(usize, WorkerId)> {
        let evicted = self
            .holders
            .iter()
            .enumerate()
            .skip(count)
            .filter_map(|(slot, h)| h.map(|w| (slot, w)))
            .collect();
        self.holders.resize(count, None);
        evicted
    }
}
