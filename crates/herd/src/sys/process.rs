//! Processes: the parent's pid, signals, pidfds, and dying with the primary.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// `getppid(2)`.
pub(crate) fn parent_pid() -> u32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    unsafe { libc::getppid() as u32 }
}

/// The effective user and group ids of this process (`geteuid(2)`, `getegid(2)`).
pub(crate) fn effective_ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// The soft descriptor limit of this process (`getrlimit(2)`, `RLIMIT_NOFILE`), or `None`
/// if it cannot be read or is unlimited.
pub(crate) fn nofile_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill in.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }).ok()?;
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// `kill(2)`: sends `signal` to `pid`.
pub(crate) fn kill(pid: u32, signal: i32) -> io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill takes plain integers; a bad pid or signal is reported through errno.
    cvt(unsafe { libc::kill(pid, signal) }).map(drop)
}

/// Sends `signal` to process group `pid` (a socket-activated worker's own, made at its fork:
/// the worker and every process it started that stayed in its group, as systemd's
/// `KillMode=control-group` and `tini -g` signal them), and to `pid` itself if it left that
/// group (`setsid(2)`).
pub(crate) fn kill_group(pid: u32, signal: i32) -> io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: getpgid and kill take plain integers; errors are reported through errno.
    let in_its_group = unsafe { libc::getpgid(pid) } == pid;
    // SAFETY: as above; a group with no process left is ESRCH.
    let group = cvt(unsafe { libc::kill(-pid, signal) }).map(drop);
    if in_its_group {
        return group;
    }
    // SAFETY: as above.
    cvt(unsafe { libc::kill(pid, signal) }).map(drop)
}

/// `pidfd_open(2)`: a descriptor that becomes readable when the process exits, so child exits
/// join the event loop without SIGCHLD handlers. Close-on-exec, as every pidfd is.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags (0) and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call succeeded, so `fd` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Arranges for the child `cmd` spawns to get SIGKILL when this process (strictly: the
/// spawning thread) dies, so no worker outlives a primary that was killed. If the primary died
/// before the child got this far, the child exits at once.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    // SAFETY: getpid has no preconditions.
    let primary = unsafe { libc::getpid() };
    let hook = move || {
        // SAFETY: prctl and getppid are async-signal-safe; PR_SET_PDEATHSIG takes a signal.
        cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) })?;
        // SAFETY: as above.
        if unsafe { libc::getppid() } != primary {
            // SAFETY: _exit is async-signal-safe; the primary is gone already.
            unsafe { libc::_exit(1) };
        }
        Ok(())
    };
    // SAFETY: the hook runs between fork and exec and only makes async-signal-safe calls.
    unsafe { cmd.pre_exec(hook) };
}

/// Makes the child `cmd` spawns start with every signal's disposition at its default and no
/// signal blocked, as systemd starts a service: a disposition the primary inherited as
/// ignored (SIGINT and SIGQUIT, when a shell starts it in the background with `&`) would
/// otherwise pass the exec (`execve(2)` keeps ignored signals and the mask).
pub(crate) fn default_signals(cmd: &mut Command) {
    let hook = || {
        for signal in 1..=libc::SIGRTMAX() {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            // SAFETY: signal(2) with SIG_DFL is async-signal-safe; a number the C library
            // reserves for itself fails with EINVAL, ignored.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
        // SAFETY: an empty set, filled in by sigemptyset, then set as the mask; both
        // async-signal-safe.
        unsafe {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        }
        Ok(())
    };
    // SAFETY: the hook runs between fork and exec and only makes async-signal-safe calls.
    unsafe { cmd.pre_exec(hook) };
}

/// The calling thread's kernel id (`gettid(2)`), for tests that look at a thread in `/proc`.
#[cfg(test)]
pub(crate) fn thread_id() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Whether thread `tid` of this process is blocked in `sendmsg(2)` (read from
/// `/proc/self/task/<tid>/syscall`, whose first field is the number of the system call the
/// thread is blocked in).
#[cfg(test)]
pub(crate) fn blocked_in_sendmsg(tid: i32) -> bool {
    let text =
        std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).unwrap_or_default();
    text.split_whitespace().next().and_then(|n| n.parse::<libc::c_long>().ok())
        == Some(libc::SYS_sendmsg)
}

/// Makes this process a *child subreaper* (`prctl(2)`, `PR_SET_CHILD_SUBREAPER`): an orphaned
/// descendant (a worker's daemonised grandchild) is reparented to it instead of to PID 1, as
/// it is to a PID 1 itself (tini's job in a container).
pub(crate) fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes a plain integer flag.
    cvt(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }).map(drop)
}

/// The pids of this process's children, over all its threads (`/proc/self/task/*/children`).
pub(crate) fn children() -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    let mut pids = Vec::new();
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    pids
}

/// Reaps child `pid` if it has exited (`waitpid(2)`, `WNOHANG`); whether it was reaped.
pub(crate) fn reap(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    let mut status = 0;
    // SAFETY: waitpid on one pid with WNOHANG; `status` is a valid int to fill in.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == pid }
}

/// `CLOCK_MONOTONIC` now, in microseconds (`clock_gettime(2)`): what systemd's
/// `MONOTONIC_USEC=` carries (`sd_notify(3)`).
pub(crate) fn monotonic_usec() -> io::Result<u64> {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec for clock_gettime to fill in.
    cvt(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) })?;
    Ok(now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000)
}
