//! Every libc call of this crate, each behind a safe function returning `io::Result`.
//!
//! Nothing outside this module names `libc::`. Split by concern: `fd` (flags, duplication),
//! `socket` (socketpair and socket options), `msg` (sendmsg/recvmsg with SCM_RIGHTS) and
//! `process` (placing an fd in a child before exec).

pub(crate) mod fd;
pub(crate) mod msg;
pub(crate) mod process;
pub(crate) mod socket;

use std::io;

/// Turns a `-1` return into the thread's errno.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Like [`cvt`] for calls that return `ssize_t`.
fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret as usize) }
}

/// Retries a call interrupted by a signal: nothing here wants to see `EINTR`.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
