//! Descriptor hygiene of the hand-off: every descriptor a worker receives is close-on-exec,
//! and the process's descriptor count returns to where it was once everything is released.
//!
//! Alone in its test binary, so no test running in parallel changes the count.

mod util;

use std::net::SocketAddr;

use herd_registry::Key;
use util::{Primary, Worker, connect_and_write, is_cloexec, open_fds, peek_byte, tcp_address};

/// Connections in this test. Every tenth is refused by both workers, so the primary closes it.
const CONNECTIONS: u64 = 200;

#[test]
fn descriptors_return_to_baseline_after_handoffs_and_release() {
    let baseline = open_fds();
    {
        let mut primary = Primary::new("rr", 2);
        let g1 = primary.query(1, "tcp://127.0.0.1:0", 0);
        let (key, address) = (g1.key.clone(), tcp_address(&g1));
        assert!(is_cloexec(&g1.fd), "a worker's hand-off channel end is close-on-exec");
        let w1 = Worker::new(1, g1);
        let w2 = Worker::new(2, primary.query(2, "tcp://127.0.0.1:0", 0));
        for batch in 0..CONNECTIONS / 10 {
            run_batch(&mut primary, &key, address, [&w1, &w2], batch);
        }
        assert_eq!(primary.registry.connections_held(), 0);
        let stats = primary.registry.handoff_stats(&key).expect("a hand-off handle");
        assert_eq!((stats.accepted, stats.delivered, stats.refused), (CONNECTIONS, 180, 20));

        primary.registry.remove_worker(1, false);
        assert!(primary.registry.release(2, &key));
        assert!(primary.registry.is_empty());
    }
    assert_eq!(open_fds(), baseline, "descriptors left open after everything was released");
}

/// Ten concurrent clients; the workers accept all but the batch's first, which both refuse.
fn run_batch(
    primary: &mut Primary,
    key: &Key,
    address: SocketAddr,
    workers: [&Worker; 2],
    batch: u64,
) {
    let clients: Vec<_> = (0..10u8).map(|i| connect_and_write(address, i)).collect();
    let mut bytes = Vec::new();
    let done = primary.run_until("a batch of 10 connections handled", |registry| {
        for worker in workers {
            while let Some(received) = worker.try_conn() {
                assert!(is_cloexec(&received.fd), "a received connection is close-on-exec");
                let conn = received.conn;
                // Peeked, not read: a refused connection goes on to the other worker with
                // its byte unread.
                let byte = peek_byte(&received.into_tcp());
                worker.ack(conn, byte != 0);
                if byte != 0 {
                    bytes.push(byte);
                }
            }
        }
        let stats = registry.handoff_stats(key).expect("a hand-off handle");
        (stats.delivered + stats.refused == 10 * (batch + 1)).then_some(stats)
    });
    assert_eq!(done.refused, batch + 1, "the batch's refused connection was closed");
    bytes.sort_unstable();
    assert_eq!(bytes, (1..10).collect::<Vec<u8>>());
    drop(clients);
}
