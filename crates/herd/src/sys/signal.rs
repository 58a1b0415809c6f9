//! Signal numbers, and turning signals into bytes on a pipe (the self-pipe trick, with the
//! handlers in signal-hook's registry so they chain with others), so they join an event loop
//! like any other readiness.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;

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
        Signal::Winch => libc::SIGWINCH,
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
        libc::SIGWINCH => Signal::Winch,
        _ => return None,
    })
}

/// herd's handlers of some signals, registered in signal-hook's registry (the one
/// `tokio::signal` and `signal-hook` use too), so they run beside any other handler of the
/// same signals instead of replacing it. Each handler writes its signal's number as one byte
/// to a pipe whose read end this holds; dropping it unregisters the handlers (and closes the
/// pipe's write end with them).
pub(crate) struct Installed {
    read: OwnedFd,
    ids: Vec<signal_hook_registry::SigId>,
}

impl AsFd for Installed {
    /// The pipe's read end: readable while a signal waits to be read ([`drain`]).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook_registry::unregister(id);
        }
    }
}

/// Registers handlers for `signals` that write each signal's number as one byte to a pipe,
/// and returns the registration with the pipe's read end (nonblocking, close-on-exec). The
/// handlers chain with every other handler of signal-hook's registry (and with a `sigaction`
/// handler installed before the registry's first, which it calls too).
///
/// The handlers act only in this process: a child forked from it keeps them (and the pipe)
/// until it execs, and a signal that lands there then (a terminal's Ctrl-C to the group,
/// SIGTTIN from a script) must not be counted a second time through the inherited pipe, so
/// each handler compares `getpid()` with the pid it was installed in.
pub(crate) fn install(signals: &[Signal]) -> io::Result<Installed> {
    let numbers: Vec<libc::c_int> = signals.iter().map(|&s| number(s)).collect();
    install_numbers(&numbers)
}

/// [`install`] for `SIGCHLD`: the pipe becomes readable when a child of this process has
/// exited (or stopped, or continued), so a subreaper reaps the orphans it inherits as they
/// die. [`drain`] empties it (it yields no [`Signal`]).
pub(crate) fn install_child_exits() -> io::Result<Installed> {
    install_numbers(&[libc::SIGCHLD])
}

fn install_numbers(signals: &[libc::c_int]) -> io::Result<Installed> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is valid for the two ints pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: two fresh descriptors owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Kept alive by the handlers: the registry drops each handler only once it cannot run.
    let write = Arc::new(write);
    // SAFETY: getpid has no preconditions and cannot fail.
    let installer = unsafe { libc::getpid() };
    let mut installed = Installed { read, ids: Vec::with_capacity(signals.len()) };
    for &signal in signals {
        let write = Arc::clone(&write);
        let byte = signal as u8;
        let action = move || {
            // SAFETY: getpid is async-signal-safe and cannot fail (glibc no longer caches it,
            // so a forked child sees its own pid).
            if unsafe { libc::getpid() } == installer {
                // SAFETY: write is async-signal-safe; the buffer is one valid byte and the
                // descriptor is open while this handler exists. A full pipe drops the byte,
                // which only merges repeated signals.
                unsafe { libc::write(write.as_raw_fd(), (&raw const byte).cast(), 1) };
            }
        };
        // SAFETY: the action makes only async-signal-safe calls (getpid, write), allocates
        // nothing, takes no lock and touches only what it owns (the captured pid, byte and
        // descriptor); errno is saved and restored around it by the registry.
        let id = unsafe { signal_hook_registry::register(signal, action) }?;
        installed.ids.push(id);
    }
    Ok(installed)
}

/// Reads every queued signal from the pipe's read end.
pub(crate) fn drain(read: BorrowedFd<'_>) -> Vec<Signal> {
    let mut buf = [0u8; 64];
    let mut out = Vec::new();
    loop {
        // SAFETY: reads into a valid buffer of its length from a descriptor borrowed for the
        // call.
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
