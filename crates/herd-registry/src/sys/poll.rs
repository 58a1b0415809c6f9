//! [`Watched`]: a source registered with a `polling::Poller` for as long as it lives.

use std::cell::Cell;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use polling::{Event, PollMode, Poller};

/// Owns a descriptor-backed source and its registration with a poller, in level-triggered mode.
///
/// `Poller::add` is unsafe because a source closed while still registered leaves the poller
/// watching a recycled descriptor number. Owning both closes that hole: the registration is
/// deleted in `drop`, before the source itself is dropped.
#[derive(Debug)]
pub struct Watched<T: AsFd> {
    source: T,
    poller: Arc<Poller>,
    key: usize,
    /// The interest in force (readable, writable), so an unchanged one costs no system call:
    /// the hand-off path sets it after every send.
    interest: Cell<(bool, bool)>,
}

impl<T: AsFd> Watched<T> {
    /// Registers `source` with `poller` under `key`, readable interest on, level-triggered:
    /// an event repeats while the condition holds, so a handler may stop early (a batch limit)
    /// and be woken again.
    pub fn new(poller: &Arc<Poller>, source: T, key: usize) -> io::Result<Watched<T>> {
        // SAFETY: `source` moves into the returned value, whose Drop deletes the registration
        // before `source` is dropped, so the descriptor is never closed while registered.
        unsafe { poller.add_with_mode(&source.as_fd(), Event::readable(key), PollMode::Level)? };
        Ok(Watched { source, poller: Arc::clone(poller), key, interest: Cell::new((true, false)) })
    }

    /// Changes the interest: `readable`, `writable`, both, or neither (paused).
    pub fn set_interest(&self, readable: bool, writable: bool) -> io::Result<()> {
        if self.interest.get() == (readable, writable) {
            return Ok(());
        }
        let event = match (readable, writable) {
            (true, true) => Event::all(self.key),
            (true, false) => Event::readable(self.key),
            (false, true) => Event::writable(self.key),
            (false, false) => Event::none(self.key),
        };
        self.poller.modify_with_mode(self.source.as_fd(), event, PollMode::Level)?;
        self.interest.set((readable, writable));
        Ok(())
    }

    /// The poller key.
    pub fn key(&self) -> usize {
        self.key
    }

    /// The source.
    pub fn get(&self) -> &T {
        &self.source
    }

    /// The source, mutably (its descriptor must not be replaced).
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.source
    }
}

impl<T: AsFd> Drop for Watched<T> {
    fn drop(&mut self) {
        // Fails only if the registration is already gone; nothing to undo then.
        let _ = self.poller.delete(self.source.as_fd());
    }
}
