//! The registry's contacts with the OS beyond its dependencies: registering sources with a
//! poller (an unsafe API, wrapped here in an owning type), reading accept's errno, closing many descriptors at once, and taking a
//! reuseport socket out of its group with its queue migrated.

mod close;
mod epoll;
mod errno;
pub(crate) mod migrate;
mod poll;
mod tcp_info;

pub(crate) use close::close_all;
pub use epoll::{Event, Events, Poller};
#[cfg(test)]
pub(crate) use errno::codes;
pub(crate) use errno::is_transient_send_error;
pub use poll::Watched;
pub(crate) use tcp_info::accept_queue_len;
