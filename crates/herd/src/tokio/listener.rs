//! The async listener: readiness from tokio's reactor, accepts by the std listener's rules.

use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use ::tokio::io::unix::AsyncFd;

use super::Stream;
use crate::worker::Until;
use crate::{Spec, sys};

/// How long an accept waits after running out of descriptors before trying again (as the
/// blocking [`crate::Listener::accept`]).
const EXHAUSTION_PAUSE: Duration = Duration::from_millis(50);

/// A worker's listener on tokio: [`crate::Listener`] with an async
/// [`accept`](Listener::accept), under every policy (a listening socket under `none` and
/// `reuseport`, the hand-off channel under `rr` and `least-conn`) and for TCP and unix
/// addresses alike.
///
/// Accepts follow the blocking listener's rules: a handed-off connection is acknowledged (or
/// refused past [`ListenOptions::max_connections`](crate::ListenOptions::max_connections), or
/// deferred when its descriptor was lost at the descriptor limit), at the descriptor limit
/// the accept pauses 50 ms rather than spin, and once the worker is disconnecting no
/// connection is taken any more. Dropping it tells the primary this worker no longer listens
/// there, as dropping the [`crate::Listener`] does.
pub struct Listener {
    /// The reactor's registration of a duplicate of the listener's descriptor.
    ready: AsyncFd<OwnedFd>,
    listener: crate::Listener,
}

impl Listener {
    /// Registers `listener` with the current tokio runtime's reactor. Call it inside the
    /// runtime that will drive the accepts.
    ///
    /// # Errors
    /// Duplicating the descriptor (`EMFILE`), registering it (`epoll_ctl`), or, for a
    /// hand-off, telling the primary that an event loop takes the connections (the primary
    /// is gone).
    ///
    /// # Panics
    /// Outside a tokio runtime with its I/O driver enabled (as every tokio registration).
    pub fn new(listener: crate::Listener) -> io::Result<Listener> {
        let ready = sys::register_readable(listener.as_fd())?;
        // Hand-offs come nonblocking from now on (once every worker of the handle says so),
        // and several at once: this loop takes each as it arrives.
        listener.declare_event_loop()?;
        Ok(Listener { ready, listener })
    }

    /// Waits for a connection, and returns it as a nonblocking [`Stream`] that counts as one of
    /// the worker's open connections until it is dropped.
    ///
    /// # Errors
    /// `NotConnected` once the worker is disconnecting (at once if it already is, and it ends
    /// a wait under way): it takes no new connection. A listening socket the primary shut down
    /// (a stop) waits for that disconnect, which always follows. Otherwise the accept's error
    /// (the primary gone, say); a retry is the caller's choice.
    ///
    /// Cancel safe: a connection is taken only in the poll that returns it.
    pub async fn accept(&self) -> io::Result<Stream> {
        let worker = self.listener.worker();
        let mut stop = pin!(worker.until(Until::Disconnecting));
        let mut take = pin!(self.take());
        poll_fn(|cx| {
            if let Poll::Ready(taken) = take.as_mut().poll(cx) {
                return Poll::Ready(taken);
            }
            match stop.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(disconnecting())),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Takes a connection when one is ready; pending for good once none can come any more
    /// (the caller's `stop` ends that).
    async fn take(&self) -> io::Result<Stream> {
        loop {
            let mut guard = self.ready.readable().await?;
            match self.listener.try_accept_nonblocking() {
                Ok(connection) => return Stream::new(connection),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A unix listening socket shut down by the primary reports a hang-up with
                    // nothing to accept, and keeps reporting it: only the disconnect is left.
                    if guard.ready().is_read_closed() && !self.listener.is_handoff() {
                        std::future::pending::<()>().await;
                    }
                    guard.clear_ready();
                }
                // Disconnecting, or a TCP socket the primary shut down: the disconnect that
                // always follows ends the wait.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    std::future::pending::<()>().await;
                }
                Err(e) if herd_handle::is_resource_exhaustion(&e) => {
                    // The socket stays readable while the connection waits in its queue.
                    drop(guard);
                    ::tokio::time::sleep(EXHAUSTION_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The address, with the real port when port 0 was asked (Node's `server.address()`).
    pub fn local_addr(&self) -> &Spec {
        self.listener.local_addr()
    }

    /// The blocking listener this one is made of.
    pub fn get_ref(&self) -> &crate::Listener {
        &self.listener
    }

    /// The blocking listener back (its registration with the reactor ends).
    pub fn into_inner(self) -> crate::Listener {
        self.listener
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("address", self.local_addr()).finish_non_exhaustive()
    }
}

fn disconnecting() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the worker is disconnecting")
}

/// How long axum's accept waits before trying again after an error other than the descriptor
/// limit (which [`Listener::accept`] handles itself); axum's own `TcpListener` waits 1 s.
#[cfg(feature = "axum")]
const ERROR_PAUSE: Duration = Duration::from_millis(50);

/// `axum::serve(listener, app)` takes herd's listener as it takes tokio's.
///
/// axum's accept cannot fail: an error is retried after 50 ms (the disconnect ends that
/// wait). Once the worker is disconnecting the accept stays pending for good, so the server
/// ends through its graceful shutdown: give it [`Worker::disconnected`](crate::Worker::disconnected)
/// (or [`herd::http::Drain::shutdown`](crate::http::Drain::shutdown), which also drains
/// keep-alive connections) in `with_graceful_shutdown`.
#[cfg(feature = "axum")]
impl axum::serve::Listener for Listener {
    type Io = Stream;
    type Addr = crate::PeerAddr;

    async fn accept(&mut self) -> (Stream, crate::PeerAddr) {
        loop {
            match Listener::accept(self).await {
                Ok(stream) => {
                    let peer = stream.peer_addr().clone();
                    return (stream, peer);
                }
                Err(_) if self.listener.worker().is_disconnecting() => {
                    std::future::pending::<()>().await;
                }
                Err(_) => {
                    let stop = self.listener.worker().until(Until::Disconnecting);
                    let _ = ::tokio::time::timeout(ERROR_PAUSE, stop).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<crate::PeerAddr> {
        super::stream::spec_to_addr(self.local_addr())
    }
}
