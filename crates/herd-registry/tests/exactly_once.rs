//! A worker leaves a hand-off handle only after everything it sent on the handle's channel is
//! applied. Each test builds the interleaving where the primary learns that a worker leaves
//! (its `Close` on the control channel, its exit, a new grant) before it has read the worker's
//! ack on the hand-off channel: the acknowledged connection must not go to a second worker.

mod util;

use std::net::SocketAddr;

use herd_registry::{HandoffStats, Key};
use util::{Primary, Worker, connect_and_write, read_byte, tcp_address};

const SPEC: &str = "tcp://127.0.0.1:0";

/// An `rr` primary with workers 1 and 2 on one TCP handle.
fn rr(max_in_flight: usize) -> (Primary, Key, SocketAddr, Worker, Worker) {
    let mut primary = Primary::new("rr", max_in_flight);
    let g1 = primary.query(1, SPEC, 0);
    let g2 = primary.query(2, SPEC, 0);
    let (key, address) = (g1.key.clone(), tcp_address(&g1));
    (primary, key, address, Worker::new(1, g1), Worker::new(2, g2))
}

/// Worker 1 takes the first connection (client byte 1) and acknowledges it; the primary does
/// not read the ack (no event loop turn). Returns the client and the worker's copy.
fn worker_1_takes_the_first(
    primary: &mut Primary,
    address: SocketAddr,
    w1: &Worker,
    w2: &Worker,
) -> (std::net::TcpStream, util::Received) {
    let client = connect_and_write(address, 1);
    let (worker, received) = primary.next_conn(&[w1, w2]);
    assert_eq!(worker, 1, "the rotation starts with worker 1");
    w1.ack(received.conn, true);
    (client, received)
}

/// After worker 1 left with its ack applied: the handle holds nothing, counted one delivery,
/// and the next client's connection is the next thing worker 2 gets (never the first one).
#[track_caller]
fn assert_served_once(primary: &mut Primary, key: &Key, address: SocketAddr, w2: &Worker) {
    assert_eq!(
        primary.registry.handoff_stats(key),
        Some(HandoffStats {
            accepted: 1,
            delivered: 1,
            refused: 0,
            deferred: 0,
            exhausted: 0,
            send_errors: 0,
            closed_at_stop: 0
        }),
        "worker 1's ack was applied before it left"
    );
    assert_eq!(primary.registry.connections_held(), 0, "the primary closed its copy");
    let _second = connect_and_write(address, 2);
    let (_, next) = primary.next_conn(&[w2]);
    assert_eq!(read_byte(&mut next.into_tcp()), 2, "worker 2 got the connection worker 1 took");
    assert!(w2.try_conn().is_none(), "a connection was handed out twice");
}

#[test]
fn a_close_handled_before_the_ack_does_not_serve_the_connection_twice() {
    let (mut primary, key, address, w1, w2) = rr(1);
    let (_client, _taken) = worker_1_takes_the_first(&mut primary, address, &w1, &w2);
    // The worker's `Close` on its control channel is handled first.
    assert!(!primary.registry.release(1, &key));
    assert_served_once(&mut primary, &key, address, &w2);
}

#[test]
fn an_exit_handled_before_the_ack_does_not_serve_the_connection_twice() {
    let (mut primary, key, address, w1, w2) = rr(1);
    let (_client, _taken) = worker_1_takes_the_first(&mut primary, address, &w1, &w2);
    // The worker's exit (or its control channel's end of stream) is handled first.
    primary.registry.remove_worker(1, false);
    assert_served_once(&mut primary, &key, address, &w2);
}

#[test]
fn a_new_grant_handled_before_the_ack_does_not_serve_the_connection_twice() {
    let (mut primary, key, address, w1, w2) = rr(1);
    let (_client, _taken) = worker_1_takes_the_first(&mut primary, address, &w1, &w2);
    // Worker 1 asks for the handle again: its old channel is replaced.
    let again = Worker::new(1, primary.query(1, SPEC, 0));
    assert_served_once(&mut primary, &key, address, &w2);
    assert!(again.try_conn().is_none(), "the re-granted worker got a connection twice");
}

