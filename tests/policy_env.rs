//! The scheduling policy from `HERD_SCHED_POLICY` and from the builder. Alone in its binary,
//! with one test: it changes this process's environment, which every thread shares.

use herd::{Cluster, Policy};
use herd_tests::cluster::{TestCluster, greeting_worker};

const WORKER: &str = env!("CARGO_BIN_EXE_cluster-worker");
const VAR: &str = "HERD_SCHED_POLICY";

fn set_policy_var(value: Option<&str>) {
    // SAFETY: this binary has one test and it runs on one thread; no other thread reads the
    // environment meanwhile (workers are separate processes, spawned after the change).
    unsafe {
        match value {
            Some(value) => std::env::set_var(VAR, value),
            None => std::env::remove_var(VAR),
        }
    }
}

#[test]
fn the_policy_comes_from_the_builder_then_herd_sched_policy_then_rr() {
    set_policy_var(None);
    assert_eq!(Cluster::new().resolved_policy().unwrap(), Policy::RoundRobin, "the default");
    set_policy_var(Some(""));
    assert_eq!(Cluster::new().resolved_policy().unwrap(), Policy::RoundRobin, "empty: default");

    for (value, policy) in [
        ("none", Policy::Shared),
        ("shared", Policy::Shared),
        ("rr", Policy::RoundRobin),
        ("least-conn", Policy::LeastConnections),
        ("reuseport", Policy::ReusePort),
    ] {
        set_policy_var(Some(value));
        assert_eq!(Cluster::new().resolved_policy().unwrap(), policy, "{VAR}={value}");
        for set in [Policy::RoundRobin, Policy::ReusePort] {
            let resolved = Cluster::new().policy(set).resolved_policy().unwrap();
            assert_eq!(resolved, set, "the builder's {set:?} wins over {VAR}={value}");
        }
    }

    set_policy_var(Some("fastest"));
    let error = Cluster::new().resolved_policy().unwrap_err().to_string();
    for name in [VAR, "fastest", "none", "rr", "least-conn", "reuseport"] {
        assert!(error.contains(name), "the error names {name:?}: {error}");
    }
    assert!(Cluster::new().primary().is_err(), "no primary with an invalid {VAR}");
    let resolved = Cluster::new().policy(Policy::Shared).resolved_policy().unwrap();
    assert_eq!(resolved, Policy::Shared, "the builder's policy needs no valid {VAR}");

    // A primary made while HERD_SCHED_POLICY=none runs `none`: its workers get the socket.
    set_policy_var(Some("none"));
    let mut c = TestCluster::new(WORKER, None);
    assert_eq!(c.primary.policy(), Policy::Shared);
    let ids = c.fork_online(2);
    let mut address = None;
    for &id in &ids {
        let (_, at, kind) = c.listen_kind(id, "tcp://127.0.0.1:0", "");
        assert_eq!(kind, "socket", "under none a worker accepts on the socket itself");
        assert_eq!(*address.get_or_insert(at.clone()), at);
    }
    let address = address.unwrap();
    assert!(ids.contains(&greeting_worker(&c.fetch(&address))));
    assert_eq!(c.primary.connections_held(), 0, "the primary never accepts under none");
    set_policy_var(None);
    // The policy was frozen when the primary was made.
    assert_eq!(c.primary.policy(), Policy::Shared);
}
