//! Every libc call of this crate, each behind a safe function returning `io::Result`.
//!
//! Nothing outside this module names `libc::`; socket2 and std make the other calls. Split by
//! concern: `accept` (a nonblocking accept), `fd` (duplicating an inherited descriptor), `poll` (waiting for a connection) and
//! `errno` (what an accept's failure means).

pub(crate) mod accept;
pub(crate) mod errno;
pub(crate) mod fd;
pub(crate) mod poll;

use std::io;

/// Turns a `-1` return into the thread's errno.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(ret) }
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
