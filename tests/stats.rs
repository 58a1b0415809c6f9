//! `Primary::stats` and the metrics listener (`Cluster::metrics_listen`) against a real
//! cluster of `cluster-worker` fixtures: the counters match what the clients saw, the text
//! parses with a Prometheus parser, a restart counts, and the probes answer as documented.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use herd::{Event, Signal, WorkerId};
use herd_tests::cluster::{TestCluster, fixture_settings, respawning, serving};
use herd_tests::http::{self, Response};

const WORKER: &str = env!("CARGO_BIN_EXE_cluster-worker");

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// `GET path` on the metrics listener while the primary's loop runs.
#[track_caller]
fn get(c: &mut TestCluster, path: &str) -> Response {
    let address = c.primary.metrics_address().expect("a metrics listener").to_string();
    let path = path.to_owned();
    c.run_client(&format!("GET {path}"), move || http::get(&address, &path))
}

/// The scrape, parsed by a Prometheus text parser.
#[track_caller]
fn scrape(c: &mut TestCluster) -> (prometheus_parse::Scrape, String) {
    let response = get(c, "/metrics");
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response.header("content-type").is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{response:?}"
    );
    let lines = response.body.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines)
        .unwrap_or_else(|e| panic!("unparsable: {e}\n{}", response.body));
    (parsed, response.body)
}

/// The value of `metric` in the series whose `label` is `value`.
fn sample(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    label: &str,
    value: &str,
) -> Option<f64> {
    scrape.samples.iter().find(|s| s.metric == metric && s.labels.get(label) == Some(value)).map(
        |s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        },
    )
}

/// Jain's index over these rates, computed here independently of the library.
fn jain(rates: &[f64]) -> f64 {
    let sum: f64 = rates.iter().sum();
    let squares: f64 = rates.iter().map(|r| r.powi(2)).sum();
    sum * sum / (rates.len() as f64 * squares)
}

/// `K` requests over `N` workers under `rr`: how many each worker answered, by the
/// responses (`worker <id> pid <pid>`).
fn spread(
    c: &mut TestCluster,
    ids: &[WorkerId],
    address: &str,
    k: usize,
) -> BTreeMap<WorkerId, u64> {
    let mut answered: BTreeMap<WorkerId, u64> = ids.iter().map(|&id| (id, 0)).collect();
    for _ in 0..k {
        let text = c.fetch(address);
        let id: WorkerId = text
            .split_whitespace()
            .nth(1)
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("not a greeting: {text:?}"));
        *answered.get_mut(&id).unwrap_or_else(|| panic!("unknown worker {id}")) += 1;
    }
    answered
}

/// The acks travel on the hand-off channels, read by the registry's thread: a client can have
/// its answer before the primary counted the ack. Waits (with a deadline) for the count.
fn wait_counted(c: &mut TestCluster, k: u64) {
    c.pump_until(&format!("{k} connections counted"), |c| {
        c.primary.stats().workers.iter().map(|w| w.connections_accepted).sum::<u64>() >= k
    });
}

#[test]
fn per_worker_counters_sum_to_the_requests_and_jain_matches_the_responses() {
    const N: usize = 3;
    const K: usize = 31;
    let (mut c, ids, address) = serving(fixture_settings(WORKER, "rr"), N);
    let answered = spread(&mut c, &ids, &address, K);
    wait_counted(&mut c, K as u64);
    let stats = c.primary.stats();

    let counted: BTreeMap<WorkerId, u64> =
        stats.workers.iter().map(|w| (w.id, w.connections_accepted)).collect();
    assert_eq!(counted, answered, "per-worker counters against the responses");
    assert_eq!(counted.values().sum::<u64>(), K as u64);
    for w in &stats.workers {
        assert!(w.connections_handed >= w.connections_accepted, "{w:?}");
        assert_eq!(w.connections_refused, 0, "{w:?}");
        assert_eq!(w.connections_open, None, "rr: workers do not report closes: {w:?}");
        assert!(w.rss_bytes.is_some_and(|b| b > 0), "{w:?}");
        assert!(w.fds.is_some_and(|n| n >= 3), "{w:?}");
        assert!(w.cpu_seconds.is_some(), "{w:?}");
        assert_eq!(w.state, herd::State::Listening, "{w:?}");
    }
    let counts: Vec<u64> = answered.values().copied().collect();
    // Jain's index is over rates: the responses each worker gave per second it has listened
    // (the snapshot's own clock, so the two agree to rounding).
    let rates: Vec<f64> = stats
        .workers
        .iter()
        .map(|w| {
            let listening = w.listening_seconds.unwrap_or_else(|| panic!("never listened: {w:?}"));
            assert!(listening > 0.0 && listening <= w.uptime_seconds, "{w:?}");
            answered[&w.id] as f64 / listening
        })
        .collect();
    let expected = jain(&rates);
    let figure = stats.fairness.jain.expect("a Jain figure");
    assert!((figure - expected).abs() < 1e-12, "Jain {figure} against {expected} from {rates:?}");
    assert_eq!(stats.fairness.max, counts.iter().copied().max());
    assert_eq!(stats.fairness.min, counts.iter().copied().min());
    assert_eq!(stats.fairness.workers, N);

    let [listener] = stats.listeners.as_slice() else { panic!("{:?}", stats.listeners) };
    assert_eq!(listener.accepted, Some(K as u64), "{listener:?}");
    assert_eq!(listener.policy, "rr");
    assert_eq!(listener.queued, Some(0), "nothing waits in the kernel now: {listener:?}");
    let latency = listener.handoff_latency.as_ref().expect("a hand-off latency histogram");
    assert_eq!(latency.count, K as u64, "{latency:?}");
    assert!(latency.sum_seconds > 0.0, "{latency:?}");
    assert_eq!(stats.handoff_latency.count, K as u64);
    assert!(stats.ready && !stats.stopping, "{stats:?}");
    assert_eq!(stats.places.len(), N);
    // Application messages each way: one command, one answer.
    let answer = c.command(ids[0], "echo hi", "echo");
    assert_eq!(answer, "echo hi");
    let stats = c.primary.stats();
    let w = stats.workers.iter().find(|w| w.id == ids[0]).unwrap();
    assert_eq!((w.messages_sent, w.messages_received), (1, 1), "{w:?}");
    // The snapshot travels as data: a serde round trip through postcard.
    let bytes = postcard::to_stdvec(&stats).unwrap();
    assert_eq!(postcard::from_bytes::<herd::stats::ClusterStats>(&bytes).unwrap(), stats);
}

