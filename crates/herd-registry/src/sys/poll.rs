//! [`Watched`]: a source registered with a `polling::Poller` for as long as it lives.

use std::cell::Cell;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use super::epoll::Poller;

/// Owns a descriptor-backed source and its registration with a [`Poller`], level-triggered.
///
/// A source closed while still registered (its file description kept alive by a duplicate)
/// would keep reporting under its key. Owning both closes that hole: the registration is
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
        // `source` moves into the returned value, whose Drop deletes the registration before
        // `source` is dropped, so the descriptor is never closed while registered.
        poller.add(source.as_fd(), key, true, false)?;
        Ok(Watched { source, poller: Arc::clone(poller), key, interest: Cell::new((true, false)) })
    }

    /// Changes the interest: `readable`, `writable`, both, or neither (paused).
    pub fn set_interest(&self, readable: bool, writable: bool) -> io::Result<()> {
        if self.interest.get() == (readable, writable) {
            return Ok(());
        }
        self.poller.modify(self.source.as_fd(), self.key, readable, writable)?;
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
