//! herd on tokio (feature `tokio`): an async [`Listener`] for every policy and address kind,
//! whose [`accept`](Listener::accept) gives a [`Stream`] that carries its connection's close
//! tracking; with feature `axum`, the listener is an [`axum::serve::Listener`].
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use tokio::io::AsyncWriteExt;
//!
//! let worker = herd::worker()?;
//! let listener = herd::tokio::Listener::new(worker.listen("127.0.0.1:8080")?)?;
//! // Ends with `NotConnected` once the worker is disconnecting.
//! while let Ok(mut stream) = listener.accept().await {
//!     tokio::spawn(async move {
//!         let _ = stream.write_all(b"hello\n").await;
//!         // Dropping the stream closes the connection and counts it closed.
//!     });
//! }
//! # Ok(()) }
//! ```
//!
//! No `unsafe` is needed to use it, and herd's own is in its `sys` module: the reactor watches
//! a duplicate of the listener's descriptor that the async listener owns, so tokio's I/O
//! safety rule (the watched descriptor stays the same while registered) holds by
//! construction.

mod listener;
mod stream;

pub use listener::Listener;
pub use stream::Stream;