#[test]
fn the_metrics_endpoint_parses_and_carries_the_per_worker_series() {
    const N: usize = 2;
    const K: usize = 10;
    let settings = fixture_settings(WORKER, "rr").metrics_listen(loopback());
    let (mut c, ids, address) = serving(settings, N);
    let answered = spread(&mut c, &ids, &address, K);
    wait_counted(&mut c, K as u64);
    let (scrape, text) = scrape(&mut c);
    for &id in &ids {
        let id_label = id.to_string();
        let accepted =
            sample(&scrape, "herd_worker_connections_accepted_total", "worker", &id_label);
        assert_eq!(accepted, Some(answered[&id] as f64), "worker {id}:\n{text}");
        let uptime = sample(&scrape, "herd_worker_uptime_seconds", "worker", &id_label);
        assert!(uptime.is_some_and(|u| u > 0.0), "worker {id}:\n{text}");
        let rss = sample(&scrape, "herd_worker_resident_memory_bytes", "worker", &id_label);
        assert!(rss.is_some_and(|b| b > 0.0), "worker {id}:\n{text}");
    }
    for family in ["herd_worker_connections_accepted_total", "herd_place_restarts_total"] {
        let stem = family.trim_end_matches("_total");
        assert!(text.contains(&format!("# TYPE {stem}_total counter")), "{family}:\n{text}");
        assert!(text.contains(&format!("# HELP {stem}_total ")), "{family}:\n{text}");
    }
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "herd_listener_handoff_latency_seconds")
        .unwrap_or_else(|| panic!("no latency histogram:\n{text}"));
    let prometheus_parse::Value::Histogram(buckets) = &histogram.value else {
        panic!("{histogram:?}")
    };
    let all = buckets.iter().find(|b| b.less_than == f64::INFINITY).map(|b| b.count);
    assert_eq!(all, Some(K as f64), "{text}");
    let ready = scrape.samples.iter().find(|s| s.metric == "herd_cluster_ready").map(|s| &s.value);
    assert_eq!(ready, Some(&prometheus_parse::Value::Gauge(1.0)), "{text}");
}

#[test]
fn a_restart_increments_the_places_restart_counter() {
    let settings = respawning(
        fixture_settings(WORKER, "rr").metrics_listen(loopback()),
        Duration::from_millis(10),
        Duration::from_millis(100),
        5,
    );
    let (mut c, ids, _address) = serving(settings, 2);
    let place = c.primary.worker(ids[0]).and_then(|w| w.place).expect("a place");
    let (before, text) = scrape(&mut c);
    let restarts = |s: &prometheus_parse::Scrape| {
        sample(s, "herd_place_restarts_total", "place", &place.to_string())
    };
    assert_eq!(restarts(&before), Some(0.0), "{text}");

    c.primary.kill(ids[0], Signal::Kill).unwrap();
    let replacement = match c.wait_for("a respawn", |e| matches!(e, Event::Fork(w) if *w > ids[1]))
    {
        Event::Fork(w) => w,
        _ => unreachable!(),
    };
    c.listening(replacement);
    let (after, text) = scrape(&mut c);
    assert_eq!(restarts(&after), Some(1.0), "{text}");
    let code = sample(&after, "herd_place_last_exit_code", "place", &place.to_string());
    assert_eq!(code, Some(128.0 + 9.0), "SIGKILL:\n{text}");
    let other = c.primary.worker(ids[1]).and_then(|w| w.place).unwrap().to_string();
    assert_eq!(sample(&after, "herd_place_restarts_total", "place", &other), Some(0.0), "{text}");

    let stats = c.primary.stats();
    let w = stats.workers.iter().find(|w| w.id == replacement).expect("the replacement");
    assert_eq!(w.restarts, 1, "{w:?}");
    let exit = w.last_exit.as_ref().expect("its predecessor's exit");
    assert_eq!((exit.worker, exit.signal, exit.code), (ids[0], Some(9), None), "{exit:?}");
}

