//! Socket activation's hand-over between fork and exec (`sd_listen_fds(3)`): the listening
//! sockets at descriptors 3, 4, …, and an environment whose `LISTEN_PID` is the child's own
//! pid, which only the child knows, so it is written there, after the fork.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// The first descriptor a socket-activated program finds its sockets at
/// (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Room for the digits of any pid (at most 10 of them for a 32-bit `pid_t`) and a NUL.
const PID_DIGITS: usize = 11;

/// Everything the child needs to exec, prepared before the fork: after it, the child only
/// moves descriptors, writes its pid into a buffer and calls `execve(2)` (all
/// async-signal-safe, no allocation).
struct Prepared {
    program: CString,
    /// Kept alive for `argv`'s pointers.
    _args: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    /// Each entry `KEY=VALUE` and a NUL; the last one is `LISTEN_PID=` and room for the pid.
    _env: Vec<Vec<u8>>,
    envp: Vec<*const libc::c_char>,
    /// Where in the last entry of `env` the pid's digits go.
    pid_at: *mut u8,
    /// The descriptors to place at 3.. (the parent's CLOEXEC duplicates, open until the spawn
    /// returns), and room for their temporary copies.
    sources: Vec<RawFd>,
    moved: Vec<RawFd>,
}

// SAFETY: the raw pointers point into heap buffers this same value owns (`_args`, `env`),
// which never move or change in the parent; they are only dereferenced in the forked child.
unsafe impl Send for Prepared {}
// SAFETY: as above; the parent never reads or writes through them.
unsafe impl Sync for Prepared {}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"))
}

