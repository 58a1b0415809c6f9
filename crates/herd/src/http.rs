//! HTTP building blocks (feature `hyper`): a worker's keep-alive connections drained without
//! losing a request when it is disconnected (a rolling restart, a stop, SIGTERM).
//!
//! An HTTP/1.1 keep-alive connection sits idle between two requests, and the server cannot
//! tell its client "closing now": a server that closes an idle connection at the moment its
//! client sends the next request on it loses that request (the client sees the connection
//! closed with no answer). hyper's graceful shutdown closes idle connections at once, so on
//! every rolling restart a busy worker lost about one request per keep-alive connection.
//! [`Drain`] does what nginx and gunicorn do instead, in two pieces:
//!
//! - [`Drain::layer`], a tower layer: once the worker is disconnecting, every HTTP/1.x response
//!   carries `Connection: close`, so each client that sends a request after the disconnect
//!   gets its answer and then, told so, opens its next connection elsewhere (to another
//!   worker);
//! - [`Drain::shutdown`], the future for the server's graceful shutdown: it resolves a
//!   [grace](Drain::grace) (1 s by default) after the disconnect, or as soon as the worker
//!   holds no connection, whichever comes first. Only then does the server close the
//!   connections that stayed idle the whole grace (their clients sent nothing for a second,
//!   so racing a request is unlikely; an idempotent request that does is retried by any
//!   HTTP/1.1 client, per RFC 9112, section 9.3.1) and wait for the requests in flight.
//!
//! With axum (feature `axum`):
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let worker = herd::worker()?;
//! let listener = herd::tokio::Listener::new(worker.listen("127.0.0.1:8080")?)?;
//! let drain = herd::http::Drain::new(&worker);
//! let app = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "hello\n" }))
//!     .layer(drain.layer());
//! axum::serve(listener, app).with_graceful_shutdown(drain.shutdown()).await?;
//! // Every connection is done: the application's own last words, then `main` returns.
//! # Ok(()) }
//! ```
//!
//! With hyper-util's `auto` server (HTTP/1.1 and HTTP/2 on one port), a tower stack and
//! hyper-util's per-connection graceful shutdown:
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use http_body_util::Full;
//! use hyper::body::{Bytes, Incoming};
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use hyper_util::server::conn::auto;
//! use hyper_util::server::graceful::GracefulShutdown;
//! use hyper_util::service::TowerToHyperService;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let worker = herd::worker()?;
//! let listener = herd::tokio::Listener::new(worker.listen("127.0.0.1:8080")?)?;
//! let drain = herd::http::Drain::new(&worker);
//! let service = tower::ServiceBuilder::new().layer(drain.layer()).service_fn(
//!     |_: hyper::Request<Incoming>| async {
//!         Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("hello\n"))))
//!     },
//! );
//! let server = auto::Builder::new(TokioExecutor::new());
//! let graceful = GracefulShutdown::new();
//! let shutdown = drain.shutdown();
//! tokio::pin!(shutdown);
//! loop {
//!     let stream = tokio::select! {
//!         accepted = listener.accept() => match accepted {
//!             Ok(stream) => stream,
//!             // Disconnecting: no new connection; the grace runs out below.
//!             Err(_) if worker.is_disconnecting() => break,
//!             Err(e) => return Err(e.into()),
//!         },
//!         () = &mut shutdown => break,
//!     };
//!     let service = TowerToHyperService::new(service.clone());
//!     let connection = server.serve_connection_with_upgrades(TokioIo::new(stream), service);
//!     // The stream (and with it the connection's count) is dropped when this ends.
//!     tokio::spawn(graceful.watch(connection.into_owned()));
//! }
//! shutdown.await;
//! graceful.shutdown().await;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{CONNECTION, HeaderValue};

use crate::Worker;
use crate::worker::Until;

/// Drains a worker's HTTP connections on its disconnect: [`layer`](Drain::layer) for the
/// service, [`shutdown`](Drain::shutdown) for the server's graceful shutdown. See the
/// [module](self) for why and how.
#[derive(Clone, Debug)]
pub struct Drain {
    worker: Worker,
    grace: Duration,
}

impl Drain {
    /// The grace by default: 1 s, as `hello` gives its idle connections.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(1);

    /// Drains `worker`'s connections, with the default grace.
    pub fn new(worker: &Worker) -> Drain {
        Drain { worker: worker.clone(), grace: Self::DEFAULT_GRACE }
    }

    /// How long after the disconnect [`shutdown`](Drain::shutdown) resolves, at most: the time
    /// clients have to send one more request on a keep-alive connection (answered with
    /// `Connection: close`) before idle connections are closed. Keep it well under
    /// [`Cluster::kill_timeout`](crate::Cluster::kill_timeout) (5 s by default), which counts
    /// from the same disconnect and includes the requests in flight.
    pub fn grace(mut self, grace: Duration) -> Drain {
        self.grace = grace;
        self
    }

    /// The tower layer that adds `Connection: close` to every HTTP/1.x response made once the
    /// worker is disconnecting (HTTP/2 has no such header: hyper's graceful shutdown sends
    /// `GOAWAY` there). Works for any service of `http::Request` to `http::Response`: axum's
    /// `Router::layer`, tower's `ServiceBuilder`, hyper-util's `TowerToHyperService`.
    pub fn layer(&self) -> DrainLayer {
        DrainLayer { worker: self.worker.clone() }
    }

    /// A future that resolves [`grace`](Drain::grace) after the worker starts disconnecting,
    /// or earlier once it holds no open connection; for `with_graceful_shutdown` (axum) or a
    /// hand-written accept loop. `Send + 'static`; needs a tokio runtime (its timer).
    ///
    /// It is made of [`Worker::disconnected`], so from this call on the application owns its
    /// exit (see there): the code after the server's `serve(..).await` runs.
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        let disconnected = self.worker.disconnected();
        let idle = self.worker.until(Until::Idle);
        let grace = self.grace;
        async move {
            disconnected.await;
            let _ = ::tokio::time::timeout(grace, idle).await;
        }
    }
}

/// The layer of [`Drain::layer`].
#[derive(Clone, Debug)]
pub struct DrainLayer {
    worker: Worker,
}

impl<S> tower_layer::Layer<S> for DrainLayer {
    type Service = DrainService<S>;

    fn layer(&self, inner: S) -> DrainService<S> {
        DrainService { inner, worker: self.worker.clone() }
    }
}

/// The service of [`DrainLayer`]: `inner`, whose HTTP/1.x responses say `Connection: close`
/// once the worker is disconnecting.
#[derive(Clone, Debug)]
pub struct DrainService<S> {
    inner: S,
    worker: Worker,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for DrainService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = DrainFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> DrainFuture<S::Future> {
        let http1 = request.version() < http::Version::HTTP_2;
        let worker = http1.then(|| self.worker.clone());
        DrainFuture { inner: self.inner.call(request), worker }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`DrainService`].
    pub struct DrainFuture<F> {
        #[pin]
        inner: F,
        // `None` for HTTP/2 and later.
        worker: Option<Worker>,
    }
}

impl<F, B, E> Future for DrainFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.inner.poll(cx) {
            Poll::Ready(Ok(response)) => response,
            other => return other,
        };
        // Decided when the answer is ready: a request that began before the disconnect and
        // ends after it closes its connection too.
        if this.worker.as_ref().is_some_and(Worker::is_disconnecting) {
            response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(response))
    }
}
