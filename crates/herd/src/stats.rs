//! A snapshot of a running cluster, [`Primary::stats`](crate::Primary::stats): per worker, per
//! listening handle, the hand-off latency and the fairness of the spread. Plain data, taken on
//! the primary's thread when asked for (nothing is sampled in the background), and
//! serde-serialisable (JSON for a person, postcard for a control socket).
//!
//! Units are in the field names: `_seconds` (a float, fractions of a second), `_bytes`, and
//! counts otherwise. Counters (`_total` in the Prometheus exposition) only grow for the life
//! of what they count: a worker's for the worker, a handle's for the handle, a place's for the
//! primary.
//!
//! ```no_run
//! # fn main() -> Result<(), herd::Error> {
//! let mut primary = herd::Cluster::new().workers(2).start()?;
//! # let _ = primary.next_event(Some(std::time::Duration::from_secs(1)))?;
//! let stats = primary.stats();
//! for w in &stats.workers {
//!     println!("worker {} pid {} up {:.0} s, {} connections", w.id, w.pid, w.uptime_seconds,
//!         w.connections_accepted);
//! }
//! if let Some(jain) = stats.fairness.jain {
//!     println!("Jain's fairness index {jain:.3}");
//! }
//! # Ok(()) }
//! ```

use serde::{Deserialize, Serialize};

use crate::{State, WorkerId};

/// How long a request to the metrics listener (`Cluster::metrics_listen`, feature `metrics`)
/// waits for the primary's loop to answer with a fresh snapshot: 500 ms. Past it `/livez` and
/// `/readyz` answer 503 and `/metrics` serves the last snapshot taken (or 503 if none was).
/// Short enough for Kubernetes' default probe timeout (1 s); a loop that turns answers within
/// microseconds.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// The whole cluster at one moment ([`Primary::stats`](crate::Primary::stats)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClusterStats {
    /// The primary's process id.
    pub primary_pid: u32,
    /// The scheduling policy, as `HERD_SCHED_POLICY` spells it (`rr`, `least-conn`, `none`,
    /// `reuseport`).
    pub policy: String,
    /// Seconds since the primary was created.
    pub uptime_seconds: f64,
    /// The primary's CPU time (user plus system, all its threads), in seconds, from
    /// `/proc/self/stat`; `None` where it cannot be read.
    pub primary_cpu_seconds: Option<f64>,
    /// The primary's resident set size in bytes (`VmRSS` of `/proc/self/status`).
    pub primary_rss_bytes: Option<u64>,
    /// A graceful stop (`disconnect_all`, SIGTERM, SIGINT) is under way.
    pub stopping: bool,
    /// Whether the cluster is ready to serve: at least one place, every place has a ready
    /// worker (see [`PlaceStats::ready`]) and no stop is under way. What `/readyz` answers.
    pub ready: bool,
    /// Every place of the cluster, ascending (a place is a worker's slot: a respawn or a
    /// rolling replacement takes its predecessor's place).
    pub places: Vec<PlaceStats>,
    /// Every worker the primary knows (those disconnecting and not yet exited included),
    /// ascending by id.
    pub workers: Vec<WorkerStats>,
    /// Every open listening handle (those a stop detached and still held included), by key.
    pub listeners: Vec<ListenerStats>,
    /// Accept-to-ack time of every connection handed off (`rr`, `least-conn`) over every
    /// handle; empty under `none` and `reuseport`, where the kernel hands connections out.
    pub handoff_latency: Histogram,
    /// How evenly connections spread over the workers.
    pub fairness: Fairness,
}

/// One place of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PlaceStats {
    /// The place's number: 0, 1, ….
    pub place: usize,
    /// The worker holding it now; during a rolling restart, the newest (the replacement).
    pub worker: Option<WorkerId>,
    /// Whether a worker of the place is ready to be sent connections (during a rolling
    /// restart, the predecessor until it disconnects): a herd worker once it listens
    /// (Node's `listening` state), a socket-activated worker once online (its `READY=1`, or
    /// its delay). Not while it disconnects, and never for a place with no worker (waiting
    /// for a respawn, halted). A cluster whose workers listen nowhere is never ready.
    pub ready: bool,
    /// Workers started into this place after its first: respawns after a death plus
    /// replacements of a rolling restart (pm2's restart count). Kept for the primary's life.
    pub restarts: u64,
    /// How the place's last worker to exit ended; `None` if none has.
    pub last_exit: Option<ExitInfo>,
    /// Seconds until a scheduled respawn of this place; `None` if none is scheduled.
    pub respawn_in_seconds: Option<f64>,
}

