//! [`Poller`]: a level-triggered `epoll(7)` instance, one system call per wait.
//!
//! The `polling` crate spends four more system calls on every wait (arming a timerfd, reading
//! its wake-up eventfd, and re-registering both), which on the hand-off path cost as much as
//! the work itself. The primary needs neither cross-thread wake-ups nor sub-millisecond
//! timeouts, so plain `epoll_wait` with a millisecond timeout serves.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// An epoll instance. Sources are registered through [`Watched`](crate::Watched), which
/// removes them before they close.
#[derive(Debug)]
pub struct Poller {
    epoll: OwnedFd,
}

/// One readiness report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The key the source was registered under.
    pub key: usize,
    /// Readable, or at end of stream, or in error.
    pub readable: bool,
    /// Writable, or in error.
    pub writable: bool,
}

/// A buffer for [`Poller::wait`].
pub struct Events {
    list: Vec<libc::epoll_event>,
    len: usize,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Events {
    /// Room for 256 reports per wait; more stay queued for the next one.
    pub fn new() -> Events {
        Events { list: vec![libc::epoll_event { events: 0, u64: 0 }; 256], len: 0 }
    }

    /// Forgets the last wait's reports.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Whether the last wait reported nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many reports the last wait gave.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The last wait's reports.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.list[..self.len].iter().map(|e| {
            let bits = e.events;
            let trouble = bits & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
            Event {
                key: e.u64 as usize,
                readable: trouble || bits & (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 != 0,
                writable: bits & libc::EPOLLERR as u32 != 0 || bits & libc::EPOLLOUT as u32 != 0,
            }
        })
    }
}

fn mask(readable: bool, writable: bool) -> u32 {
    let mut bits = 0;
    if readable {
        bits |= libc::EPOLLIN as u32;
    }
    if writable {
        bits |= libc::EPOLLOUT as u32;
    }
    bits
}

impl AsFd for Poller {
    /// The epoll descriptor: readable while some source is ready, so a poller can itself be
    /// waited on by another event loop (the primary's async events wait on it with tokio).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

impl Poller {
    /// A new epoll instance, close-on-exec.
    pub fn new() -> io::Result<Poller> {
        // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: the call succeeded: a fresh descriptor owned by nobody else.
        Ok(Poller { epoll: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    fn ctl(&self, op: libc::c_int, fd: BorrowedFd<'_>, key: usize, bits: u32) -> io::Result<()> {
        let mut event = libc::epoll_event { events: bits, u64: key as u64 };
        // SAFETY: both descriptors are valid for the call and `event` is a valid struct the
        // kernel only reads.
        cvt(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd.as_raw_fd(), &mut event) })
            .map(drop)
    }

    pub(crate) fn add(
        &self,
        fd: BorrowedFd<'_>,
        key: usize,
        readable: bool,
        writable: bool,
    ) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, key, mask(readable, writable))
    }

    pub(crate) fn modify(
        &self,
        fd: BorrowedFd<'_>,
        key: usize,
        readable: bool,
        writable: bool,
    ) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, key, mask(readable, writable))
    }

    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits for readiness, at most `timeout` (`None`: no limit; rounded up to whole
    /// milliseconds so a short timeout never spins), and returns how many reports arrived.
    /// An interrupting signal returns 0 reports.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let ms = match timeout {
            None => -1,
            Some(t) => {
                let ms = t.as_nanos().div_ceil(1_000_000);
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            }
        };
        let capacity = libc::c_int::try_from(events.list.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: the buffer holds `capacity` epoll_event structs for the kernel to fill.
        let n = unsafe {
            libc::epoll_wait(self.epoll.as_raw_fd(), events.list.as_mut_ptr(), capacity, ms)
        };
        if n < 0 {
            let error = io::Error::last_os_error();
            events.len = 0;
            return if error.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(error) };
        }
        events.len = n as usize;
        Ok(events.len)
    }
}
