//! Placing a descriptor at a fixed number in a child process, between `fork` and `exec`.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use super::cvt;

/// Arranges for `fd` to be open at `target` in the child that `cmd` spawns, without
/// `FD_CLOEXEC`, so it survives `exec`. The closure owns `fd`: it is closed in this process when
/// `cmd` is dropped.
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
