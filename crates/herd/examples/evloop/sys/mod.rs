//! The epoll calls the loop needs that herd's level-triggered `Poller` does not offer:
//! `EPOLLEXCLUSIVE` and edge-triggered registrations.

use std::io;
use std::os::fd::AsRawFd;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The listener: readable, one waiter woken per event (as nginx's `EPOLLEXCLUSIVE`).
pub const LISTENER_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32;
/// A connection: registered once for both directions, edge-triggered (as nginx).
pub const CONN_EVENTS: u32 =
    (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

pub struct Epoll(OwnedFd);

pub struct Events {
    list: Vec<libc::epoll_event>,
    ready: Vec<(u64, u32)>,
}

impl Events {
    pub fn new(capacity: usize) -> Events {
        Events {
            list: vec![libc::epoll_event { events: 0, u64: 0 }; capacity],
            ready: Vec::with_capacity(capacity),
        }
    }

    /// `(key, event bits)` of the last wait.
    pub fn iter(&self) -> impl Iterator<Item = &(u64, u32)> {
        self.ready.iter()
    }
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn add(&self, fd: RawFd, key: u64, events: u32) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: key };
        // SAFETY: both descriptors are open for the call; the kernel only reads `event`.
        let ret =
            unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Removes `fd` (an error, e.g. never added, is ignored).
    pub fn delete(&self, fd: RawFd) {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`.
        unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut event) };
    }

    /// Waits at most `timeout_ms`; an interrupting signal reports nothing.
    pub fn wait(&self, events: &mut Events, timeout_ms: i32) -> io::Result<()> {
        events.ready.clear();
        let capacity = events.list.len() as i32;
        // SAFETY: the buffer holds `capacity` structs for the kernel to fill.
        let n = unsafe {
            libc::epoll_wait(self.0.as_raw_fd(), events.list.as_mut_ptr(), capacity, timeout_ms)
        };
        if n < 0 {
            let error = io::Error::last_os_error();
            return if error.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(error) };
        }
        let list = &events.list[..n as usize];
        events.ready.extend(list.iter().map(|e| (e.u64, e.events)));
        Ok(())
    }
}
