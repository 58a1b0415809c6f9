//! What the registry counts, for the primary's snapshot (`herd::Primary::stats`): per handle
//! and, on hand-off handles, per worker. Plain counters, kept under the registry's one lock
//! that the hand-off path holds anyway: nothing is added to that path but increments, a clock
//! read per accept and per ack (the hand-off latency), and one hash-map entry per connection
//! the primary holds.

use std::time::Duration;

use herd_sched::WorkerId;

use crate::HandoffStats;

/// The upper bounds of the hand-off latency histogram's buckets, in seconds: 50 µs to 2.5 s in
/// 1-2.5-5 steps (Prometheus' own default buckets start at 5 ms, too coarse for a hand-off
/// that takes tens of microseconds on an idle host). A last bucket (`+Inf`) takes the rest.
pub const LATENCY_BOUNDS_SECONDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// A latency histogram with the fixed buckets [`LATENCY_BOUNDS_SECONDS`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Observations per bucket, not cumulative: `counts[i]` for those at most
    /// `LATENCY_BOUNDS_SECONDS[i]` and above the bound before; the last one for those above
    /// every bound.
    pub counts: [u64; LATENCY_BOUNDS_SECONDS.len() + 1],
    /// The sum of every observation, in nanoseconds.
    pub sum_nanos: u64,
}

impl LatencyHistogram {
    /// Counts one observation.
    pub fn observe(&mut self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let bucket = LATENCY_BOUNDS_SECONDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BOUNDS_SECONDS.len());
        self.counts[bucket] += 1;
        self.sum_nanos = self.sum_nanos.saturating_add(latency.as_nanos() as u64);
    }

    /// How many observations there were.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another histogram's observations to this one.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.sum_nanos = self.sum_nanos.saturating_add(other.sum_nanos);
    }
}

/// One worker's counters on one hand-off handle (`rr`, `least-conn`); kept from its first
/// grant there until the worker leaves the registry ([`Registry::remove_worker`]), so a worker
/// that listens again keeps counting.
///
/// [`Registry::remove_worker`]: crate::Registry::remove_worker
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerCounts {
    /// Connections handed to the worker (assigned to it and queued for its channel; a
    /// connection it refused and that went to it again counts again).
    pub handed: u64,
    /// Connections the worker acknowledged taking.
    pub accepted: u64,
    /// Connections the worker refused (they went to another worker, or were closed).
    pub refused: u64,
    /// Connections the worker deferred (their descriptor was lost on the way in).
    pub deferred: u64,
    /// Connections it took that are still open, as it reported them (`least-conn` only: under
    /// `rr` workers do not report closes, and this is 0).
    pub open: u64,
}

impl WorkerCounts {
    /// Adds another handle's counters for the same worker.
    pub fn merge(&mut self, other: &WorkerCounts) {
        self.handed += other.handed;
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.deferred += other.deferred;
        self.open += other.open;
    }
}

/// How a handle serves its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleKind {
    /// One listening socket every worker accepts from (`none`, unix sockets under
    /// `reuseport`, inherited descriptors).
    Shared,
    /// A UDP socket, shared by every worker.
    Datagram,
    /// One `SO_REUSEPORT` socket per worker place (`reuseport`).
    ReusePort,
    /// The primary accepts and hands connections to workers (`rr`, `least-conn`).
    Handoff,
}

/// What the registry tells about one handle ([`Registry::handle_stats`]).
///
/// [`Registry::handle_stats`]: crate::Registry::handle_stats
#[derive(Clone, Debug, PartialEq)]
pub struct HandleStats {
    /// Its key, as Node prints it.
    pub key: String,
    /// The bound address (the real port when port 0 was asked).
    pub address: String,
    /// How it serves.
    pub kind: HandleKind,
    /// The workers holding it, ascending.
    pub workers: Vec<WorkerId>,
    /// Detached from its key by a graceful stop: it takes no new connection.
    pub stopped: bool,
    /// Connections waiting in the kernel's accept queue now (`TCP_INFO`'s `tcpi_unacked` on a
    /// listening TCP socket, `tcp(7)`; summed over the `reuseport` slots); `None` where the
    /// kernel does not say (unix sockets, UDP, a socket shut down by a stop).
    pub queued: Option<u64>,
    /// Hand-off handles only: the handle's counters.
    pub handoff: Option<HandoffStats>,
    /// Hand-off handles only: connections the primary holds now (pending or in flight).
    pub held: u64,
    /// Hand-off handles only: time from the primary's accept to the worker's ack of a
    /// connection it took.
    pub latency: Option<LatencyHistogram>,
    /// Hand-off handles only: each worker's counters, by worker id.
    pub per_worker: Vec<(WorkerId, WorkerCounts)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let mut h = LatencyHistogram::default();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(51));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.counts[0], 2);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[LATENCY_BOUNDS_SECONDS.len()], 1);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_nanos, 10_000 + 50_000 + 51_000 + 60_000_000_000);
        let mut twice = h.clone();
        twice.merge(&h);
        assert_eq!(twice.count(), 8);
    }
}
