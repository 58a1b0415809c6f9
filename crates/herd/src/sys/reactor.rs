//! Registering a descriptor with tokio's reactor, the one place herd's async layer needs
//! `unsafe` (tokio 1.54 made `AsyncFd`'s registration `unsafe`: the reactor must be able to
//! trust that the descriptor it watches stays the same one).

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use ::tokio::io::Interest;
use ::tokio::io::unix::AsyncFd;

/// Registers a duplicate of `fd` (`F_DUPFD_CLOEXEC`) with the current tokio runtime's reactor,
/// for readability. The duplicate is owned by the returned `AsyncFd`, so the descriptor the
/// reactor watches lives exactly as long as the registration, whatever becomes of `fd`.
///
/// # Errors
/// The `dup`'s error (`EMFILE`), or the reactor's (`epoll_ctl`).
///
/// # Panics
/// Outside a tokio runtime (tokio's rule for every registration).
pub(crate) fn register_readable(fd: BorrowedFd<'_>) -> io::Result<AsyncFd<OwnedFd>> {
    let owned = fd.try_clone_to_owned()?;
    // SAFETY: `AsyncFd::register_with_interest` needs the descriptor to stay open and refer to
    // the same file description until the `AsyncFd` is dropped or unwrapped. It is given an
    // `OwnedFd` that nothing else holds (a fresh duplicate): an `OwnedFd` is open until it is
    // dropped, its number never changes, and only its owner, the `AsyncFd`, can drop it.
    Ok(unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }?)
}