impl Prepared {
    /// The child's side, after the fork: places the sockets, writes its pid, execs.
    fn exec(&mut self) -> io::Result<()> {
        let count = self.sources.len() as RawFd;
        // First out of the way of 3..3+count (a source may sit there, in another's target),
        // as CLOEXEC copies ...
        for (i, &source) in self.sources.iter().enumerate() {
            // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor the parent holds open; it is
            // async-signal-safe and creates a new descriptor or fails.
            let fd =
                unsafe { libc::fcntl(source, libc::F_DUPFD_CLOEXEC, LISTEN_FDS_START + count) };
            if fd == -1 {
                return Err(io::Error::last_os_error());
            }
            self.moved[i] = fd;
        }
        // ... then each at its number, without CLOEXEC (dup2 clears it): only these survive
        // the exec.
        for (i, &fd) in self.moved.iter().enumerate() {
            // SAFETY: dup2 is async-signal-safe; `fd` is the copy just made. What it replaces
            // at the target is CLOEXEC in this process (every descriptor of the primary's is),
            // so would have been closed by the exec anyway.
            if unsafe { libc::dup2(fd, LISTEN_FDS_START + i as RawFd) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        // Nothing else passes the exec (systemd closes every other descriptor): what the
        // primary inherited from its caller without CLOEXEC is marked CLOEXEC here. Marked,
        // not closed, so std's CLOEXEC pipe reporting a failed exec still works.
        close_on_exec_from(LISTEN_FDS_START + count);
        // SAFETY: getpid is async-signal-safe and cannot fail.
        let mut pid = unsafe { libc::getpid() } as u32;
        let mut digits = [0u8; PID_DIGITS];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (pid % 10) as u8;
            n += 1;
            pid /= 10;
            if pid == 0 {
                break;
            }
        }
        for i in 0..n {
            // SAFETY: `pid_at` points at PID_DIGITS writable bytes at the end of the last
            // `env` entry (this process's copy of it, after the fork); n < PID_DIGITS.
            unsafe { self.pid_at.add(i).write(digits[n - 1 - i]) };
        }
        // SAFETY: as above; the NUL ends the entry.
        unsafe { self.pid_at.add(n).write(0) };
        // SAFETY: every pointer points at a NUL-terminated string owned by `self`, and both
        // arrays end with a null pointer; execve returns only on failure.
        unsafe { libc::execve(self.program.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()) };
        Err(io::Error::last_os_error())
    }
}

/// Marks every descriptor from `first` up CLOEXEC: `close_range(2)` with
/// `CLOSE_RANGE_CLOEXEC` (Linux 5.11), else one `fcntl(F_SETFD)` per descriptor up to the
/// descriptor limit. Async-signal-safe.
fn close_on_exec_from(first: RawFd) {
    // SAFETY: close_range takes plain integers and changes only descriptor flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret == 0 {
        return;
    }
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills in `limit`; it is a plain system call.
    let end = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(1 << 20) as RawFd
    } else {
        1 << 16
    };
    for fd in first..end {
        // SAFETY: F_SETFD on a descriptor number; one not open fails with EBADF, ignored.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// Makes the child `cmd` spawns exec `program` with `args` (`argv[0]` is `program`) and
/// exactly the environment `env`, plus `LISTEN_PID` set to its own pid, with `fds` at
/// descriptors 3, 4, … (in order) and nothing else open but its standard streams (every other
/// descriptor, even one the primary inherited without CLOEXEC, is closed at the exec): the
/// socket-activation protocol of `sd_listen_fds(3)`. `env` should hold `LISTEN_FDS` and
/// `LISTEN_FDNAMES` (and no `LISTEN_PID`). Registered as `cmd`'s last `pre_exec` hook, it
/// replaces the exec std would do; its failure is the spawn's error, as std's exec's is.
///
/// The descriptors must stay open until `cmd.spawn()` returns.
///
/// # Errors
/// `InvalidInput` when a path, argument or variable holds a NUL byte.
pub(crate) fn exec_activated(
    cmd: &mut Command,
    program: &Path,
    args: &[OsString],
    env: &[(OsString, OsString)],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let program = c_string(program.as_os_str().as_bytes())?;
    let mut all_args = vec![program.clone()];
    for arg in args {
        all_args.push(c_string(arg.as_bytes())?);
    }
    let mut argv: Vec<*const libc::c_char> = all_args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut entries = Vec::with_capacity(env.len() + 1);
    for (key, value) in env {
        let mut entry = Vec::with_capacity(key.len() + value.len() + 2);
        entry.extend_from_slice(key.as_bytes());
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        c_string(&entry)?; // no NUL inside
        entry.push(0);
        entries.push(entry);
    }
    let mut pid_entry = b"LISTEN_PID=".to_vec();
    let prefix = pid_entry.len();
    pid_entry.resize(prefix + PID_DIGITS + 1, 0);
    entries.push(pid_entry);
    let envp_entries: Vec<*const libc::c_char> =
        entries.iter_mut().map(|e| e.as_mut_ptr() as *const libc::c_char).collect();
    let mut envp = envp_entries;
    envp.push(std::ptr::null());
    let last = entries.len() - 1;
    // SAFETY: `prefix` is within the entry just built (prefix + PID_DIGITS + 1 bytes long);
    // the entry's heap buffer never moves (it is not resized again).
    let pid_at = unsafe { entries[last].as_mut_ptr().add(prefix) };
    let mut prepared = Prepared {
        program,
        _args: all_args,
        argv,
        _env: entries,
        envp,
        pid_at,
        sources: fds.iter().map(AsRawFd::as_raw_fd).collect(),
        moved: vec![-1; fds.len()],
    };
    // SAFETY: the hook runs in the child between fork and exec and makes only
    // async-signal-safe calls (fcntl, dup2, close_range, getrlimit, getpid, execve) on memory
    // prepared before the fork.
    unsafe { cmd.pre_exec(move || prepared.exec()) };
    Ok(())
}

/// The environment variable names of a socket-activation protocol that a child must not
/// inherit from its parent (the parent's own, meant for it: `sd_listen_fds(3)`, `sd_notify(3)`).
pub(crate) const INHERITED_PROTOCOL_VARS: [&str; 6] = [
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// Whether `name` is one of [`INHERITED_PROTOCOL_VARS`].
pub(crate) fn is_protocol_var(name: &OsStr) -> bool {
    INHERITED_PROTOCOL_VARS.iter().any(|v| OsStr::new(v) == name)
}

/// Clears `O_NONBLOCK` on `fd`'s open file description (and so on every duplicate of it),
/// leaving its other status flags as they are: a socket-activated program is handed blocking
/// sockets, as systemd hands them, and sets them non-blocking itself if it wants.
pub(crate) fn set_blocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL on a descriptor the borrow keeps open.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags == -1 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        // SAFETY: as above; only O_NONBLOCK changes.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Asks the kernel to attach the sender's credentials to every datagram `fd` receives
/// (`SO_PASSCRED`, `unix(7)`), as systemd does on its notification socket.
pub(crate) fn pass_credentials(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from `on`, which outlives the call.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// The most descriptors one `SCM_RIGHTS` message can carry (the kernel's `SCM_MAX_FD`).
const SCM_MAX_FD: usize = 253;

/// Receives one datagram without blocking (`recvmsg(2)`, `MSG_DONTWAIT`) into `buf`: its
/// length and the sender's pid from its `SCM_CREDENTIALS` (`None` if it carries none).
/// Descriptors sent with it (`SCM_RIGHTS`, e.g. `systemd-notify --ready`'s `BARRIER=1`, which
/// waits for its receiver to close them) are received CLOEXEC and closed at once, as systemd
/// closes those it does not store. The control buffer holds credentials and a full
/// `SCM_RIGHTS` message; were it ever truncated (`MSG_CTRUNC`), the descriptors the kernel
/// installed are the ones its header counts, and those are closed just the same.
pub(crate) fn recv_with_pid(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Option<u32>)> {
    // Room for one SCM_CREDENTIALS message and one SCM_RIGHTS message of SCM_MAX_FD
    // descriptors (each header plus its padded data), aligned as cmsghdr requires.
    const ROOM: usize = 2 * std::mem::size_of::<libc::cmsghdr>()
        + std::mem::size_of::<libc::ucred>()
        + SCM_MAX_FD * std::mem::size_of::<RawFd>()
        + 16;
    #[repr(C)]
    struct Control {
        _align: [libc::cmsghdr; 0],
        bytes: [u8; ROOM],
    }
    let mut control = Control { _align: [], bytes: [0; ROOM] };
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.bytes.as_mut_ptr().cast();
    msg.msg_controllen = control.bytes.len() as _;
    // SAFETY: `msg` points at `iov` (over `buf`) and `control`, all alive for the call.
    let n = unsafe {
        libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut pid = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled in, within
    // `msg.msg_controllen`.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and points into `control`.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_CREDENTIALS {
            // SAFETY: an SCM_CREDENTIALS message carries one ucred; read unaligned.
            let cred = unsafe { (libc::CMSG_DATA(cmsg) as *const libc::ucred).read_unaligned() };
            pid = u32::try_from(cred.pid).ok();
        } else if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is the header's size; cmsg_len counts the header and the
            // descriptors the kernel installed (only those that fit, after MSG_CTRUNC).
            let data_len = header.cmsg_len as usize - unsafe { libc::CMSG_LEN(0) } as usize;
            // SAFETY: the data follows the header within the control buffer.
            let data = unsafe { libc::CMSG_DATA(cmsg) } as *const RawFd;
            for i in 0..data_len / std::mem::size_of::<RawFd>() {
                // SAFETY: descriptor `i` of the message, read unaligned; the kernel installed
                // it in this process just now and nothing else owns it, so dropping the
                // OwnedFd closes it.
                drop(unsafe { OwnedFd::from_raw_fd(data.add(i).read_unaligned()) });
            }
        }
        // SAFETY: as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok((n as usize, pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    /// How many descriptors of this process refer to the same open object as `fd` (by its
    /// `/proc/self/fd` link, e.g. `pipe:[1234]`): other tests' descriptors never count.
    fn copies_of(fd: RawFd) -> usize {
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|link| *link == target)
            .count()
    }

    /// Sends `data` on `tx` with `count` copies of `fd` in one SCM_RIGHTS message.
    fn send_with_fds(tx: &UnixDatagram, data: &[u8], fd: RawFd, count: usize) {
        let fds = vec![fd; count];
        let mut space = vec![0u64; 1 + count / 2 + 2];
        // SAFETY: test-only sendmsg of one SCM_RIGHTS message of `count` descriptors into
        // `space` (8-byte aligned, large enough for CMSG_SPACE(4 * count)).
        unsafe {
            let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = space.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(4 * count as u32) as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4 * count as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c) as *mut RawFd, count);
            assert!(libc::sendmsg(tx.as_raw_fd(), &msg, 0) > 0, "{}", io::Error::last_os_error());
        }
    }

    /// A notification carrying descriptors (what `systemd-notify`'s BARRIER=1 sends) must not
    /// leave them open in the receiver: systemd closes them, which is what releases the
    /// barrier. Found by brk11: each one leaked a descriptor in the primary.
    #[test]
    fn descriptors_sent_with_a_notification_are_closed() {
        let (rx, tx) = UnixDatagram::pair().unwrap();
        pass_credentials(rx.as_fd()).unwrap();
        let r = UnixDatagram::unbound().unwrap();
        for count in [1, 3, SCM_MAX_FD] {
            send_with_fds(&tx, b"BARRIER=1", r.as_raw_fd(), count);
            let mut buf = [0u8; 64];
            let (n, pid) = recv_with_pid(rx.as_fd(), &mut buf).unwrap();
            assert_eq!((&buf[..n], pid), (&b"BARRIER=1"[..], Some(std::process::id())));
            assert_eq!(copies_of(r.as_raw_fd()), 1, "{count} descriptors received were left open");
        }
    }
}