#[test]
fn readyz_turns_503_during_a_stop_and_livez_fails_while_the_loop_does_not_turn() {
    let settings = fixture_settings(WORKER, "rr").metrics_listen(loopback());
    let mut c = TestCluster::with(settings);
    let ids = c.fork_online(2);
    // Before any worker listens, no place is ready.
    let response = get(&mut c, "/readyz");
    assert_eq!(response.status, 503, "{response:?}");
    let mut address = String::new();
    for &id in &ids {
        address = c.listen(id, "tcp://127.0.0.1:0", "hold").1;
    }
    let response = get(&mut c, "/readyz");
    assert_eq!(response.status, 200, "{response:?}");
    let response = get(&mut c, "/livez");
    assert_eq!(response.status, 200, "{response:?}");

    // A connection a worker holds keeps the stop under way until the client speaks.
    let mut client = TcpStream::connect(address.trim_start_matches("tcp://")).unwrap();
    c.wait_for(
        "a connection held",
        |e| matches!(e, Event::Message { data, .. } if data.starts_with(b"held")),
    );
    c.primary.disconnect_all();
    let response = get(&mut c, "/readyz");
    assert_eq!(response.status, 503, "{response:?}");
    assert!(response.body.contains("stopping"), "{response:?}");
    assert!(c.primary.stats().stopping);
    writeln!(client, "bye").unwrap();
    c.wait_for("the stop's end", |e| matches!(e, Event::Drained));
    let response = get(&mut c, "/readyz");
    assert_eq!(response.status, 503, "after the stop nobody serves: {response:?}");

    // Nobody turns the primary's loop: the probe's deadline passes.
    let metrics = c.primary.metrics_address().unwrap().to_string();
    let stuck = herd_tests::within_deadline("GET /livez", move || http::get(&metrics, "/livez"));
    let stuck = stuck.expect("an answer");
    assert_eq!(stuck.status, 503, "{stuck:?}");
    let response = get(&mut c, "/livez");
    assert_eq!(response.status, 200, "the loop turns again: {response:?}");
}

/// A client that drip-feeds `GET /livez` a byte every 200 ms, on a thread, until it is
/// dropped (also when the test fails, so the metrics thread is not held past the test) or the
/// server closes the connection: a client slower than any request deadline.
struct DripFeeder {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DripFeeder {
    fn start(address: &str) -> DripFeeder {
        let mut stream = TcpStream::connect(address).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for byte in b"GET /livez HTTP/1.1\r\nHost: x".iter().cycle() {
                if stopped.load(std::sync::atomic::Ordering::SeqCst)
                    || stream.write_all(&[*byte]).is_err()
                {
                    return;
                }
                // The client's own pace, not a synchronisation.
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        DripFeeder { stop, thread: Some(thread) }
    }
}

impl Drop for DripFeeder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn probes_are_answered_while_slow_and_idle_clients_hold_connections() {
    let settings = fixture_settings(WORKER, "rr").metrics_listen(loopback());
    let mut c = TestCluster::with(settings);
    let address = c.primary.metrics_address().unwrap().to_string();
    // First in the accept queue: a client sending its request a byte at a time, forever
    // (until the test ends), then several that send nothing.
    let dripping = DripFeeder::start(&address);
    let idle: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(&address).unwrap()).collect();
    for _ in 0..3 {
        let response = get(&mut c, "/livez");
        assert_eq!(response.status, 200, "{response:?}");
    }
    let response = get(&mut c, "/metrics");
    assert_eq!(response.status, 200, "{response:?}");

    // Far more idle connections than are held: the oldest are closed, probes still answered.
    let many: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(&address).unwrap()).collect();
    let response = get(&mut c, "/livez");
    assert_eq!(response.status, 200, "{response:?}");
    // The first of them was closed by the server (to make room, or at its deadline): EOF or
    // a reset, not a read timeout.
    let mut first = &many[0];
    first.set_read_timeout(Some(herd_tests::DEADLINE)).unwrap();
    let mut buf = [0u8; 16];
    let read = std::io::Read::read(&mut first, &mut buf);
    let closed = matches!(read, Ok(0))
        || read.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset);
    assert!(closed, "the oldest connection is closed: {read:?}");
    drop(dripping);
    drop(idle);
}
