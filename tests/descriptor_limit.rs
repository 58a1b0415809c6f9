//! Hand-offs to workers at their descriptor limit (issue 8, first deliverable): a connection
//! whose descriptor a worker loses on the way in (`MSG_CTRUNC`) is deferred, not refused, so
//! it is never closed for a shortage that passes; it waits in the primary, and once the workers
//! have descriptors again every connection is served, each exactly once.

use std::io::{Read, Write};
use std::net::TcpStream;

use herd::{Event, WorkerId};
use herd_tests::cluster::{TestCluster, fixture_settings};
use herd_tests::{DEADLINE, may_fork};

const WORKER: &str = env!("CARGO_BIN_EXE_cluster-worker");
/// Each worker's descriptor limit: room for about twenty held connections beside its own.
const NOFILE: u32 = 32;
/// More clients than both workers can hold at that limit.
const CLIENTS: usize = 60;

#[test]
fn connections_no_worker_can_take_for_now_wait_and_are_all_served_once_descriptors_free() {
    for policy in ["rr", "least-conn"] {
        let _fork = may_fork();
        let mut c = TestCluster::with(fixture_settings(WORKER, policy));
        let ids = c.fork_online(2);
        let mut address = String::new();
        for &id in &ids {
            let answer = c.command(id, &format!("nofile {NOFILE}"), "nofile");
            assert_eq!(answer, format!("nofile {NOFILE}"), "{policy}: worker {id}");
            (_, address) = c.listen(id, "tcp://127.0.0.1:0", "hold");
        }
        let target = address.trim_start_matches("tcp://").to_owned();
        let clients: Vec<TcpStream> = (0..CLIENTS)
            .map(|_| {
                let stream = TcpStream::connect(&target).expect("connect");
                stream.set_read_timeout(Some(DEADLINE)).expect("read timeout");
                stream
            })
            .collect();
        // The workers hold what they can; the rest waits in the primary, deferred by workers
        // that lost its descriptor, and is not closed (refused by all) for it.
        let mut held: Vec<WorkerId> = Vec::new();
        c.pump_until(&format!("{policy}: every client held by a worker or the primary"), |c| {
            let seen = std::mem::take(&mut c.seen);
            for event in seen {
                match event {
                    Event::Message { worker, data, .. } if data.starts_with(b"held ") => {
                        held.push(worker);
                    }
                    other => c.seen.push(other),
                }
            }
            held.len() + c.primary.connections_held() == CLIENTS && c.primary.connections_held() > 0
        });
        assert!(held.len() < CLIENTS, "{policy}: the workers were not at their limit");
        // Descriptors free up as the clients are done: every client is answered.
        let answers = c.run_client(&format!("{policy}: every client answered"), move || {
            let mut answers = Vec::new();
            for mut client in clients {
                client.write_all(b"done\n")?;
                let mut text = String::new();
                client.read_to_string(&mut text)?;
                answers.push(text);
            }
            Ok(answers)
        });
        let unanswered = answers.iter().filter(|a| !a.starts_with("worker ")).count();
        assert_eq!(unanswered, 0, "{policy}: clients closed unanswered: {answers:?}");
    }
}
