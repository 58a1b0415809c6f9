//! [`Signal`]: the signals a primary sends its workers.

/// A signal for [`Primary::kill`](crate::Primary::kill).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// `SIGTERM`, Node's default for `worker.kill()`. A herd worker drains on it (as on its own
    /// `disconnect`) rather than dying; a primary handling signals stops gracefully.
    Term,
    /// `SIGKILL`.
    Kill,
    /// `SIGINT`.
    Int,
    /// `SIGHUP`.
    Hup,
    /// `SIGQUIT`.
    Quit,
    /// `SIGUSR1`.
    Usr1,
    /// `SIGUSR2`.
    Usr2,
    /// `SIGTTIN`: to a primary handling signals, one more worker (gunicorn's convention).
    Ttin,
    /// `SIGTTOU`: to a primary handling signals, one worker fewer.
    Ttou,
    /// `SIGWINCH` (the terminal's window changed size): forwarded to the workers by a primary
    /// that forwards signals ([`Cluster::forward_signals`](crate::Cluster::forward_signals)).
    Winch,
}

impl Signal {
    /// The signal's number on this platform.
    pub fn number(self) -> i32 {
        crate::sys::signal_number(self)
    }

    /// Its name as `kill -l` and `signal(7)` spell it: `SIGTERM`, `SIGHUP`, ...
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
            Signal::Int => "SIGINT",
            Signal::Hup => "SIGHUP",
            Signal::Quit => "SIGQUIT",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
            Signal::Ttin => "SIGTTIN",
            Signal::Ttou => "SIGTTOU",
            Signal::Winch => "SIGWINCH",
        }
    }
}
