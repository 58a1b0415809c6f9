//! With every worker at its in-flight limit, the primary stops accepting once
//! [`MAX_PENDING_CONNECTIONS`] connections wait for a worker: the rest wait in the kernel's
//! listen backlog, where they cost the primary no descriptor, and none is lost.

mod util;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use herd_registry::{MAX_PENDING_CONNECTIONS, Registry};
use util::{Primary, Worker, connect, tcp_address};

/// Well above the bound, below the listen backlog (511), so every handshake completes.
const CLIENTS: u16 = 400;

/// Workers, each with at most one connection in flight.
const WORKERS: u32 = 2;

fn client(address: SocketAddr, id: u16) -> TcpStream {
    let mut stream = connect(address);
    stream.write_all(&id.to_le_bytes()).expect("client write");
    stream
}

/// The most the primary may hold: the pending bound plus one in flight per worker.
const HELD_AT_MOST: usize = MAX_PENDING_CONNECTIONS + WORKERS as usize;

#[track_caller]
fn assert_bounded(registry: &Registry) {
    let held = registry.connections_held();
    assert!(held <= HELD_AT_MOST, "the primary holds {held} connections, bound {HELD_AT_MOST}");
}

#[test]
fn busy_workers_leave_the_overflow_in_the_kernel_backlog_and_every_client_is_served_once() {
    let mut primary = Primary::new("rr", 1);
    let grants: Vec<_> =
        (1..=WORKERS).map(|id| primary.query(id, "tcp://127.0.0.1:0", 0)).collect();
    let key = grants[0].key.clone();
    let address = tcp_address(&grants[0]);
    let workers: Vec<Worker> = (1..).zip(grants).map(|(id, g)| Worker::new(id, g)).collect();
    // Every handshake completes in the kernel before the primary runs.
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|id| client(address, id)).collect();

    // The workers never ack: the primary fills the queue up to the bound, then stops, with
    // the listener still readable (the other clients wait in the backlog).
    primary.run_until("the primary holds as much as it may", |registry| {
        assert_bounded(registry);
        let accepted = registry.handoff_stats(&key).expect("a hand-off handle").accepted;
        (accepted as usize >= HELD_AT_MOST).then_some(())
    });
    for _ in 0..20 {
        primary.turn();
        assert_bounded(&primary.registry);
    }
    let stats = primary.registry.handoff_stats(&key).expect("a hand-off handle");
    assert_eq!(stats.accepted as usize, HELD_AT_MOST, "accepting went on past the bound");

    // The workers start acking: accepting resumes, and each client is served exactly once.
    let mut served = BTreeSet::new();
    primary.run_until("every client served", |registry| {
        assert_bounded(registry);
        for worker in &workers {
            while let Some(received) = worker.try_conn() {
                worker.ack(received.conn, true);
                let mut id = [0; 2];
                received.into_tcp().read_exact(&mut id).expect("the client's id");
                let id = u16::from_le_bytes(id);
                assert!(served.insert(id), "client {id} served twice");
            }
        }
        (served.len() == usize::from(CLIENTS)).then_some(())
    });
    primary.run_until_delivered(&key, u64::from(CLIENTS));
    assert_eq!(served, (0..CLIENTS).collect());
    let stats = primary.registry.handoff_stats(&key).expect("a hand-off handle");
    assert_eq!((stats.accepted, stats.refused), (u64::from(CLIENTS), 0));
    assert_eq!(primary.registry.connections_held(), 0);
    drop(clients);
}
