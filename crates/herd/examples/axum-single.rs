//! `axum-single`: the benchmarks' async reference point, what a user would run instead of a
//! cluster: one process, axum on a multi-thread tokio runtime, no herd at all.
//!
//! ```text
//! axum-single [--threads N] [--listen ADDR:PORT]
//! ```
//!
//! `GET /` answers `hello from worker 0 pid <pid>` as `hello` and `ceiling` do, with the
//! runtime's N worker threads (default: the number of cores), and it prints `listening on
//! http://ADDR:PORT (1 workers, policy axum, N threads)` once bound (default
//! `127.0.0.1:8080`). SIGTERM stops it gracefully (axum's `with_graceful_shutdown`). `cargo
//! xtask bench` compares `hello-axum` with it.

use axum::routing::get;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut listen = "127.0.0.1:8080".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--threads" => threads = value.parse().map_err(|_| format!("--threads {value:?}"))?,
            "--listen" => listen = value,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        println!(
            "listening on http://{} (1 workers, policy axum, {threads} threads)",
            listener.local_addr()?
        );
        let body = format!("hello from worker 0 pid {}\n", std::process::id());
        let app = axum::Router::new().route("/", get(move || std::future::ready(body.clone())));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                term.recv().await;
            })
            .await?;
        Ok(())
    })
}
