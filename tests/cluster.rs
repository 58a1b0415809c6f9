//! The cluster core, end to end: a primary in this test process, `cluster-worker` fixtures as
//! its workers.

use std::collections::BTreeSet;
use std::os::fd::AsFd;

use herd::{Event, Policy};
use herd_tests::cluster::{TestCluster, greeting_worker};

const WORKER: &str = env!("CARGO_BIN_EXE_cluster-worker");

fn cluster(policy: &str) -> TestCluster {
    TestCluster::new(WORKER, Some(policy.parse::<Policy>().unwrap()))
}

#[test]
fn events_come_in_node_order_fork_online_listening() {
    let mut c = cluster("rr");
    let id = c.primary.fork().unwrap();
    assert!(matches!(c.primary.next_event(None).unwrap(), Some(Event::Fork(w)) if w == id));
    c.wait_for("online", |e| matches!(e, Event::Online(w) if *w == id));
    assert!(c.seen.is_empty(), "nothing before online: {:?}", c.seen);
    let (_, address) = c.listen(id, "tcp://127.0.0.1:0", "");
    let event =
        c.wait_for("listening", |e| matches!(e, Event::Listening { worker, .. } if *worker == id));
    let Event::Listening { address: reported, .. } = event else { unreachable!() };
    assert_eq!(reported.to_string(), address);
    assert_ne!(reported.port(), Some(0), "the listening event carries the real port");
}

#[test]
fn each_policy_serves_connections_from_every_worker() {
    for policy in ["none", "rr", "least-conn", "reuseport"] {
        let mut c = cluster(policy);
        let ids = c.fork_online(3);
        // Port 0 in every worker is one key, so one bind: every worker gets the same port.
        let (_, address) = c.listen(ids[0], "tcp://127.0.0.1:0", "");
        for &id in &ids[1..] {
            let (_, same) = c.listen(id, "tcp://127.0.0.1:0", "");
            assert_eq!(same, address, "{policy}: every worker shares the address");
        }
        let mut served = BTreeSet::new();
        for _ in 0..300 {
            served.insert(greeting_worker(&c.fetch(&address)));
            if served.len() == ids.len() {
                break;
            }
        }
        assert_eq!(served, ids.iter().copied().collect(), "{policy}: workers that served");
    }
}

#[test]
fn messages_flow_both_ways_in_order_with_fds() {
    let mut c = cluster("rr");
    let [id] = c.fork_online(1)[..] else { unreachable!() };
    for i in 0..50 {
        let (reader, writer) = std::io::pipe().unwrap();
        let (answer, fds) =
            c.command_with_fds(id, &format!("echo {i}"), &[writer.as_fd(), reader.as_fd()], "echo");
        assert_eq!(answer, format!("echo {i}"));
        assert_eq!(fds.len(), 2, "descriptors come back with the message");
    }
    // A descriptor sent to the worker is the same pipe.
    let (mut reader, writer) = std::io::pipe().unwrap();
    c.command_with_fds(id, "fd", &[writer.as_fd()], "fd-written");
    drop(writer);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut reader, &mut text).unwrap();
    assert_eq!(text, format!("worker {id}"));
}
