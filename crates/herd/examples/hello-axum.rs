//! `hello-axum`: `hello`'s HTTP cluster as an axum server on tokio, primary included.
//!
//! ```text
//! cargo run --release -p herd --example hello-axum --features axum -- \
//!     [--workers N] [--policy rr|none|least-conn|reuseport] [--listen ADDR:PORT]
//!     [--hang-timeout SECS]
//! ```
//!
//! The same contract as `hello` (so the same scripts and `cargo xtask bench` drive it): N
//! workers (default: one per core) on ADDR:PORT (default `127.0.0.1:8080`) under the policy
//! (default: `HERD_SCHED_POLICY`, else `rr`); `listening on http://ADDR:PORT (N workers,
//! policy P)` once every worker listens; a failed bind is one line on stderr and exit 1.
//! `GET /` answers `hello from worker <id> pid <pid>`, `GET /sleep/<ms>` the same after that
//! many milliseconds; keep-alive as hyper does it.
//!
//! Signals to the primary: SIGINT or SIGTERM stop gracefully (requests in flight complete,
//! then one line per worker place, `worker <id>: <n> requests`, and exit 0; a second one
//! stops at once); SIGHUP restarts every worker, one at a time, losing no request (keep-alive
//! connections are drained by [`herd::http::Drain`]); SIGTTIN and SIGTTOU add or remove a
//! worker. Respawns, hangs, scaling and restarts are one line each on stderr.
//!
//! Each worker runs a one-thread tokio runtime (the cluster is the parallelism, as with
//! Node's); the primary takes its events with `next_event_async`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use herd::{Cluster, Event, Policy, Role, WorkerId};

struct Args {
    workers: Option<usize>,
    policy: Option<Policy>,
    listen: String,
    hang_timeout: Option<Option<Duration>>,
}

fn parse_args() -> Result<Args, String> {
    let mut args =
        Args { workers: None, policy: None, listen: "127.0.0.1:8080".into(), hang_timeout: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--workers" => {
                let v = value()?;
                let n = v.parse().ok().filter(|&n: &usize| n > 0);
                args.workers = Some(n.ok_or_else(|| format!("--workers {v:?}: not 1 or more"))?);
            }
            "--policy" => args.policy = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            "--listen" => args.listen = value()?,
            "--hang-timeout" => {
                let v = value()?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| format!("--hang-timeout {v:?}: not a number of seconds"))?;
                args.hang_timeout = Some((secs > 0.0).then(|| Duration::from_secs_f64(secs)));
            }
            "-h" | "--help" => {
                return Err("usage: hello-axum [--workers N] [--policy rr|none|least-conn|reuseport] [--listen ADDR:PORT] [--hang-timeout SECS]".into());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("hello-axum: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hello-axum: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match herd::role() {
        Role::Primary => runtime.block_on(primary(&args)),
        // A worker's failures are the primary's to report (it prints them once).
        Role::Worker(id) => match runtime.block_on(worker(id, &args)) {
            Ok(()) => return ExitCode::SUCCESS,
            Err(_) => return ExitCode::FAILURE,
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hello-axum: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn primary(args: &Args) -> Result<(), String> {
    let mut cluster = Cluster::new();
    if let Some(n) = args.workers {
        cluster = cluster.workers(n);
    }
    if let Some(policy) = args.policy {
        cluster = cluster.policy(policy);
    }
    if let Some(timeout) = args.hang_timeout {
        cluster = cluster.hang_timeout(timeout);
    }
    let policy = cluster.resolved_policy().map_err(|e| e.to_string())?;
    let count =
        args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut primary = cluster.start().map_err(|e| e.to_string())?;
    primary.handle_signals().map_err(|e| e.to_string())?;
    let mut listening = std::collections::BTreeSet::new();
    let mut announced = false;
    // Per place: its latest worker, and the requests served there by it and its predecessors.
    let mut places: BTreeMap<usize, (WorkerId, u64)> = BTreeMap::new();
    let mut place_of: BTreeMap<WorkerId, usize> = BTreeMap::new();
    loop {
        match primary.next_event_async().await.map_err(|e| e.to_string())? {
            Event::Fork(id) => {
                if let Some(place) = primary.worker(id).and_then(|w| w.place) {
                    places.entry(place).or_insert((id, 0)).0 = id;
                    place_of.insert(id, place);
                }
            }
            Event::Listening { worker, address } => {
                listening.insert(worker);
                if !announced && listening.len() == count {
                    announced = true;
                    let shown = address.to_string();
                    println!(
                        "listening on http://{} ({count} workers, policy {policy})",
                        shown.trim_start_matches("tcp://")
                    );
                }
            }
            Event::ListenFailed { worker, error, .. } if announced => {
                eprintln!("hello-axum: worker {worker}: {error}");
            }
            Event::ListenFailed { error, .. } => return Err(error.to_string()),
            Event::Message { worker, data, .. } => {
                let text = String::from_utf8_lossy(&data);
                if let Some(n) = text.strip_prefix("count ").and_then(|n| n.parse::<u64>().ok()) {
                    if let Some(entry) = place_of.get(&worker).and_then(|p| places.get_mut(p)) {
                        entry.1 += n;
                    }
                }
            }
            Event::Exit { worker, status, info, .. } if !info.disconnecting && !announced => {
                return Err(format!("worker {worker} exited before listening ({status})"));
            }
            Event::Respawning { worker, place, delay } => {
                eprintln!(
                    "hello-axum: worker {worker} in place {place} died; respawning in {delay:?}"
                );
            }
            Event::Hung { worker, reason } => {
                eprintln!("hello-axum: worker {worker} hung ({reason}): killed")
            }
            Event::RespawnHalted { reason, .. } => {
                if primary.workers().next().is_none() {
                    return Err(reason);
                }
                eprintln!("hello-axum: {reason}");
            }
            Event::Scaled { from, to } => {
                eprintln!("hello-axum: scaled from {from} to {to} workers")
            }
            Event::ForkFailed { reason } => eprintln!("hello-axum: {reason}"),
            Event::Restarting { workers } => {
                eprintln!("hello-axum: rolling restart of {workers} workers begins");
            }
            Event::Restarted => eprintln!("hello-axum: rolling restart done"),
            Event::RestartAborted { place, reason } => {
                eprintln!("hello-axum: rolling restart aborted at place {place}: {reason}");
            }
            Event::Drained => {
                for (id, served) in places.values() {
                    println!("worker {id}: {served} requests");
                }
                return Ok(());
            }
            _ => {}
        }
    }
}

async fn worker(id: WorkerId, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let worker = herd::worker()?;
    // A failed listen is the primary's to report (`Event::ListenFailed`), once.
    let listener = herd::tokio::Listener::new(worker.listen(&args.listen)?)?;
    let served = Arc::new(AtomicU64::new(0));
    let greeting = {
        let (served, pid) = (Arc::clone(&served), std::process::id());
        move || {
            served.fetch_add(1, Ordering::Relaxed);
            format!("hello from worker {id} pid {pid}\n")
        }
    };
    let slow = greeting.clone();
    let drain = herd::http::Drain::new(&worker);
    let app = axum::Router::new()
        .route("/", get(move || std::future::ready(greeting())))
        .route(
            "/sleep/{ms}",
            get(move |Path(ms): Path<u64>| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                slow()
            }),
        )
        .layer(drain.layer());
    axum::serve(listener, app).with_graceful_shutdown(drain.shutdown()).await?;
    // Drained: every connection is done. The last word, then `main` returns.
    worker.send(format!("count {}", served.load(Ordering::Relaxed)).as_bytes(), &[])?;
    Ok(())
}