#[test]
fn a_worker_that_exits_with_a_hand_off_unread_still_has_its_ack_counted() {
    // Two in flight to worker 1: it takes A, acks it, and exits with B unread. Its end closes
    // with data in its queue, so the primary's end reports ECONNRESET before the ack.
    // Worker 2 keeps the handle open but is retired (disconnecting), so both go to worker 1.
    let (mut primary, key, address, w1, _w2) = rr(2);
    primary.registry.retire_worker(2);
    let _a = connect_and_write(address, b'A');
    let _b = connect_and_write(address, b'B');
    primary.run_until("both connections in flight to worker 1", |registry| {
        (registry.handoff_stats(&key).expect("a hand-off handle").accepted == 2).then_some(())
    });
    let taken = w1.try_conn().expect("A in flight to worker 1");
    w1.ack(taken.conn, true);
    drop(w1);
    assert_eq!(read_byte(&mut taken.into_tcp()), b'A');
    // The exit is handled before the hand-off channel is read.
    primary.registry.remove_worker(1, false);
    let stats = primary.registry.handoff_stats(&key).expect("the handle stays open");
    assert_eq!(stats.delivered, 1, "the ack behind the reset was applied: {stats:?}");
    assert_eq!(primary.registry.connections_held(), 1, "only B is held");

    // Worker 3 joins and gets B alone.
    let w3 = Worker::new(3, primary.query(3, SPEC, 0));
    let (_, next) = primary.next_conn(&[&w3]);
    assert_eq!(read_byte(&mut next.into_tcp()), b'B');
    assert!(w3.try_conn().is_none(), "A was handed out twice");
}

/// Four clients connect at once and the primary accepts them, sending them to worker 1 in
/// batches (worker 2 is retired, so all go to worker 1, which has room for all four). The
/// clients are returned to be kept open: their bytes are what the assertions read.
fn a_batch_of_four_to_worker_1(
    max_in_flight: usize,
) -> (Primary, Key, Worker, Vec<std::net::TcpStream>) {
    let (mut primary, key, address, w1, _w2) = rr(max_in_flight);
    primary.registry.retire_worker(2);
    let clients: Vec<_> = (1..=4).map(|byte| connect_and_write(address, byte)).collect();
    primary.run_until("four connections accepted", |registry| {
        (registry.handoff_stats(&key).expect("a hand-off handle").accepted == 4).then_some(())
    });
    (primary, key, w1, clients)
}

/// Several connections per message batch, then a refusal, an acceptance and a death with one
/// still unread: each connection is served exactly once. Worker 1 takes 1 and 3, refuses 2,
/// and dies with 4 unread; the primary learns of the exit before it reads the channel. Worker
/// 3 gets exactly 2 and 4.
#[test]
fn a_batch_refused_in_part_and_cut_by_a_death_serves_each_connection_once() {
    let (mut primary, key, w1, _clients) = a_batch_of_four_to_worker_1(8);
    let batch: Vec<_> = std::iter::from_fn(|| w1.try_conn()).take(4).collect();
    assert_eq!(batch.len(), 4, "all four in flight to worker 1");
    let mut batch = batch.into_iter();
    let one = batch.next().unwrap();
    let two = batch.next().unwrap();
    let three = batch.next().unwrap();
    let _four_unread = batch.next().unwrap(); // read by the test, never answered
    w1.ack(one.conn, true);
    w1.ack(two.conn, false);
    w1.ack(three.conn, true);
    let (mut one, mut three) = (one.into_tcp(), three.into_tcp());
    assert_eq!((read_byte(&mut one), read_byte(&mut three)), (1, 3));
    drop((w1, two));
    primary.registry.remove_worker(1, false);
    let stats = primary.registry.handoff_stats(&key).expect("the handle stays open");
    assert_eq!(stats.delivered, 2, "both acks applied before the requeue: {stats:?}");
    assert_eq!(primary.registry.connections_held(), 2, "2 and 4 are held: {stats:?}");

    let w3 = Worker::new(3, primary.query(3, SPEC, 0));
    let mut bytes = Vec::new();
    while bytes.len() < 2 {
        let (_, next) = primary.next_conn(&[&w3]);
        w3.ack(next.conn, true);
        bytes.push(read_byte(&mut next.into_tcp()));
    }
    bytes.sort();
    assert_eq!(bytes, [2, 4], "worker 3 got what worker 1 did not take");
    primary.run_until_delivered(&key, 4);
    assert!(w3.try_conn().is_none(), "a connection was handed out twice");
    assert_eq!(primary.registry.connections_held(), 0);
}

/// A worker that never reads (hung) with a whole batch queued to it: once it is taken off the
/// handle (hang detection kills it), every connection of the batch goes to the next worker,
/// once.
#[test]
fn a_batch_a_hung_worker_never_read_goes_whole_to_the_next_worker() {
    let (mut primary, key, w1, _clients) = a_batch_of_four_to_worker_1(8);
    // Worker 1 reads nothing; it is removed as the hang check does (killed, then removed).
    primary.registry.remove_worker(1, false);
    drop(w1);
    assert_eq!(primary.registry.connections_held(), 4);
    let w3 = Worker::new(3, primary.query(3, SPEC, 0));
    let mut bytes = Vec::new();
    while bytes.len() < 4 {
        let (_, next) = primary.next_conn(&[&w3]);
        w3.ack(next.conn, true);
        bytes.push(read_byte(&mut next.into_tcp()));
    }
    bytes.sort();
    assert_eq!(bytes, [1, 2, 3, 4]);
    primary.run_until_delivered(&key, 4);
    assert!(w3.try_conn().is_none(), "a connection was handed out twice");
    assert_eq!(primary.registry.connections_held(), 0);
}