/// How a worker's process ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExitInfo {
    /// The exiting worker's id.
    pub worker: WorkerId,
    /// Its exit code, if it exited by itself.
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// It exited after a disconnect, by itself (Node's `exitedAfterDisconnect`).
    pub after_disconnect: bool,
    /// Seconds it had lived.
    pub uptime_seconds: f64,
    /// Seconds ago it exited.
    pub seconds_ago: f64,
}

/// One worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Its id.
    pub id: WorkerId,
    /// Its process id.
    pub pid: u32,
    /// Its place (`None` once it gave the place up, being removed).
    pub place: Option<usize>,
    /// Its state (Node's `worker.state`).
    pub state: State,
    /// A disconnect was started (Node's `exitedAfterDisconnect`).
    pub disconnecting: bool,
    /// Seconds since it was forked.
    pub uptime_seconds: f64,
    /// Seconds since it first listened (Node's `listening` event; for a socket-activated
    /// program, since it was ready): the time it has been taking connections. `None` before.
    pub listening_seconds: Option<f64>,
    /// Its place's [`restarts`](PlaceStats::restarts) (0 without a place).
    pub restarts: u64,
    /// Its place's [`last_exit`](PlaceStats::last_exit): how its predecessor ended.
    pub last_exit: Option<ExitInfo>,
    /// Hand-off policies (`rr`, `least-conn`): connections the primary handed to it, over
    /// every handle (one it refused and got again counts again). 0 under `none` and
    /// `reuseport`, where workers accept from the kernel and the primary sees nothing.
    pub connections_handed: u64,
    /// Hand-off policies: connections it acknowledged taking.
    pub connections_accepted: u64,
    /// Hand-off policies: connections it refused.
    pub connections_refused: u64,
    /// `least-conn`: connections it took that are still open, as it reported them. `None`
    /// under other policies (workers report closes only under `least-conn`).
    pub connections_open: Option<u64>,
    /// Application messages it sent the primary (`Event::Message`).
    pub messages_received: u64,
    /// Application messages the primary sent it ([`Primary::send`](crate::Primary::send)),
    /// counted once written to its channel.
    pub messages_sent: u64,
    /// Its open descriptors (entries of `/proc/PID/fd`); `None` where they cannot be read
    /// (another user's process without the rights, or it has exited).
    pub fds: Option<u64>,
    /// Its resident set size in bytes (`VmRSS` of `/proc/PID/status`).
    pub rss_bytes: Option<u64>,
    /// Its CPU time, user plus system, in seconds (`/proc/PID/stat`).
    pub cpu_seconds: Option<f64>,
}

/// One listening handle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ListenerStats {
    /// Its key, as Node prints it (`127.0.0.1:8080:4:undefined:0`).
    pub key: String,
    /// The bound address (the real port when port 0 was asked), as a spec (`tcp://…`).
    pub address: String,
    /// How it hands connections out: `rr`, `least-conn` (the primary accepts), `none` (one
    /// socket every worker accepts from), `reuseport` (a socket per place), `udp` (shared).
    pub policy: String,
    /// The workers holding it, ascending.
    pub workers: Vec<WorkerId>,
    /// A graceful stop detached it: it takes no new connection.
    pub stopped: bool,
    /// Hand-off policies: connections the primary accepted. `None` elsewhere.
    pub accepted: Option<u64>,
    /// Hand-off policies: connections the primary holds now, waiting for a worker or for its
    /// ack (0 elsewhere).
    pub held: u64,
    /// Connections waiting in the kernel's accept queue now (`TCP_INFO`, `tcp(7)`; summed over
    /// `reuseport`'s sockets); `None` where the kernel does not say (unix sockets, UDP).
    pub queued: Option<u64>,
    /// Hand-off policies: connections closed because every worker refused them.
    pub refused: u64,
    /// Hand-off policies: connections closed unserved by a graceful stop.
    pub closed_at_stop: u64,
    /// Hand-off policies: times accepting paused 50 ms because descriptors or memory ran out
    /// (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`).
    pub emfile_pauses: u64,
    /// Hand-off policies: accept-to-ack time of the connections workers took. `None`
    /// elsewhere.
    pub handoff_latency: Option<Histogram>,
}

/// A histogram of durations, in Prometheus' shape: cumulative buckets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Histogram {
    /// `(upper bound in seconds, observations at most that long)`, ascending, cumulative;
    /// the bounds are [`herd_registry::LATENCY_BOUNDS_SECONDS`] (50 µs to 5 s). The `+Inf`
    /// bucket is [`count`](Histogram::count).
    pub buckets: Vec<(f64, u64)>,
    /// How many observations.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_seconds: f64,
}

