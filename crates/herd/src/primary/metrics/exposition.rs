//! A [`ClusterStats`] in Prometheus' text format (0.0.4), written by the `prometheus-client`
//! crate's encoder (names, `# HELP`/`# TYPE`, label escaping, `_total` on counters, histogram
//! buckets), from the snapshot as it is: the metrics are constant values of one scrape
//! (`ConstCounter`, `ConstGauge`), since the counting is done by the primary and its registry.
//!
//! Names follow Prometheus' naming guide: `herd_` prefix, base units (`_seconds`, `_bytes`),
//! `_total` on counters; series are labelled `worker` (its id), `place` and `listener` (the
//! handle's key, as Node prints it).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::stats::{ClusterStats, Histogram};

/// The `Content-Type` of the text format.
pub(super) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type Labels = Vec<(&'static str, String)>;

/// The snapshot, rendered. `fresh`: the primary answered this scrape (`herd_primary_responsive`).
pub(super) fn render(stats: &ClusterStats, fresh: bool) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot { stats: stats.clone(), fresh }));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

#[derive(Debug)]
struct Snapshot {
    stats: ClusterStats,
    fresh: bool,
}

/// One metric family: a name, its help, its type, and its series.
struct Family<'e, 'a> {
    encoder: &'e mut DescriptorEncoder<'a>,
}

impl<'a> Family<'_, 'a> {
    fn gauge<V>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, V)>,
    ) -> Result<(), std::fmt::Error>
    where
        ConstGauge<V>: EncodeMetric,
    {
        self.series(
            name,
            help,
            MetricType::Gauge,
            series.into_iter().map(|(l, v)| (l, ConstGauge::new(v))),
        )
    }

    fn counter<V>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, V)>,
    ) -> Result<(), std::fmt::Error>
    where
        ConstCounter<V>: EncodeMetric,
    {
        self.series(
            name,
            help,
            MetricType::Counter,
            series.into_iter().map(|(l, v)| (l, ConstCounter::new(v))),
        )
    }

    fn series<M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        series: impl Iterator<Item = (Labels, M)>,
    ) -> Result<(), std::fmt::Error> {
        let mut series = series.peekable();
        if series.peek().is_none() {
            return Ok(());
        }
        let mut metric = self.encoder.encode_descriptor(name, help, None, kind)?;
        for (labels, value) in series {
            value.encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn histogram<'h>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, &'h Histogram)>,
    ) -> Result<(), std::fmt::Error> {
        let series: Vec<(Labels, &Histogram)> = series.into_iter().collect();
        if series.is_empty() {
            return Ok(());
        }
        let mut metric = self.encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, h) in series {
            // The encoder takes per-bucket counts and accumulates them itself.
            let mut below = 0;
            let buckets: Vec<(f64, u64)> = h
                .buckets
                .iter()
                .map(|&(bound, cumulative)| {
                    let own = cumulative - below;
                    below = cumulative;
                    (bound, own)
                })
                .collect();
            metric.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                h.sum_seconds,
                h.count,
                &buckets,
                None,
            )?;
        }
        Ok(())
    }
}

