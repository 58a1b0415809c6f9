//! Handing a channel end to a child process, and recovering it there.
//!
//! The parent moves its end into the [`Command`]; between `fork` and `exec` the child `dup2`s
//! it to a fixed descriptor number, and the parent sets an environment variable naming that
//! number (as Node names its IPC fd in `NODE_CHANNEL_FD`). Every other descriptor of ours is
//! close-on-exec, so nothing else reaches the child.

use std::os::fd::RawFd;
use std::process::Command;

use crate::channel::require_seqpacket;
use crate::sys::fd::TakeError;
use crate::{Channel, Error, sys};

impl Channel {
    /// Gives this end to the child that `cmd` will spawn, at descriptor `target` (3 or above),
    /// and sets `env_var` to that number in the child's environment.
    ///
    /// The end is owned by `cmd` from now on and closed in this process when `cmd` is dropped:
    /// drop the command after spawning, or this process keeps the child's end open and will
    /// not see end of stream when the child exits.
    ///
    /// This works in a process whose standard streams are closed, where the end itself may
    /// be descriptor 0, 1 or 2: it is first moved to a number from 3 up, because `cmd`
    /// redirects the child's standard streams before the end is placed.
    ///
    /// # Errors
    /// [`Error::Inherit`] when `target` is below 3 (the standard streams); [`Error::Io`]
    /// (`fcntl F_DUPFD_CLOEXEC`, e.g. `EMFILE`) when the end sits on a standard stream's
    /// number and cannot be moved. The end is closed on error.
    pub fn into_child(self, cmd: &mut Command, target: RawFd, env_var: &str) -> Result<(), Error> {
        if target < 3 {
            return Err(Error::Inherit {
                var: env_var.to_owned(),
                reason: format!("target descriptor {target} would replace a standard stream"),
            });
        }
        let fd = sys::process::above_stdio(self.into())
            .map_err(|e| Error::io("fcntl F_DUPFD_CLOEXEC", e))?;
        cmd.env(env_var, target.to_string());
        sys::process::place_at(cmd, fd, target);
        Ok(())
    }

    /// Recovers the end a parent handed over with [`into_child`](Channel::into_child): reads
    /// the number in `env_var`, checks that a `SOCK_SEQPACKET` socket is open there, takes
    /// ownership and marks it close-on-exec again, so this process's own children do not get it.
    ///
    /// # Errors
    /// [`Error::Inherit`] saying why: the variable is unset or not a number, nothing is open at
    /// that number, it is not a channel socket (it is then left open and untouched), or it was
    /// already taken by an earlier call.
    pub fn from_env(env_var: &str) -> Result<Channel, Error> {
        let fail = |reason: String| Error::Inherit { var: env_var.to_owned(), reason };
        let value = std::env::var(env_var).map_err(|e| fail(e.to_string()))?;
        let raw: RawFd = value
            .trim()
            .parse()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| fail(format!("{value:?} is not a descriptor number")))?;
        let fd = sys::fd::take_inherited(raw, require_seqpacket).map_err(|e| match e {
            TakeError::NotOpen => fail(format!("descriptor {raw} is not open")),
            TakeError::AlreadyTaken => fail(format!("descriptor {raw} was already taken")),
            TakeError::Rejected(e) => fail(format!("descriptor {raw}: {e}")),
        })?;
        Ok(Channel::wrap(fd))
    }
}
