//! [`Notify`]: a descriptor that is readable exactly while some queue is non-empty, so a
//! queue filled by a background thread can be waited on from any event loop.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A nonblocking pipe holding a byte (or a few) while the watched queue is non-empty.
#[derive(Debug)]
pub(crate) struct Notify {
    read: OwnedFd,
    write: OwnedFd,
}

impl Notify {
    pub(crate) fn new() -> io::Result<Notify> {
        let mut fds = [-1; 2];
        // SAFETY: `fds` is valid for the two ints pipe2 writes; both ends are born nonblocking
        // and close-on-exec. The ends are private to this process, so O_NONBLOCK is ours to set.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: two fresh descriptors owned by nobody else.
        Ok(unsafe {
            Notify { read: OwnedFd::from_raw_fd(fds[0]), write: OwnedFd::from_raw_fd(fds[1]) }
        })
    }

    /// The queue became non-empty.
    pub(crate) fn raise(&self) {
        let byte = 1u8;
        // SAFETY: writes one byte from a valid buffer to a descriptor we own. A full pipe
        // (64 KiB of raises not cleared) or an error leaves it readable, which is all a raise
        // must do.
        unsafe { libc::write(self.write.as_raw_fd(), (&raw const byte).cast(), 1) };
    }

    /// The queue became empty. Reads every byte: several raises without a clear between them
    /// (the registry thread's wake-ups) leave several.
    pub(crate) fn clear(&self) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reads into a valid buffer of its length from a descriptor we own; the
            // read end is nonblocking, so an empty pipe returns EAGAIN at once.
            let n =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < buf.len() as isize {
                return;
            }
        }
    }
}

impl AsFd for Notify {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use polling::{Event, Events, Poller};

    use super::Notify;

    fn readable(poller: &Poller, notify: &Notify) -> bool {
        poller.modify(notify, Event::readable(1)).unwrap();
        let mut events = Events::new();
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        !events.is_empty()
    }

    #[test]
    fn readable_exactly_between_raise_and_clear() {
        let notify = Notify::new().unwrap();
        let poller = Poller::new().unwrap();
        // SAFETY: `notify` outlives its registration: it is deleted before `notify` drops.
        unsafe { poller.add(&notify.read, Event::readable(1)).unwrap() };
        assert!(!readable(&poller, &notify));
        notify.raise();
        assert!(readable(&poller, &notify));
        notify.clear();
        assert!(!readable(&poller, &notify));
        poller.delete(&notify.read).unwrap();
    }
}
