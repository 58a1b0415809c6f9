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
