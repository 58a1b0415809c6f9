//! The facade's system calls: process identity, signals, pidfds, and a wake-up pipe.

mod notify;
mod process;
mod signal;

pub(crate) use notify::Notify;
pub(crate) use process::{die_with_parent, kill, parent_pid, pidfd_open};
pub(crate) use signal::number as signal_number;
