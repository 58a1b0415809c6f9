//! The test package's own system calls.

/// Sets this process's descriptor limit (`RLIMIT_NOFILE`, soft and hard) to `n`.
///
/// # Errors
/// `setrlimit(2)`'s (`EPERM` to raise the hard limit without privilege).
pub fn set_nofile(n: u64) -> std::io::Result<()> {
    let limit = libc::rlimit { rlim_cur: n, rlim_max: n };
    // SAFETY: `limit` is a valid rlimit for the call's duration; setrlimit only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `cmd`'s child receive `fd` as descriptor `target` (inheritable there), as a service
/// manager passes a listening socket (`systemd.socket(5)`); this process keeps its own copy.
pub fn pass_fd(cmd: &mut std::process::Command, fd: std::os::fd::BorrowedFd<'_>, target: i32) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let source = fd.as_raw_fd();
    let hook = move || {
        // dup2 clears close-on-exec on the new descriptor; when source == target it does
        // nothing, so the flag is cleared by hand then.
        // SAFETY: dup2 and fcntl are async-signal-safe and take plain integers; `source` is
        // open in the child (fork copies the table) and `target` is replaced.
        let ok = unsafe {
            if source == target {
                libc::fcntl(target, libc::F_SETFD, 0) != -1
            } else {
                libc::dup2(source, target) != -1
            }
        };
        if ok { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    };
    // SAFETY: the hook only calls dup2 or fcntl and reads errno: async-signal-safe, no
    // allocation, no lock, as a hook between fork and exec must.
    unsafe { cmd.pre_exec(hook) };
}

/// Whether this process runs as root (effective uid 0): only root may start a child under
/// another uid.
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
