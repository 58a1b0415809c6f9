//! The metrics listener ([`Cluster::metrics_listen`](crate::Cluster::metrics_listen), feature
//! `metrics`): `/metrics` (Prometheus' text format), `/readyz` and `/livez`, served by a
//! thread of its own with a `poll(2)` loop over its connections ([`server`]).
//!
//! Why a thread and not the primary's loop: a scrape or a probe must never hold up the
//! cluster's work (a slow client, a half-sent request), and a stuck primary must still be
//! answered (with a failing `/livez`), which only something outside its loop can do. Why a
//! plain thread and not an async server: the primary needs no runtime (std applications run
//! it with `next_event`), and one `poll(2)` loop over a bounded set of connections is all a
//! few scrapes and probes a minute need, while no slow client holds up another.
//!
//! The thread never reads the primary's state itself: each request asks the primary's loop
//! for a fresh [`ClusterStats`] (a wake-up pipe in the primary's poller) and waits for it at
//! most [`PROBE_TIMEOUT`]. An answer in time is what `/livez` checks: the loop turns.

mod exposition;
mod http;
mod server;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use herd_registry::{Poller, Watched};

use super::{METRICS_TOKEN, Primary};
use crate::stats::{ClusterStats, PROBE_TIMEOUT};
use crate::sys::{self, Notify};

/// What the metrics thread and the primary's loop share.
struct Board {
    /// Raised by the metrics thread when it wants a snapshot; read end in the primary's
    /// poller.
    ask: Notify,
    published: Mutex<Published>,
    answered: Condvar,
    stop: AtomicBool,
    /// Raised to wake the accept loop when the primary goes.
    stop_wake: Notify,
}

#[derive(Default)]
struct Published {
    /// Requests made, and the last one the primary answered.
    asked: u64,
    answered: u64,
    stats: Option<Arc<ClusterStats>>,
}

/// A snapshot for one request, and whether the primary answered in time.
#[derive(Clone)]
struct Answer {
    stats: Option<Arc<ClusterStats>>,
    fresh: bool,
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the primary's loop for a snapshot and waits for it, at most [`PROBE_TIMEOUT`].
    fn request(&self) -> Answer {
        let ticket = {
            let mut published = self.lock();
            published.asked += 1;
            published.asked
        };
        self.ask.raise();
        let deadline = Instant::now() + PROBE_TIMEOUT;
        let mut published = self.lock();
        while published.answered < ticket {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            published =
                self.answered.wait_timeout(published, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        Answer { stats: published.stats.clone(), fresh: published.answered >= ticket }
    }
}

/// The primary's side: the board, its registration in the primary's poller, the thread.
pub(super) struct Metrics {
    board: Arc<Board>,
    _watched: Watched<OwnedFd>,
    address: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Metrics {
    /// Binds `address` and starts the thread.
    ///
    /// # Errors
    /// [`crate::Error::Listen`] when the address cannot be bound (its errno kept);
    /// [`crate::Error::Io`] when the wake-up pipes, their registration or the thread cannot
    /// be made.
    pub(super) fn start(
        poller: &Arc<Poller>,
        address: SocketAddr,
    ) -> Result<Metrics, crate::Error> {
        let listener = TcpListener::bind(address).map_err(|e| {
            crate::Error::Listen(herd_handle::Error::new("bind the metrics listener", address, e))
        })?;
        let address = listener.local_addr().map_err(crate::Error::io("getsockname (metrics)"))?;
        listener
            .set_nonblocking(true)
            .map_err(crate::Error::io("set the metrics listener nonblocking"))?;
        let board = Arc::new(Board {
            ask: Notify::new().map_err(crate::Error::io("create the metrics wake-up pipe"))?,
            published: Mutex::new(Published::default()),
            answered: Condvar::new(),
            stop: AtomicBool::new(false),
            stop_wake: Notify::new()
                .map_err(crate::Error::io("create the metrics wake-up pipe"))?,
        });
        let read_end = board.ask.as_fd().try_clone_to_owned().map_err(crate::Error::io("dup"))?;
        let watched = Watched::new(poller, read_end, METRICS_TOKEN)
            .map_err(crate::Error::io("watch the metrics wake-up pipe"))?;
        let runner = Arc::clone(&board);
        let thread = std::thread::Builder::new()
            .name("herd-metrics".into())
            .spawn(move || serve(&runner, &listener))
            .map_err(crate::Error::io("start the metrics thread"))?;
        Ok(Metrics { board, _watched: watched, address, thread: Some(thread) })
    }
}

impl Drop for Metrics {
    fn drop(&mut self) {
        self.board.stop.store(true, Ordering::SeqCst);
        self.board.stop_wake.raise();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread's body: [`server::serve`] until the primary goes. The requests completed in
/// one turn share one snapshot, asked only if one of them needs it.
fn serve(board: &Board, listener: &TcpListener) {
    // Signals are the primary's thread's to take, as on the registry's thread.
    sys::block_signals_in_this_thread();
    server::serve(listener, &board.stop, board.stop_wake.as_fd(), |paths| {
        let mut answer: Option<Answer> = None;
        paths
            .iter()
            .map(|path| respond(path, || answer.get_or_insert_with(|| board.request()).clone()))
            .collect()
    });
}

/// The answer to `GET path`: status, content type, body.
fn respond(path: &str, mut request: impl FnMut() -> Answer) -> http::Response {
    match path {
        "/metrics" => {
            let answer = request();
            match answer.stats {
                Some(stats) => match exposition::render(&stats, answer.fresh) {
                    Ok(text) => http::Response::ok(exposition::CONTENT_TYPE, text),
                    Err(_) => http::Response::text(500, "encoding the metrics failed\n"),
                },
                None => http::Response::text(503, "the primary did not answer in time\n"),
            }
        }
        "/livez" => {
            if request().fresh {
                http::Response::text(200, "ok: the primary's loop turns\n")
            } else {
                http::Response::text(503, "the primary's loop did not answer within 500 ms\n")
            }
        }
        "/readyz" => {
            let answer = request();
            match (answer.fresh, answer.stats) {
                (true, Some(stats)) if stats.ready => {
                    http::Response::text(200, "ok: every place has a ready worker\n")
                }
                (true, Some(stats)) if stats.stopping => {
                    http::Response::text(503, "not ready: the cluster is stopping\n")
                }
                (true, Some(_)) => {
                    http::Response::text(503, "not ready: a place has no ready worker\n")
                }
                _ => http::Response::text(503, "the primary's loop did not answer within 500 ms\n"),
            }
        }
        _ => http::Response::text(404, "not found: try /metrics, /readyz or /livez\n"),
    }
}

impl Primary {
    /// The address the metrics listener is bound to ([`Cluster::metrics_listen`]; the real
    /// port when port 0 was asked), or `None` without one.
    ///
    /// [`Cluster::metrics_listen`]: crate::Cluster::metrics_listen
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.address)
    }

    /// The metrics thread asked for a snapshot: take one and publish it.
    pub(super) fn on_metrics_request(&mut self) {
        let Some(metrics) = &self.metrics else { return };
        let board = Arc::clone(&metrics.board);
        // Cleared before the requests are read: one made from here on raises it again.
        board.ask.clear();
        let asked = board.lock().asked;
        let stats = Arc::new(self.stats());
        let mut published = board.lock();
        published.stats = Some(stats);
        published.answered = published.answered.max(asked);
        board.answered.notify_all();
    }
}
