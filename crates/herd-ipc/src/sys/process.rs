//! Placing a descriptor at a fixed number in a child process, between `fork` and `exec`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use super::cvt;

/// `fd` itself when its number is 3 or above; otherwise a close-on-exec duplicate at the
/// lowest free number from 3 (`fcntl(F_DUPFD_CLOEXEC, 3)`), and `fd` is closed.
///
/// A process whose standard streams were closed gets its new descriptors at 0, 1 or 2. A
/// channel end there would not survive the spawn: std's `Command` `dup2`s the child's
/// stdin, stdout and stderr over 0, 1 and 2 *before* the `pre_exec` hooks run, so the hook
/// that places the end at its fixed number would copy `/dev/null` or a pipe instead.
pub(crate) fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own returns a new descriptor, close-on-exec
    // from birth, or -1.
    let copy = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: the call succeeded, so `copy` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// Arranges for `fd` to be open at `target` in the child that `cmd` spawns, without
/// `FD_CLOEXEC`, so it survives `exec`. The closure owns `fd`: it is closed in this process when
/// `cmd` is dropped. `fd` must be 3 or above (see [`above_stdio`]): std redirects the child's
/// standard streams before the hook runs.
pub(crate) fn place_at(cmd: &mut Command, fd: OwnedFd, target: RawFd) {
    let hook = move || {
        let source = fd.as_raw_fd();
        if source == target {
            // dup2(n, n) is a no-op that would leave FD_CLOEXEC set: clear the flag instead.
            // SAFETY: fcntl is async-signal-safe and only touches a descriptor we own.
            let flags = cvt(unsafe { libc::fcntl(source, libc::F_GETFD) })?;
            // SAFETY: as above.
            cvt(unsafe { libc::fcntl(source, libc::F_SETFD, flags & !libc::FD_CLOEXEC) })?;
        } else {
            // dup2's new descriptor never has FD_CLOEXEC; whatever was at `target` is closed.
            // SAFETY: dup2 is async-signal-safe; `source` is open for the closure's lifetime.
            cvt(unsafe { libc::dup2(source, target) })?;
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec and only makes async-signal-safe
    // calls (fcntl, dup2); it allocates nothing and takes no lock.
    unsafe { cmd.pre_exec(hook) };
}
