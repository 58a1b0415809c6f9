//! Descriptor flags.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use super::{cvt, retry};

/// Whether `fd` has `FD_CLOEXEC` set.
pub(crate) fn is_cloexec(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: F_GETFD takes no argument and only reads the flags of a descriptor we borrow.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) })?;
    Ok(flags & libc::FD_CLOEXEC != 0)
}

/// Sets `FD_CLOEXEC` on `fd`, keeping its other descriptor flags.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD only read and write the descriptor flags of a descriptor we borrow.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) })?;
    if flags & libc::FD_CLOEXEC == 0 {
        let set = flags | libc::FD_CLOEXEC;
        // SAFETY: as above.
        retry(|| cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, set) }))?;
    }
    Ok(())
}

/// Whether a descriptor number is open in this process, without taking ownership of it.
pub(crate) fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on any integer is harmless: it fails with EBADF when nothing is open there.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Descriptor numbers already taken over by [`take_inherited`], so that a second call cannot
/// create a second owner of the same descriptor.
static TAKEN: std::sync::Mutex<Vec<RawFd>> = std::sync::Mutex::new(Vec::new());

/// Why an inherited descriptor could not be taken over.
pub(crate) enum TakeError {
    /// Nothing is open at that number.
    NotOpen,
    /// This process already took that number over once.
    AlreadyTaken,
    /// It is open but `accept` says no; it is left open and unowned.
    Rejected(io::Error),
}

/// Takes ownership of a descriptor this process inherited at a known number (named by an
/// environment variable), after `accept` approves it, and marks it close-on-exec so it goes no
/// further than this process.
pub(crate) fn take_inherited(
    raw: RawFd,
    accept: impl FnOnce(BorrowedFd<'_>) -> io::Result<()>,
) -> Result<std::os::fd::OwnedFd, TakeError> {
    let mut taken = TAKEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if taken.contains(&raw) {
        return Err(TakeError::AlreadyTaken);
    }
    if raw < 0 || !is_open(raw) {
        return Err(TakeError::NotOpen);
    }
    // SAFETY: the descriptor is open (checked above) and the borrow ends before anything else.
    let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
    accept(borrowed).and_then(|()| set_cloexec(borrowed)).map_err(TakeError::Rejected)?;
    taken.push(raw);
    // SAFETY: the number was handed to this process to own (by its parent, through the
    // environment), it is open, and TAKEN guarantees this is the only owner we create.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) })
}