fn none() -> Labels {
    Vec::new()
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.stats;
        let mut f = Family { encoder: &mut encoder };
        let flag = |b: bool| i64::from(b);

        // The cluster.
        f.gauge(
            "herd_primary_responsive",
            "1 if the primary's loop answered this scrape within 500 ms (0: the figures are \
             from the last scrape it answered)",
            [(none(), flag(self.fresh))],
        )?;
        f.gauge(
            "herd_cluster_ready",
            "1 while every place has a ready worker and no stop is under way (/readyz)",
            [(none(), flag(s.ready))],
        )?;
        f.gauge(
            "herd_cluster_stopping",
            "1 while a graceful stop is under way",
            [(none(), flag(s.stopping))],
        )?;
        f.gauge(
            "herd_primary_uptime_seconds",
            "Seconds since the primary started",
            [(none(), s.uptime_seconds)],
        )?;
        f.counter(
            "herd_primary_cpu_seconds",
            "CPU time of the primary process (user and system, all threads) in seconds",
            s.primary_cpu_seconds.map(|v| (none(), v)),
        )?;
        f.gauge(
            "herd_primary_resident_memory_bytes",
            "Resident set size of the primary process in bytes",
            s.primary_rss_bytes.map(|v| (none(), v as i64)),
        )?;
        f.gauge(
            "herd_places",
            "Places (worker slots) in the cluster",
            [(none(), s.places.len() as i64)],
        )?;

        // Places.
        let place = |p: usize| vec![("place", p.to_string())];
        f.counter(
            "herd_place_restarts",
            "Workers started into the place to replace another (respawns and rolling replacements)",
            s.places.iter().map(|p| (place(p.place), p.restarts)),
        )?;
        f.gauge(
            "herd_place_ready",
            "1 if the place's worker is ready to serve",
            s.places.iter().map(|p| (place(p.place), flag(p.ready))),
        )?;
        f.gauge(
            "herd_place_last_exit_code",
            "Exit code of the place's last worker to exit (128 + the signal if one killed it)",
            s.places.iter().filter_map(|p| {
                let e = p.last_exit.as_ref()?;
                Some((place(p.place), i64::from(e.code.or(e.signal.map(|n| 128 + n))?)))
            }),
        )?;

        // Workers.
        let worker = |w: &crate::stats::WorkerStats| {
            let mut labels = vec![("worker", w.id.to_string())];
            if let Some(p) = w.place {
                labels.push(("place", p.to_string()));
            }
            labels
        };
        let workers = &s.workers;
        // Under `none` and `reuseport` the kernel hands connections out and the primary sees
        // none: no series rather than zeros that look like an idle cluster.
        let handoff = s.policy.parse::<crate::Policy>().is_ok_and(|p| p.is_handoff());
        let counted = if handoff { workers.as_slice() } else { &[] };
        f.gauge(
            "herd_worker_info",
            "Always 1: a worker, with its process id and state (Node's worker.state) as labels",
            workers.iter().map(|w| {
                let mut labels = worker(w);
                labels.push(("pid", w.pid.to_string()));
                let state = serde_plain_state(w.state);
                labels.push(("state", state.into()));
                (labels, 1i64)
            }),
        )?;
        f.gauge(
            "herd_worker_uptime_seconds",
            "Seconds since the worker was forked",
            workers.iter().map(|w| (worker(w), w.uptime_seconds)),
        )?;
        f.counter(
            "herd_worker_connections_handed",
            "Connections the primary handed to the worker (rr, least-conn)",
            counted.iter().map(|w| (worker(w), w.connections_handed)),
        )?;
        f.counter(
            "herd_worker_connections_accepted",
            "Connections the worker acknowledged taking (rr, least-conn)",
            counted.iter().map(|w| (worker(w), w.connections_accepted)),
        )?;
        f.counter(
            "herd_worker_connections_refused",
            "Connections the worker refused (rr, least-conn)",
            counted.iter().map(|w| (worker(w), w.connections_refused)),
        )?;
        f.gauge(
            "herd_worker_connections_open",
            "Connections the worker took that are still open (least-conn)",
            workers.iter().filter_map(|w| Some((worker(w), w.connections_open? as i64))),
        )?;
        f.counter(
            "herd_worker_messages_received",
            "Application messages the worker sent the primary",
            workers.iter().map(|w| (worker(w), w.messages_received)),
        )?;
        f.counter(
            "herd_worker_messages_sent",
            "Application messages the primary sent the worker",
            workers.iter().map(|w| (worker(w), w.messages_sent)),
        )?;
        f.gauge(
            "herd_worker_open_fds",
            "Open descriptors of the worker process",
            workers.iter().filter_map(|w| Some((worker(w), w.fds? as i64))),
        )?;
        f.gauge(
            "herd_worker_resident_memory_bytes",
            "Resident set size of the worker process in bytes",
            workers.iter().filter_map(|w| Some((worker(w), w.rss_bytes? as i64))),
        )?;
        f.counter(
            "herd_worker_cpu_seconds",
            "CPU time of the worker process (user and system) in seconds",
            workers.iter().filter_map(|w| Some((worker(w), w.cpu_seconds?))),
        )?;

        // Listeners.
        let listener = |l: &crate::stats::ListenerStats| {
            vec![("listener", l.key.clone()), ("policy", l.policy.clone())]
        };
        let ls = &s.listeners;
        // The primary's own counters exist only on hand-off handles (`accepted` is `Some`).
        let handed: Vec<_> = ls.iter().filter(|l| l.accepted.is_some()).collect();
        f.counter(
            "herd_listener_connections_accepted",
            "Connections the primary accepted on the listener (rr, least-conn)",
            ls.iter().filter_map(|l| Some((listener(l), l.accepted?))),
        )?;
        f.gauge(
            "herd_listener_connections_held",
            "Connections the primary holds, waiting for a worker or its ack",
            handed.iter().map(|l| (listener(l), l.held as i64)),
        )?;
        f.gauge(
            "herd_listener_queued_connections",
            "Connections waiting in the kernel's accept queue (TCP_INFO)",
            ls.iter().filter_map(|l| Some((listener(l), l.queued? as i64))),
        )?;
        f.counter(
            "herd_listener_connections_refused",
            "Connections closed because every worker refused them",
            handed.iter().map(|l| (listener(l), l.refused)),
        )?;
        f.counter(
            "herd_listener_connections_closed_at_stop",
            "Connections closed unserved by a graceful stop",
            handed.iter().map(|l| (listener(l), l.closed_at_stop)),
        )?;
        f.counter(
            "herd_listener_emfile_pauses",
            "Times accepting paused for 50 ms because descriptors or memory ran out",
            handed.iter().map(|l| (listener(l), l.emfile_pauses)),
        )?;
        f.histogram(
            "herd_listener_handoff_latency_seconds",
            "Time from the primary's accept to the ack of the worker that took the connection",
            ls.iter().filter_map(|l| Some((listener(l), l.handoff_latency.as_ref()?))),
        )?;

        // Fairness.
        f.gauge(
            "herd_fairness_jain_index",
            "Jain's fairness index over the workers' connection rates (connections accepted per \
             second since each first listened; 1: even, 1/n: one takes all)",
            s.fairness.jain.map(|j| (none(), j)),
        )?;
        f.gauge(
            "herd_fairness_connections_max",
            "The most connections one worker took",
            s.fairness.max.map(|v| (none(), v as i64)),
        )?;
        f.gauge(
            "herd_fairness_connections_min",
            "The fewest connections one worker took",
            s.fairness.min.map(|v| (none(), v as i64)),
        )?;
        Ok(())
    }
}

