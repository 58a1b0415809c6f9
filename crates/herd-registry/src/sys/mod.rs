//! The registry's two contacts with the OS beyond its dependencies: registering sources with a
//! poller (an unsafe API, wrapped here in an owning type) and reading accept's errno.

mod epoll;
mod errno;
mod poll;

pub use epoll::{Event, Events, Poller};
#[cfg(test)]
pub(crate) use errno::codes;
pub(crate) use errno::{is_resource_exhaustion, is_transient_send_error};
pub use poll::Watched;
