//! The facade's system calls: process identity, signals, pidfds, a wake-up pipe, and (with
//! the `tokio` feature) registration with tokio's reactor.

mod activation;
mod inherited;
mod notify;
mod peer;
mod poll;
mod process;
mod procfs;
#[cfg(feature = "tokio")]
mod reactor;
mod signal;

pub(crate) use activation::{
    exec_activated, is_protocol_var, pass_credentials, recv_with_pid, set_blocking,
};
pub(crate) use inherited::{LISTEN_FDS_START, take_listen_fds};
pub(crate) use notify::Notify;
pub(crate) use peer::{PeerCredentials, peer_credentials};
#[cfg(feature = "metrics")]
pub(crate) use poll::{Interest, wait_many};
pub(crate) use poll::{wait_either, wait_readable, wait_readable_for};
#[cfg(test)]
pub(crate) use process::{blocked_in_sendmsg, thread_id};
pub(crate) use process::{
    children, default_signals, die_with_parent, effective_ids, kill, kill_group, monotonic_usec,
    nofile_limit, parent_pid, pidfd_open, reap, set_child_subreaper,
};
pub(crate) use procfs::{cpu_seconds, open_fds, rss_bytes};
#[cfg(feature = "tokio")]
pub(crate) use reactor::register_readable;
pub(crate) use signal::{
    Installed as InstalledSignals, block_signals_in_this_thread, drain as drain_signals,
    install as install_signals, install_child_exits, number as signal_number,
};

/// `EMFILE`: the process's descriptor table is full.
pub(crate) const EMFILE: i32 = libc::EMFILE;
/// `EACCES`: permission denied.
pub(crate) const EACCES: i32 = libc::EACCES;
/// `ENOTCONN`: not connected (here: the worker is disconnecting).
pub(crate) const ENOTCONN: i32 = libc::ENOTCONN;