/// How evenly connections spread over the workers holding a place and not disconnecting.
/// Hand-off policies only: under `none` and `reuseport` the primary does not see connections,
/// and every figure is `None`.
///
/// Jain's index is taken over **rates**, not lifetime totals: each worker's
/// [`connections_accepted`](WorkerStats::connections_accepted) over its
/// [`listening_seconds`](WorkerStats::listening_seconds). Totals would call an even spread
/// uneven whenever workers differ in age: after a respawn or a SIGTTIN the newcomer has taken
/// fewer connections only because it has listened for less time (3 old workers with 100 each
/// and one 10 s old with 10, as many per second, read 0.80 by totals).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Fairness {
    /// How many workers were counted.
    pub workers: usize,
    /// Jain's fairness index, `(Σx)² / (n·Σx²)`, where `x` is a worker's connections per
    /// second since it first listened, over the `n` workers that have listened: 1 when every
    /// worker took as many per second, `1/n` when one took everything. `None` when no
    /// connection was taken yet.
    pub jain: Option<f64>,
    /// The most connections one worker took (a lifetime total).
    pub max: Option<u64>,
    /// The fewest connections one worker took (a lifetime total).
    pub min: Option<u64>,
}

impl Fairness {
    /// The figures over the workers' `(connections accepted, seconds since it first
    /// listened)`; a worker with no time listening yet counts in `workers`, `max` and `min`
    /// but not in `jain`.
    pub fn of(workers: &[(u64, f64)]) -> Fairness {
        let rates: Vec<f64> =
            workers.iter().filter(|(_, s)| *s > 0.0).map(|&(c, s)| c as f64 / s).collect();
        let sum: f64 = rates.iter().sum();
        let squares: f64 = rates.iter().map(|x| x * x).sum();
        Fairness {
            workers: workers.len(),
            jain: (squares > 0.0).then(|| sum * sum / (rates.len() as f64 * squares)),
            max: workers.iter().map(|&(c, _)| c).max(),
            min: workers.iter().map(|&(c, _)| c).min(),
        }
    }
}

impl Histogram {
    pub(crate) fn from_registry(h: &herd_registry::LatencyHistogram) -> Histogram {
        let mut cumulative = 0;
        let buckets = herd_registry::LATENCY_BOUNDS_SECONDS
            .iter()
            .zip(h.counts)
            .map(|(&bound, count)| {
                cumulative += count;
                (bound, cumulative)
            })
            .collect();
        Histogram { buckets, count: h.count(), sum_seconds: h.sum_nanos as f64 / 1e9 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_is_one_for_an_even_spread_and_one_over_n_for_a_single_taker() {
        let aged = |counts: &[u64]| counts.iter().map(|&c| (c, 2.0)).collect::<Vec<_>>();
        assert_eq!(Fairness::of(&aged(&[5, 5, 5, 5])).jain, Some(1.0));
        let one = Fairness::of(&aged(&[0, 0, 0, 8]));
        assert_eq!(one.jain, Some(0.25));
        assert_eq!((one.max, one.min, one.workers), (Some(8), Some(0), 4));
        assert_eq!(Fairness::of(&aged(&[0, 0])).jain, None);
        assert_eq!(Fairness::of(&[]).max, None);
    }

    #[test]
    fn jain_compares_rates_so_a_younger_worker_taking_its_share_is_even() {
        // Three workers of 100 s with 100 connections each; one of 10 s with 10: as many per
        // second. Totals would read (310)² / (4 · 30100) = 0.798.
        let f = Fairness::of(&[(100, 100.0), (100, 100.0), (100, 100.0), (10, 10.0)]);
        assert!((f.jain.unwrap() - 1.0).abs() < 1e-12, "{f:?}");
        assert_eq!((f.workers, f.max, f.min), (4, Some(100), Some(10)));
        // One that has not listened yet is no rate: left out of Jain's index only.
        let f = Fairness::of(&[(4, 2.0), (4, 2.0), (0, 0.0)]);
        assert_eq!((f.jain, f.workers, f.min), (Some(1.0), 3, Some(0)));
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_the_registry_bounds() {
        let mut h = herd_registry::LatencyHistogram::default();
        h.observe(std::time::Duration::from_micros(20));
        h.observe(std::time::Duration::from_millis(3));
        h.observe(std::time::Duration::from_secs(9));
        let h = Histogram::from_registry(&h);
        assert_eq!(h.count, 3);
        assert_eq!(h.buckets.len(), herd_registry::LATENCY_BOUNDS_SECONDS.len());
        assert_eq!(h.buckets[0], (0.000_05, 1));
        assert_eq!(h.buckets.iter().find(|(b, _)| *b == 0.005).unwrap().1, 2);
        assert_eq!(h.buckets.last().unwrap().1, 2, "9 s is only in +Inf");
        assert!((h.sum_seconds - 9.003_02).abs() < 1e-9);
    }
}
