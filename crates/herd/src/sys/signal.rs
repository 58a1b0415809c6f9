//! Signal numbers, and turning the primary's signals into bytes on a pipe (the self-pipe
//! trick), so they join the event loop like any other readiness.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::Signal;

pub(crate) fn number(signal: Signal) -> i32 {
    match signal {
        Signal::Term => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
        Signal::Int => libc::SIGINT,
        Signal::Hup => libc::SIGHUP,
        Signal::Quit => libc::SIGQUIT,
        Signal::Usr1 => libc::SIGUSR1,
        Signal::Usr2 => libc::SIGUSR2,
        Signal::Ttin => libc::SIGTTIN,
        Signal::Ttou => libc::SIGTTOU,
    }
}

pub(crate) fn from_number(number: i32) -> Option<Signal> {
    Some(match number {
        libc::SIGTERM => Signal::Term,
        libc::SIGKILL => Signal::Kill,
        libc::SIGINT => Signal::Int,
        libc::SIGHUP => Signal::Hup,
        libc::SIGQUIT => Signal::Quit,
        libc::SIGUSR1 => Signal::Usr1,
        libc::SIGUSR2 => Signal::Usr2,
        libc::SIGTTIN => Signal::Ttin,
        libc::SIGTTOU => Signal::Ttou,
        _ => return None,
    })
}

/// The write end of the signal pipe, for the handler (which may touch nothing but atomics and
/// async-signal-safe calls). -1 until installed.
static PIPE: AtomicI32 = AtomicI32::new(-1);

/// The pid of the process that installed the handlers; 0 until installed.
///
/// A child forked to become a worker inherits the handlers, the pipe and (until `setpgid`)
/// the primary's process group, and keeps them until it execs. A signal that lands there
/// then (a terminal's Ctrl-C to the group, SIGTTIN from a script) must not be counted a
/// second time through the inherited pipe, so the handler acts only in this process.
static INSTALLER: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    // SAFETY: __errno_location returns this thread's errno, valid for the thread's life;
    // saved here and restored below, so the interrupted code never sees it change.
    let saved = unsafe { *libc::__errno_location() };
    // SAFETY: getpid is async-signal-safe and cannot fail (glibc no longer caches it, so a
    // forked child sees its own pid).
    let here = unsafe { libc::getpid() };
    let fd = PIPE.load(Ordering::Relaxed);
    if fd >= 0 && here == INSTALLER.load(Ordering::Relaxed) {
        let byte = signal as u8;
        // SAFETY: write is async-signal-safe; the buffer is one valid byte. A full pipe drops
        // the byte, which only merges repeated signals.
        unsafe { libc::write(fd, (&raw const byte).cast(), 1) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// Installs handlers for `signals` that write each signal's number as one byte to a pipe, and
/// returns the pipe's read end (nonblocking, close-on-exec). Once per process: a second call
/// fails with `AlreadyExists`. The handlers act only in this process: in a child forked from
/// it (until that child execs) they do nothing.
pub(crate) fn install(signals: &[Signal]) -> io::Result<OwnedFd> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is valid for the two ints pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: two fresh descriptors owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    if PIPE.compare_exchange(-1, write.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "signal handlers are already installed",
        ));
    }
    // The write end lives as long as the process: the handler may run at any time.
    std::mem::forget(write);
    // SAFETY: getpid has no preconditions and cannot fail.
    INSTALLER.store(unsafe { libc::getpid() }, Ordering::SeqCst);
    for &signal in signals {
        // SAFETY: sigaction is given a zeroed struct (a valid empty mask and flags) with our
        // handler, an extern "C" fn that only makes async-signal-safe calls.
        let ret = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(number(signal), &action, std::ptr::null_mut())
        };
        if ret == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(read)
}

/// Reads every queued signal from the pipe's read end.
pub(crate) fn drain(read: &OwnedFd) -> Vec<Signal> {
    let mut buf = [0u8; 64];
    let mut out = Vec::new();
    loop {
        // SAFETY: reads into a valid buffer of its length from a descriptor we own.
        let n = unsafe { libc::read(read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return out;
        }
        out.extend(buf[..n as usize].iter().filter_map(|&b| from_number(i32::from(b))));
    }
}

/// Blocks every signal that can be blocked in the calling thread, so the process's signals go
/// to its other threads. For herd's own threads: the application's handlers, masks and
/// `sigwait` calls are made for the threads it knows about.
pub(crate) fn block_signals_in_this_thread() {
    // SAFETY: `set` is a valid sigset_t that sigfillset initialises before pthread_sigmask
    // reads it; the old mask is not asked for (null). pthread_sigmask only fails for an
    // invalid `how`, and SIG_BLOCK is valid.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}
