//! The primary's descriptors over many rolling restarts. Alone in its binary: it counts this
//! process's descriptors, which a test on another thread would disturb.

use std::collections::BTreeSet;

use herd::{Cluster, Event, State, Stdio, WorkerId};
use herd_tests::cluster::{TestCluster, greeting_worker};
use herd_tests::described_fds;

const WORKER: &str = env!("CARGO_BIN_EXE_cluster-worker");

/// The kinds of `described` descriptors (`socket`, `pipe`, `anon_inode:[pidfd]`, a path),
/// sorted: numbers and inodes change as workers come and go, the kinds and counts must not.
fn kinds(described: &[String]) -> Vec<String> {
    let mut kinds: Vec<String> = described
        .iter()
        .map(|d| {
            let target = d.split_once(" -> ").map_or(d.as_str(), |(_, t)| t);
            match target.split_once(":[") {
                Some((kind @ ("socket" | "pipe"), _)) => kind.to_owned(),
                _ => target.to_owned(),
            }
        })
        .collect();
    kinds.sort();
    kinds
}

/// One rolling restart, run to its end: `Restarted`, the old workers out of the table, the
/// new ones listening and serving.
fn restart(c: &mut TestCluster, address: &str, round: usize) {
    let old: BTreeSet<WorkerId> = c.primary.workers().map(|w| w.id).collect();
    c.seen.clear();
    c.primary.restart_all();
    let event = c.wait_for(&format!("restart {round} ends"), |e| {
        matches!(e, Event::Restarted | Event::RestartAborted { .. })
    });
    assert!(matches!(event, Event::Restarted), "restart {round}: {event:?}");
    c.pump_until(&format!("restart {round}: only new workers, listening"), |c| {
        let workers: Vec<_> = c.primary.workers().collect();
        workers.len() == old.len()
            && workers.iter().all(|w| !old.contains(&w.id) && w.state == State::Listening)
    });
    let id = greeting_worker(&c.fetch(address));
    assert!(!old.contains(&id), "restart {round}: served by old worker {id}");
    c.pump_until(&format!("restart {round}: every hand-off acknowledged"), |c| {
        c.primary.connections_held() == 0
    });
}

#[test]
fn the_primary_fd_count_is_flat_over_20_rolling_restarts() {
    // Inherited output: piped output would add relay pipes that close on threads of their own,
    // a moment after each worker exits.
    let settings = Cluster::new()
        .exec(WORKER)
        .args(Vec::<String>::new())
        .stdio(Stdio::Inherit)
        .policy("rr".parse().unwrap())
        .env("HERD_TEST_AUTOLISTEN", "tcp://127.0.0.1:0");
    let mut c = TestCluster::with(settings);
    let ids = c.fork_online(2);
    let mut address = None;
    for &id in &ids {
        let event = c.wait_for(
            &format!("worker {id} listening"),
            |e| matches!(e, Event::Listening { worker, .. } if *worker == id),
        );
        let Event::Listening { address: at, .. } = event else { unreachable!() };
        assert_eq!(*address.get_or_insert_with(|| at.to_string()), at.to_string());
    }
    let address = address.unwrap();
    restart(&mut c, &address, 0);
    let before = described_fds();
    for round in 1..=20 {
        restart(&mut c, &address, round);
    }
    let after = described_fds();
    assert_eq!(
        kinds(&after),
        kinds(&before),
        "descriptors after 20 more rolling restarts {after:?} and before {before:?}"
    );
}
