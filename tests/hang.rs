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
