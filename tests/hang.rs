//! Hung-worker detection (`Cluster::hang_timeout`): a worker stopped as a whole, or one whose
//! acceptors take nothing while its control thread still answers, is reported (`Event::Hung`),
//! killed and respawned in its place, and the connections meant for it are served. A primary
//! in this test process, `cluster-worker` fixtures as its workers.

use std::time::Duration;

use herd::{Cluster, Event, WorkerId};
use herd_tests::cluster::{
    TestCluster, connect_clients, fixture_settings, greeting_worker, serving,
};
use herd_tests::{may_fork, stop_process};

const WORKER: &str = env!("CARGO_BIN_EXE_cluster-worker");

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The fixture under `policy`, hang timeout 1 s, respawns after 50 ms.
fn settings(policy: &str) -> Cluster {
    let respawn =
        herd::RespawnPolicy { initial_delay: ms(50), max_delay: ms(50), ..Default::default() };
    fixture_settings(WORKER, policy).hang_timeout(Some(Duration::from_secs(1))).respawn(respawn)
}

/// Waits for worker `id`'s `Hung` event; returns its reason.
#[track_caller]
fn hung(c: &mut TestCluster, id: WorkerId) -> String {
    let event = c.wait_for(
        &format!("worker {id} hung"),
        |e| matches!(e, Event::Hung { worker, .. } if *worker == id),
    );
    let Event::Hung { reason, .. } = event else { unreachable!() };
    reason
}

/// A worker stopped as a whole (SIGSTOP) under `policy`: detected, killed, replaced, and every
/// client that connected meanwhile is answered (under `reuseport` those queued on its socket
/// by its replacement, which inherits the socket).
fn a_stopped_worker_is_detected_killed_and_replaced(policy: &str) {
    let _forks = may_fork();
    let (mut c, ids, address) = serving(settings(policy), 2);
    let [stopped, other] = ids[..] else { unreachable!() };
    stop_process(c.primary.worker(stopped).unwrap().pid);
    let clients = connect_clients(&address, 10);
    let reason = hung(&mut c, stopped);
    assert!(reason.contains("for 1s"), "{policy}: {reason}");
    c.exit_of(stopped);
    let answers = c.answers("the clients' answers", clients);
    for (i, answer) in answers.iter().enumerate() {
        let answer = answer.as_ref().unwrap_or_else(|e| panic!("{policy}: client {i}: {e}"));
        assert_ne!(greeting_worker(answer), stopped, "{policy}: client {i}");
    }
    let flagged: Vec<&Event> = c
        .seen
        .iter()
        .filter(|e| matches!(e, Event::Hung { worker, .. } if *worker == other))
        .collect();
    assert!(flagged.is_empty(), "{policy}: the healthy worker was flagged: {flagged:?}");
}

#[test]
fn a_stopped_worker_is_detected_killed_and_replaced_under_rr() {
    a_stopped_worker_is_detected_killed_and_replaced("rr");
}

#[test]
fn a_stopped_worker_is_detected_killed_and_replaced_under_least_conn() {
    a_stopped_worker_is_detected_killed_and_replaced("least-conn");
}

#[test]
fn a_stopped_worker_is_detected_killed_and_replaced_under_none() {
    a_stopped_worker_is_detected_killed_and_replaced("none");
}

#[test]
fn a_stopped_worker_is_detected_killed_and_replaced_under_reuseport() {
    a_stopped_worker_is_detected_killed_and_replaced("reuseport");
}

/// A worker whose control thread answers but whose listener takes nothing (every acceptor
/// stuck): under `rr` the connection handed to it goes unanswered, under `reuseport` its
/// socket's queue does not drain; either is detected, and the client is served by the other.
fn a_worker_that_takes_nothing_is_detected(policy: &str, sign: &str) {
    let _forks = may_fork();
    // The replacement does not listen (listens here are commands, not at start): its place's
    // sockets wait for it only a second, then the queued clients move to the serving worker.
    let mut c = TestCluster::with(settings(policy).ready_timeout(Duration::from_secs(1)));
    let [stuck, serving_id] = c.fork_online(2)[..] else { unreachable!() };
    let (_, address) = c.listen(stuck, "tcp://127.0.0.1:0", "idle");
    c.listen(serving_id, "tcp://127.0.0.1:0", "");
    // Enough clients that some reach the stuck worker, whichever way they are spread.
    let clients = connect_clients(&address, 16);
    let reason = hung(&mut c, stuck);
    assert!(reason.contains(sign), "{policy}: {reason}");
    let answers: Vec<String> = c
        .answers("the clients' answers", clients)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{policy}: {e}"));
    let served = answers.iter().filter(|a| !a.is_empty()).count();
    assert!(served > 0, "{policy}: {answers:?}");
    for answer in answers.iter().filter(|a| !a.is_empty()) {
        assert_eq!(greeting_worker(answer), serving_id, "{policy}");
    }
    assert!(
        !c.seen.iter().any(|e| matches!(e, Event::Hung { worker, .. } if *worker == serving_id)),
        "{policy}: the serving worker was flagged"
    );
}

#[test]
fn a_worker_whose_hand_offs_go_unanswered_is_detected_under_rr() {
    a_worker_that_takes_nothing_is_detected("rr", "handed to it not taken");
}

#[test]
fn a_worker_whose_queue_does_not_drain_is_detected_under_reuseport() {
    a_worker_that_takes_nothing_is_detected("reuseport", "queued on its socket not accepted");
}

