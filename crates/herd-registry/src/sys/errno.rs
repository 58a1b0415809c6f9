//! Classifying a hand-off send's errno (an accept's is `herd_handle::is_resource_exhaustion`).

/// A failed send that may well succeed a little later: out of buffer memory (`ENOBUFS`,
/// `ENOMEM`), too many descriptors in flight in `SCM_RIGHTS` messages (`ETOOMANYREFS`), a
/// signal (`EINTR`). Anything else (and every error that is not an OS error: a message too
/// large, an encoding failure) will fail the same way again.
pub(crate) fn is_transient_send_error(error: &herd_ipc::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOBUFS | libc::ENOMEM | libc::ETOOMANYREFS | libc::EINTR)
    )
}

/// Errnos for the unit tests, which may not name `libc` outside `sys`.
#[cfg(test)]
pub(crate) mod codes {
    pub(crate) const ENOBUFS: i32 = libc::ENOBUFS;
    pub(crate) const EMSGSIZE: i32 = libc::EMSGSIZE;
}
