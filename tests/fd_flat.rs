//! The primary's descriptors over many hand-offs. Alone in its binary: it counts this
//! process's descriptors, which a test on another thread would disturb.

use herd::Policy;
use herd_tests::cluster::{TestCluster, greeting_worker};
use herd_tests::described_fds;

const WORKER: &str = env!("CARGO_BIN_EXE_cluster-worker");

/// Runs `count` fetches, then the primary's loop until it holds no connection (the last
/// acknowledgement may still be on its way when the client has its answer).
fn fetch_many(c: &mut TestCluster, address: &str, count: usize, ids: &[herd::WorkerId]) {
    for i in 0..count {
        let greeting = c.fetch(address);
        assert!(ids.contains(&greeting_worker(&greeting)), "fetch {i}: {greeting:?}");
    }
    c.pump_until("every hand-off acknowledged", |c| c.primary.connections_held() == 0);
}

#[test]
fn the_primary_fd_count_is_flat_over_1000_handoffs() {
    let mut c = TestCluster::new(WORKER, Some(Policy::RoundRobin));
    let ids = c.fork_online(2);
    let (_, address) = c.listen(ids[0], "tcp://127.0.0.1:0", "");
    let (_, same) = c.listen(ids[1], "tcp://127.0.0.1:0", "");
    assert_eq!(same, address);
    fetch_many(&mut c, &address, 50, &ids);
    let before = described_fds();
    fetch_many(&mut c, &address, 1000, &ids);
    let after = described_fds();
    assert_eq!(after, before, "descriptors after 1,000 hand-offs (left) and before (right)");
}