/// Client threads that connect to `address` again and again until `stop`, each reading the
/// greeting; they return how many were answered and how many failed.
fn looping_clients(
    address: &str,
    threads: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<(usize, usize)>> {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let target = address.trim_start_matches("tcp://").to_owned();
    (0..threads)
        .map(|_| {
            let (target, stop) = (target.clone(), std::sync::Arc::clone(stop));
            std::thread::spawn(move || {
                let (mut answered, mut failed) = (0, 0);
                while !stop.load(Ordering::SeqCst) {
                    let answer = std::net::TcpStream::connect(&target).and_then(|mut s| {
                        s.set_read_timeout(Some(herd_tests::DEADLINE))?;
                        let mut text = String::new();
                        s.read_to_string(&mut text).map(|_| text)
                    });
                    match answer {
                        Ok(text) if text.starts_with("worker ") => answered += 1,
                        other => {
                            eprintln!("client: {other:?}");
                            failed += 1;
                        }
                    }
                }
                (answered, failed)
            })
        })
        .collect()
}

/// The primary's own silence is not a worker's hang. Two workers log every request through the
/// primary (their serving thread sends a message per connection) under load, and the
/// application stays away from `next_event` for 3 s, three times the hang timeout: nobody
/// reads the workers' channels, so their serving threads wait in `send`, and connections
/// handed to them (or queued on their sockets) wait too. When the application is back, no
/// worker is reported hung, and every client is answered.
fn the_application_away_is_not_a_worker_hang(policy: &str) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let _forks = may_fork();
    let mut c = TestCluster::with(settings(policy));
    let ids = c.fork_online(2);
    let (_, address) = c.listen(ids[0], "tcp://127.0.0.1:0", "log");
    let (_, second) = c.listen(ids[1], "tcp://127.0.0.1:0", "log");
    assert_eq!(address, second, "{policy}: one address");
    let stop = Arc::new(AtomicBool::new(false));
    let clients = looping_clients(&address, 4, &stop);
    c.pump(ms(500));
    // The application's own work elsewhere (not a synchronisation): its absence is the test.
    std::thread::sleep(Duration::from_secs(3));
    c.pump(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    // The clients' last connections are answered only while the primary reads the workers'
    // log messages: it is pumped until every client has finished, then they are joined.
    let deadline = std::time::Instant::now() + herd_tests::DEADLINE;
    while !clients.iter().all(|t| t.is_finished()) && std::time::Instant::now() < deadline {
        c.pump(ms(20));
    }
    let (answered, failed) = clients
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let hung: Vec<&Event> = c.seen.iter().filter(|e| matches!(e, Event::Hung { .. })).collect();
    assert!(hung.is_empty(), "{policy}: healthy workers reported hung: {hung:?}");
    assert_eq!(failed, 0, "{policy}: {failed} clients failed ({answered} answered)");
    assert!(answered > 0, "{policy}: nothing answered");
}

#[test]
fn the_application_away_is_not_a_worker_hang_under_rr() {
    the_application_away_is_not_a_worker_hang("rr");
}

#[test]
fn the_application_away_is_not_a_worker_hang_under_least_conn() {
    the_application_away_is_not_a_worker_hang("least-conn");
}

#[test]
fn the_application_away_is_not_a_worker_hang_under_reuseport() {
    the_application_away_is_not_a_worker_hang("reuseport");
}

/// A worker held back by the primary (its messages at `MAX_HELD_EVENTS` while the application
/// takes 30 ms over each) waits in `send`, and connections handed to it wait: the primary's
/// doing, not a hang. Each hold lasts about 4 s (128 events taken at 30 ms each before it is
/// read again), four times the hang timeout of 1 s; a shorter timeout (200 ms) also flags a
/// worker that a loaded 2-core machine leaves unscheduled that long between holds, which is
/// what hang detection is for, not what this test is about.
#[test]
fn a_worker_held_back_by_the_primary_is_not_reported_hung() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let _forks = may_fork();
    let mut c = TestCluster::with(settings("rr"));
    let id = c.fork_online(1)[0];
    let (_, address) = c.listen(id, "tcp://127.0.0.1:0", "log");
    let stop = Arc::new(AtomicBool::new(false));
    let clients = looping_clients(&address, 4, &stop);
    let until = std::time::Instant::now() + Duration::from_secs(8);
    let (mut held_back, mut hung) = (false, Vec::new());
    while std::time::Instant::now() < until {
        held_back |= c.primary.worker(id).is_some_and(|w| w.held_back);
        match c.primary.next_event(Some(ms(10))).expect("event loop") {
            // The application's work on each message (not a synchronisation).
            Some(Event::Message { .. }) => std::thread::sleep(ms(30)),
            Some(event @ Event::Hung { .. }) => hung.push(event),
            _ => {}
        }
    }
    stop.store(true, Ordering::SeqCst);
    // The clients finish once the application takes the rest of the messages.
    let joined = std::thread::spawn(move || {
        clients.into_iter().map(|t| t.join().expect("client thread")).collect::<Vec<_>>()
    });
    while !joined.is_finished() {
        if let Some(event @ Event::Hung { .. }) =
            c.primary.next_event(Some(ms(10))).expect("event loop")
        {
            hung.push(event);
        }
    }
    let failed: usize = joined.join().expect("clients").iter().map(|r| r.1).sum();
    assert!(held_back, "the worker was never held back");
    assert!(hung.is_empty(), "a worker held back by the primary was reported hung: {hung:?}");
    assert_eq!(failed, 0, "clients failed");
}
