//! `hello`: an HTTP/1.1 cluster, the README's main job.
//!
//! ```text
//! hello [--workers N] [--policy rr|none|least-conn|reuseport] [--listen ADDR:PORT]
//! ```
//!
//! The primary forks N workers (default: the number of cores) that share ADDR:PORT (default
//! `127.0.0.1:8080`) under the policy (default: `HERD_SCHED_POLICY`, else `rr`), and prints
//! `listening on http://ADDR:PORT (N workers, policy P)` once every worker listens. Each worker
//! answers `GET /` with `hello from worker <id> pid <pid>`, and `GET /sleep/<ms>` the same
//! after that many milliseconds; keep-alive and `Connection: close` are honoured.

use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;
use std::time::Duration;

use herd::{Cluster, Event, Policy, Role};

struct Args {
    workers: Option<usize>,
    policy: Option<Policy>,
    listen: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { workers: None, policy: None, listen: "127.0.0.1:8080".into() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--workers" => {
                let v = value()?;
                let n: usize = v.parse().map_err(|_| format!("--workers {v:?}: not a number"))?;
                if n == 0 {
                    return Err("--workers must be at least 1".into());
                }
                args.workers = Some(n);
            }
            "--policy" => args.policy = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            "--listen" => args.listen = value()?,
            "-h" | "--help" => {
                return Err("usage: hello [--workers N] [--policy rr|none|least-conn|reuseport] [--listen ADDR:PORT]".into());
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
            eprintln!("hello: {message}");
            return ExitCode::from(2);
        }
    };
    let result = match herd::role() {
        Role::Primary => primary(&args),
        Role::Worker(id) => worker(id, &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hello: {message}");
            ExitCode::FAILURE
        }
    }
}

fn primary(args: &Args) -> Result<(), String> {
    let mut cluster = Cluster::new();
    if let Some(n) = args.workers {
        cluster = cluster.workers(n);
    }
    if let Some(policy) = args.policy {
        cluster = cluster.policy(policy);
    }
    let policy = cluster.resolved_policy().map_err(|e| e.to_string())?;
    let count =
        args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut primary = cluster.start().map_err(|e| e.to_string())?;
    let mut listening = 0;
    loop {
        match primary.next_event(None).map_err(|e| e.to_string())? {
            Some(Event::Listening { address, .. }) => {
                listening += 1;
                if listening == count {
                    let shown = address.to_string();
                    println!(
                        "listening on http://{} ({count} workers, policy {policy})",
                        shown.trim_start_matches("tcp://")
                    );
                }
            }
            // A worker that cannot listen says why, and the cluster cannot serve: stop.
            Some(Event::Message { data, .. }) => {
                return Err(String::from_utf8_lossy(&data).into_owned());
            }
            Some(Event::Exit { worker, status }) if listening < count => {
                return Err(format!("worker {worker} exited before listening ({status})"));
            }
            _ => {}
        }
    }
}

fn worker(id: herd::WorkerId, args: &Args) -> Result<(), String> {
    let worker = herd::worker().map_err(|e| e.to_string())?;
    let listener = match worker.listen(&args.listen) {
        Ok(listener) => listener,
        Err(e) => {
            // The primary prints it, once, and exits non-zero.
            let _ = worker.send(e.to_string().as_bytes(), &[]);
            std::process::exit(1);
        }
    };
    let pid = std::process::id();
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        std::thread::spawn(move || serve(conn, id, pid));
    }
    Ok(())
}

/// Serves one connection: requests until the client closes or asks to.
fn serve(conn: herd::Connection, id: herd::WorkerId, pid: u32) {
    // Reads and writes both go through `&Stream`; `conn` lives to the end, so a hand-off
    // connection is reported closed only when this function returns.
    let mut reader = BufReader::new(conn.stream());
    let mut writer = conn.stream();
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut close = request_line.ends_with("HTTP/1.0\r\n");
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" || header == "\n" {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if lower.starts_with("connection:") {
                close = lower.contains("close");
            }
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (status, body) = match (method, path) {
            ("GET", "/") => ("200 OK", format!("hello from worker {id} pid {pid}\n")),
            ("GET", p) if p.starts_with("/sleep/") => match p["/sleep/".len()..].parse::<u64>() {
                Ok(ms) => {
                    std::thread::sleep(Duration::from_millis(ms));
                    ("200 OK", format!("hello from worker {id} pid {pid}\n"))
                }
                Err(_) => ("400 Bad Request", "bad sleep\n".to_owned()),
            },
            _ => ("404 Not Found", "not found\n".to_owned()),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if writer.write_all(response.as_bytes()).is_err() || close {
            return;
        }
    }
}