/// A state as Node spells it (`online`, `listening`), as serde writes it.
fn serde_plain_state(state: crate::State) -> &'static str {
    match state {
        crate::State::Forked => "forked",
        crate::State::Online => "online",
        crate::State::Listening => "listening",
        crate::State::Disconnected => "disconnected",
        crate::State::Dead => "dead",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{ExitInfo, Fairness, ListenerStats, PlaceStats, WorkerStats};

    fn sample() -> ClusterStats {
        let mut latency = herd_registry::LatencyHistogram::default();
        latency.observe(std::time::Duration::from_micros(70));
        latency.observe(std::time::Duration::from_millis(2));
        let latency = Histogram::from_registry(&latency);
        let worker = |id: u32, place: usize, accepted: u64| WorkerStats {
            id,
            pid: 1000 + id,
            place: Some(place),
            state: crate::State::Listening,
            disconnecting: false,
            uptime_seconds: 1.5,
            listening_seconds: Some(1.25),
            restarts: 0,
            last_exit: None,
            connections_handed: accepted,
            connections_accepted: accepted,
            connections_refused: 0,
            connections_open: None,
            messages_received: 0,
            messages_sent: 0,
            fds: Some(9),
            rss_bytes: Some(1 << 20),
            cpu_seconds: Some(0.25),
        };
        ClusterStats {
            primary_pid: 1,
            policy: "rr".into(),
            uptime_seconds: 3.0,
            primary_cpu_seconds: Some(0.5),
            primary_rss_bytes: Some(4 << 20),
            stopping: false,
            ready: true,
            places: vec![PlaceStats {
                place: 0,
                worker: Some(3),
                ready: true,
                restarts: 2,
                last_exit: Some(ExitInfo {
                    worker: 1,
                    code: None,
                    signal: Some(9),
                    after_disconnect: false,
                    uptime_seconds: 1.0,
                    seconds_ago: 0.5,
                }),
                respawn_in_seconds: None,
            }],
            workers: vec![worker(3, 0, 5), worker(2, 1, 3)],
            listeners: vec![ListenerStats {
                key: "127.0.0.1:8080:4:undefined:0".into(),
                address: "tcp://127.0.0.1:8080".into(),
                policy: "rr".into(),
                workers: vec![2, 3],
                stopped: false,
                accepted: Some(8),
                held: 0,
                queued: Some(0),
                refused: 0,
                closed_at_stop: 0,
                emfile_pauses: 0,
                handoff_latency: Some(latency.clone()),
            }],
            handoff_latency: latency,
            fairness: Fairness::of(&[(5, 1.0), (3, 1.0)]),
        }
    }

    #[test]
    fn the_text_parses_and_carries_every_family_with_help_and_type() {
        let text = render(&sample(), true).unwrap();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect(&text);
        let value = |name: &str, label: (&str, &str)| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
                .map(|s| s.value.clone())
        };
        use prometheus_parse::Value;
        assert_eq!(
            value("herd_worker_connections_accepted_total", ("worker", "3")),
            Some(Value::Counter(5.0)),
            "{text}"
        );
        assert_eq!(
            value("herd_place_restarts_total", ("place", "0")),
            Some(Value::Counter(2.0)),
            "{text}"
        );
        assert_eq!(value("herd_place_last_exit_code", ("place", "0")), Some(Value::Gauge(137.0)));
        let Some(Value::Histogram(buckets)) = value(
            "herd_listener_handoff_latency_seconds",
            ("listener", "127.0.0.1:8080:4:undefined:0"),
        ) else {
            panic!("no histogram: {text}")
        };
        let at = |le: f64| buckets.iter().find(|b| b.less_than == le).map(|b| b.count);
        assert_eq!(
            (at(0.000_05), at(0.000_1), at(0.005), at(f64::INFINITY)),
            (Some(0.0), Some(1.0), Some(2.0), Some(2.0)),
            "{text}"
        );
        for family in
            ["herd_worker_uptime_seconds", "herd_fairness_jain_index", "herd_cluster_ready"]
        {
            assert!(text.contains(&format!("# HELP {family} ")), "{family}: {text}");
            assert!(text.contains(&format!("# TYPE {family} gauge")), "{family}: {text}");
        }
        assert!(text.contains("# TYPE herd_worker_cpu_seconds_total counter"), "{text}");
        assert!(text.contains("# TYPE herd_listener_handoff_latency_seconds histogram"), "{text}");
        assert_eq!(value("herd_fairness_jain_index", ("", "")), None);
        let jain = scrape.samples.iter().find(|s| s.metric == "herd_fairness_jain_index").unwrap();
        assert_eq!(jain.value, Value::Gauge(64.0 / 68.0));
    }
}
