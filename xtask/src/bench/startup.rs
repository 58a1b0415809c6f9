//! Start-up and idle memory: the time from exec to every worker listening, and the resident
//! sets of a server's processes at that moment, before any request (the load rows give them
//! under load). Each server is started [`WORKERS`]-strong, once per round, rounds
//! interleaved.
//!
//! "Listening" is the server's own listening line, which herd's examples, `hello --bare` and
//! Node's cluster print once every worker listens; nginx prints none, so for nginx it is the
//! first answer to `GET /`, polled every 2 ms (its master binds before it forks, so a worker
//! may still be starting then).

use std::time::Instant;

use super::procstat;
use super::report::Target;
use super::run::{self, Env, Kind};
use super::stats::{Spread, spread};

/// Workers per server in these rows.
pub(crate) const WORKERS: usize = 4;

/// One server's start-ups.
pub(crate) struct Startup {
    pub(crate) kind: Kind,
    pub(crate) label: String,
    /// Exec to listening, per round, in ms.
    pub(crate) ms: Vec<f64>,
    /// The primary's (or only process's) resident set at listening, per round, in KiB.
    pub(crate) primary_rss_kib: Vec<f64>,
    /// The largest worker's resident set at listening, per round, in KiB.
    pub(crate) worker_rss_kib: Vec<f64>,
    /// Worker processes seen at listening (the last round's).
    pub(crate) workers_seen: usize,
    /// Why a round failed, if one did.
    pub(crate) failures: Vec<String>,
}

/// The servers these rows start.
pub(crate) fn kinds(node: bool, nginx: bool) -> Vec<Kind> {
    let mut kinds = vec![
        Kind::Herd("rr".into()),
        Kind::Herd("reuseport".into()),
        Kind::Evloop("reuseport".into()),
        Kind::Bare,
    ];
    if nginx {
        kinds.push(Kind::Nginx);
    }
    if node {
        kinds.push(Kind::Node("rr"));
    }
    kinds
}

pub(crate) fn label(kind: &Kind) -> String {
    match kind {
        Kind::Herd(policy) => format!("herd {policy} (hello)"),
        Kind::Evloop(policy) => format!("herd-evloop {policy}"),
        Kind::Bare => "bare (hello --bare)".into(),
        Kind::Nginx => "nginx (first answer)".into(),
        Kind::Node(policy) => format!("node {policy}"),
        other => format!("{other:?}"),
    }
}

/// Starts and stops every kind `rounds` times.
pub(crate) fn measure(kinds: &[Kind], env: &Env, rounds: usize) -> Vec<Startup> {
    let mut out: Vec<Startup> = kinds
        .iter()
        .map(|kind| Startup {
            kind: kind.clone(),
            label: label(kind),
            ms: Vec::new(),
            primary_rss_kib: Vec::new(),
            worker_rss_kib: Vec::new(),
            workers_seen: 0,
            failures: Vec::new(),
        })
        .collect();
    for _ in 0..rounds {
        for row in &mut out {
            let began = Instant::now();
            let started = match run::start(&row.kind, WORKERS, env, &row.label) {
                Ok(started) => started,
                Err(message) => {
                    row.failures.push(message);
                    continue;
                }
            };
            let ms = began.elapsed().as_secs_f64() * 1e3;
            let pid = started.server.pid;
            let workers = procstat::children(pid);
            row.ms.push(ms);
            if let Some(kib) = procstat::rss_kib(pid) {
                row.primary_rss_kib.push(kib as f64);
            }
            if let Some(kib) = workers.iter().filter_map(|&p| procstat::rss_kib(p)).max() {
                row.worker_rss_kib.push(kib as f64);
            }
            row.workers_seen = workers.len();
            started.stop(&row.label);
        }
    }
    out
}

impl Startup {
    pub(crate) fn ms(&self) -> Option<Spread> {
        spread(self.ms.iter().copied())
    }

    pub(crate) fn primary_rss(&self) -> Option<Spread> {
        spread(self.primary_rss_kib.iter().copied())
    }

    pub(crate) fn worker_rss(&self) -> Option<Spread> {
        spread(self.worker_rss_kib.iter().copied())
    }
}

/// The start-up and memory targets, for herd's `hello` under each policy measured.
pub(crate) fn targets(rows: &[Startup]) -> Vec<Target> {
    let mut targets = Vec::new();
    for row in rows.iter().filter(|r| matches!(r.kind, Kind::Herd(_))) {
        let Kind::Herd(policy) = &row.kind else { continue };
        let rr = policy == "rr";
        let check = |m: Option<Spread>, ok: &dyn Fn(f64) -> bool| (m, m.map(|m| ok(m.median)));
        let (m, pass) = check(row.ms(), &|ms| ms <= 20.0);
        targets.push(Target {
            name: if rr {
                "start-up: herd rr, exec to 4 workers listening (ms)"
            } else {
                "start-up: herd reuseport, exec to 4 workers listening (ms)"
            },
            goal: "≤ 20 ms",
            measured: m,
            pass,
            note: row.failures.first().cloned().unwrap_or_default(),
        });
        let mib = |s: Option<Spread>| {
            s.map(|s| Spread {
                median: s.median / 1024.0,
                min: s.min / 1024.0,
                max: s.max / 1024.0,
            })
        };
        let (m, pass) = check(mib(row.primary_rss()), &|x| x <= 3.0);
        targets.push(Target {
            name: if rr {
                "idle RSS: herd rr primary (MiB)"
            } else {
                "idle RSS: herd reuseport primary (MiB)"
            },
            goal: "≤ 3 MiB",
            measured: m,
            pass,
            note: String::new(),
        });
        let (m, pass) = check(mib(row.worker_rss()), &|x| x <= 3.0);
        targets.push(Target {
            name: if rr {
                "idle RSS: herd rr largest worker (MiB)"
            } else {
                "idle RSS: herd reuseport largest worker (MiB)"
            },
            goal: "≤ 3 MiB",
            measured: m,
            pass,
            note: String::new(),
        });
    }
    targets
}

/// The markdown table.
pub(crate) fn table(rows: &[Startup]) -> String {
    let mut out = String::from(
        "| server | exec → listening ms median (min–max) | processes | primary RSS MiB | \
         largest worker RSS MiB | failed rounds |\n|---|--:|--:|--:|--:|--:|\n",
    );
    let ms = |x: f64| format!("{x:.1}");
    let mib = |x: f64| format!("{:.1}", x / 1024.0);
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            row.label,
            super::report::with_range(row.ms(), ms),
            1 + row.workers_seen,
            super::report::with_range(row.primary_rss(), mib),
            super::report::with_range(row.worker_rss(), mib),
            row.failures.len(),
        ));
    }
    out
}
