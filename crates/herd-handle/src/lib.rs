//! What a herd cluster can listen on: listen address specs, binding them, accepting into std
//! types.
//!
//! - [`Spec`] names something to listen on and parses from strings such as
//!   `tcp://127.0.0.1:8080`, `udp://[::1]:53`, `unix:///run/app.sock`, `unix:@name` or `fd://3`.
//! - [`bind`] binds it with [`BindOptions`] (backlog, `SO_REUSEADDR`, `IPV6_V6ONLY`,
//!   `SO_REUSEPORT`, Unix file permissions, stale socket files, Node's path shortening) and
//!   gives a [`Bound`]: a [`Listener`] or a UDP socket.
//! - A [`Listener`] may be shared between processes, so it is always nonblocking;
//!   [`Listener::accept`] blocks by waiting in `poll` and gives a blocking [`Stream`].
//! - [`Listener::from_fd`] and [`stream_from_fd`] adopt descriptors received from another
//!   process.
//! - Failures are an [`Error`] naming the operation and the address, with the OS error.
//!
//! Every descriptor is close-on-exec from birth and owned from the moment it exists.
//! Linux only (abstract names, `SO_DOMAIN`, `accept4`).
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//! use herd_handle::{BindOptions, Spec, bind};
//!
//! let spec: Spec = "tcp://127.0.0.1:0".parse()?;
//! let listener = bind(&spec, &BindOptions::default())?.into_listener().expect("TCP listens");
//! let address = listener.local_addr()?; // the real port, e.g. tcp://127.0.0.1:40103
//!
//! let mut client = TcpStream::connect(address.socket_addr().expect("TCP has one"))?;
//! let (mut server, peer) = listener.accept()?;
//! client.write_all(b"ping")?;
//! let mut buf = [0; 4];
//! server.read_exact(&mut buf)?;
//! assert_eq!(&buf, b"ping");
//! assert_eq!(peer.to_string(), client.local_addr()?.to_string());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod access;
mod bind;
mod error;
mod listener;
mod options;
mod spec;
mod stream;
mod sys;
mod unix_path;

pub use access::{Credentials, check_bind_access, could_remove};
pub use bind::{Bound, bind};
pub use error::Error;
pub use listener::Listener;
pub use options::BindOptions;
pub use spec::{AddressType, ParseError, Spec};
pub use stream::{PeerAddr, Stream, stream_from_fd};
pub use unix_path::{SocketFile, shorten};

/// Whether an accept failed because the process or the system is out of descriptors or memory
/// (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`; see `accept(2)`). The connection stays queued in
/// the kernel; retrying at once fails the same way and spins a core, so an accept loop pauses
/// first (herd pauses 50 ms).
pub fn is_resource_exhaustion(error: &std::io::Error) -> bool {
    sys::errno::is_resource_exhaustion(error)
}
