//! [`Primary::stats`]: the snapshot of the cluster, gathered from the primary's own records,
//! the registry's counters and `/proc`.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use herd_registry::HandleKind;
use herd_sched::Policy;

use super::{Primary, State};
use crate::WorkerId;
use crate::stats::{
    ClusterStats, ExitInfo, Fairness, Histogram, ListenerStats, PlaceStats, WorkerStats,
};
use crate::sys;

/// What the primary remembers of a place across its workers.
#[derive(Debug, Default)]
pub(super) struct PlaceHistory {
    restarts: u64,
    last_exit: Option<LastExit>,
}

#[derive(Debug)]
struct LastExit {
    worker: WorkerId,
    status: ExitStatus,
    after_disconnect: bool,
    uptime: Duration,
    at: Instant,
}

impl LastExit {
    fn info(&self, now: Instant) -> ExitInfo {
        use std::os::unix::process::ExitStatusExt;
        ExitInfo {
            worker: self.worker,
            code: self.status.code(),
            signal: self.status.signal(),
            after_disconnect: self.after_disconnect,
            uptime_seconds: self.uptime.as_secs_f64(),
            seconds_ago: now.saturating_duration_since(self.at).as_secs_f64(),
        }
    }
}

impl Primary {
    /// A snapshot of the cluster now: every place, worker and listening handle, the
    /// hand-off latency and the fairness of the spread (see [`crate::stats`] for every field
    /// and its unit).
    ///
    /// It costs the primary's thread a brief hold of the registry's lock (the hand-off thread
    /// waits that long: a copy of the counters and one `TCP_INFO` call per TCP listening
    /// socket) and three reads of `/proc` per worker; nothing is sampled between calls, so
    /// calling it now and then costs nothing in between.
    pub fn stats(&self) -> ClusterStats {
        let now = Instant::now();
        let handles = self.registry.read().handle_stats();
        let policy_name = self.policy.to_string();
        let least_conn = self.policy == Policy::LeastConnections;

        let mut latency_total = herd_registry::LatencyHistogram::default();
        let mut per_worker: std::collections::BTreeMap<WorkerId, herd_registry::WorkerCounts> =
            std::collections::BTreeMap::new();
        let listeners: Vec<ListenerStats> = handles
            .iter()
            .map(|h| {
                if let Some(latency) = &h.latency {
                    latency_total.merge(latency);
                }
                for (worker, counts) in &h.per_worker {
                    per_worker.entry(*worker).or_default().merge(counts);
                }
                let counters = h.handoff.unwrap_or_default();
                ListenerStats {
                    key: h.key.clone(),
                    address: h.address.clone(),
                    policy: match h.kind {
                        HandleKind::Handoff => policy_name.clone(),
                        HandleKind::Shared => "none".into(),
                        HandleKind::ReusePort => "reuseport".into(),
                        HandleKind::Datagram => "udp".into(),
                    },
                    workers: h.workers.clone(),
                    stopped: h.stopped,
                    accepted: h.handoff.map(|s| s.accepted),
                    held: h.held,
                    queued: h.queued,
                    refused: counters.refused,
                    closed_at_stop: counters.closed_at_stop,
                    emfile_pauses: counters.exhausted,
                    handoff_latency: h.latency.as_ref().map(Histogram::from_registry),
                }
            })
            .collect();

        let place_stats = |place: Option<usize>| {
            place
                .and_then(|p| self.place_history.get(&p))
                .map_or((0, None), |h| (h.restarts, h.last_exit.as_ref().map(|e| e.info(now))))
        };
        let workers: Vec<WorkerStats> = self
            .workers
            .values()
            .map(|slot| {
                let counts = per_worker.get(&slot.id).copied().unwrap_or_default();
                let (restarts, last_exit) = place_stats(slot.place);
                let alive = slot.status.is_none();
                WorkerStats {
                    id: slot.id,
                    pid: slot.pid,
                    place: slot.place,
                    state: slot.state,
                    disconnecting: slot.after_disconnect,
                    uptime_seconds: now.saturating_duration_since(slot.started).as_secs_f64(),
                    listening_seconds: slot
                        .listening_since
                        .map(|at| now.saturating_duration_since(at).as_secs_f64()),
                    restarts,
                    last_exit,
                    connections_handed: counts.handed,
                    connections_accepted: counts.accepted,
                    connections_refused: counts.refused,
                    connections_open: least_conn.then_some(counts.open),
                    messages_received: slot.messages_received,
                    messages_sent: slot.messages_sent,
                    fds: alive.then(|| sys::open_fds(slot.pid)).flatten(),
                    rss_bytes: alive.then(|| sys::rss_bytes(slot.pid)).flatten(),
                    cpu_seconds: alive.then(|| sys::cpu_seconds(slot.pid)).flatten(),
                }
            })
            .collect();

        let places: Vec<PlaceStats> = (0..self.places.len())
            .map(|place| {
                let (restarts, last_exit) = place_stats(Some(place));
                PlaceStats {
                    place,
                    worker: self.places[place],
                    ready: self.place_ready(place),
                    restarts,
                    last_exit,
                    respawn_in_seconds: self
                        .respawns
                        .iter()
                        .filter(|(p, _)| *p == place)
                        .map(|(_, at)| at.saturating_duration_since(now).as_secs_f64())
                        .reduce(f64::min),
                }
            })
            .collect();

        let fairness = if self.policy.is_handoff() {
            let counted: Vec<(u64, f64)> = workers
                .iter()
                .filter(|w| w.place.is_some() && !w.disconnecting && w.state != State::Dead)
                .map(|w| (w.connections_accepted, w.listening_seconds.unwrap_or(0.0)))
                .collect();
            Fairness::of(&counted)
        } else {
            Fairness::default()
        };

        ClusterStats {
            primary_pid: std::process::id(),
            policy: policy_name,
            uptime_seconds: now.saturating_duration_since(self.created).as_secs_f64(),
            primary_cpu_seconds: sys::cpu_seconds(0),
            primary_rss_bytes: sys::rss_bytes(0),
            stopping: self.stopping,
            ready: !self.stopping && !places.is_empty() && places.iter().all(|p| p.ready),
            places,
            workers,
            listeners,
            handoff_latency: Histogram::from_registry(&latency_total),
            fairness,
        }
    }

    /// Whether a worker of `place` is ready to serve (see [`PlaceStats::ready`]): during a
    /// rolling restart the predecessor serves until its replacement is ready, so the place
    /// stays ready throughout.
    fn place_ready(&self, place: usize) -> bool {
        self.workers.values().any(|slot| {
            slot.place == Some(place)
                && !slot.after_disconnect
                && match slot.state {
                    State::Listening => true,
                    // Readiness is for whoever sends connections: a herd worker is ready once
                    // it listens (Node's `listening`); a socket-activated one once online,
                    // since its readiness (`READY=1`, or the delay) is what made it so.
                    State::Online => slot.activated,
                    _ => false,
                }
        })
    }

    /// A worker was started into `place` to replace another (a respawn, a rolling restart).
    pub(super) fn count_restart(&mut self, place: usize) {
        self.place_history.entry(place).or_default().restarts += 1;
    }

    /// A worker of `place` exited.
    pub(super) fn record_exit(
        &mut self,
        place: Option<usize>,
        worker: WorkerId,
        status: ExitStatus,
        after_disconnect: bool,
        uptime: Duration,
    ) {
        let Some(place) = place else { return };
        let exit = LastExit { worker, status, after_disconnect, uptime, at: Instant::now() };
        self.place_history.entry(place).or_default().last_exit = Some(exit);
    }
}
