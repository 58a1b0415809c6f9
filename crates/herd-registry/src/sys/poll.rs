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
    /// Taken out of the poller by [`suspend`](Watched::suspend): not even a hang-up reports.
    suspended: Cell<bool>,
}

impl<T: AsFd> Watched<T> {
    /// Registers `source` with `poller` under `key`, readable interest on, level-triggered:
    /// an event repeats while the condition holds, so a handler may stop early (a batch limit)
    /// and be woken again.
    pub fn new(poller: &Arc<Poller>, source: T, key: usize) -> io::Result<Watched<T>> {
        // `source` moves into the returned value, whose Drop deletes the registration before
        // `source` is dropped, so the descriptor is never closed while registered.
        poller.add(source.as_fd(), key, true, false)?;
        Ok(Watched {
            source,
            poller: Arc::clone(poller),
            key,
            interest: Cell::new((true, false)),
            suspended: Cell::new(false),
        })
    }

    /// Changes the interest: `readable`, `writable`, both, or neither (paused).
    /// While [suspended](Watched::suspend), the interest is only recorded, for the resume.
    pub fn set_interest(&self, readable: bool, writable: bool) -> io::Result<()> {
        if self.interest.get() == (readable, writable) {
            return Ok(());
        }
        if self.suspended.get() {
            self.interest.set((readable, writable));
            return Ok(());
        }
        self.poller.modify(self.source.as_fd(), self.key, readable, writable)?;
        self.interest.set((readable, writable));
        Ok(())
    }

    /// Takes the source out of the poller until [`resume`](Watched::resume). Unlike an empty
    /// interest, which still reports a hang-up or an error (`epoll_ctl(2)`: `EPOLLHUP` and
    /// `EPOLLERR` are always reported), nothing reports: a reader that chose not to read a
    /// peer that closed is not woken in a loop.
    ///
    /// # Errors
    /// `epoll_ctl(EPOLL_CTL_DEL)`'s; the source is still registered then.
    pub fn suspend(&self) -> io::Result<()> {
        if self.suspended.get() {
            return Ok(());
        }
        self.poller.delete(self.source.as_fd())?;
        self.suspended.set(true);
        Ok(())
    }

    /// Registers the source again after [`suspend`](Watched::suspend), with the interest last
    /// set.
    ///
    /// # Errors
    /// `epoll_ctl(EPOLL_CTL_ADD)`'s (`ENOMEM`, `ENOSPC`); the source stays suspended then.
    pub fn resume(&self) -> io::Result<()> {
        if !self.suspended.get() {
            return Ok(());
        }
        let (readable, writable) = self.interest.get();
        self.poller.add(self.source.as_fd(), self.key, readable, writable)?;
        self.suspended.set(false);
        Ok(())
    }

    /// Whether the source is [suspended](Watched::suspend).
    pub fn is_suspended(&self) -> bool {
        self.suspended.get()
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
        // Fails only if the registration is already gone (suspended); nothing to undo then.
        let _ = self.poller.delete(self.source.as_fd());
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::time::Duration;

    use super::Watched;
    use crate::sys::epoll::{Events, Poller};

    fn keys(poller: &Poller) -> Vec<usize> {
        let mut events = Events::new();
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        events.iter().map(|e| e.key).collect()
    }

    #[test]
    fn a_suspended_source_reports_nothing_not_even_a_hang_up_until_resumed() {
        let poller = Arc::new(Poller::new().unwrap());
        let (ours, peer) = UnixStream::pair().unwrap();
        let watched = Watched::new(&poller, ours, 7).unwrap();
        drop(peer);
        // An empty interest still reports the hang-up (epoll always reports EPOLLHUP).
        watched.set_interest(false, false).unwrap();
        assert_eq!(keys(&poller), [7]);
        watched.suspend().unwrap();
        assert!(watched.is_suspended());
        assert_eq!(keys(&poller), Vec::<usize>::new());
        // An interest set meanwhile is the one resumed with.
        watched.set_interest(true, false).unwrap();
        watched.resume().unwrap();
        assert_eq!(keys(&poller), [7]);
        // Dropping a suspended source is fine too.
        watched.suspend().unwrap();
        drop(watched);
    }
}
