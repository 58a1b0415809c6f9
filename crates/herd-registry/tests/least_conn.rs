//! The `least-conn` hand-off: each connection goes to the worker with the fewest open plus
//! in-flight connections, as counted from acknowledgements and the workers' close reports.

mod util;

use std::net::{SocketAddr, TcpStream};

use herd_registry::Key;
use herd_registry::wire::FromWorker;
use util::{Primary, Worker, connect_and_write, read_byte, tcp_address};

/// Connects one client, runs the loop until a worker gets the connection, checks it is the
/// client's, and has that worker accept it (sending `before_ack` first, in order on the same
/// channel, so the primary has read both once the delivery count moves). Returns the worker.
#[track_caller]
fn hand_one(
    primary: &mut Primary,
    key: &Key,
    address: SocketAddr,
    workers: &[&Worker],
    before_ack: Option<FromWorker>,
    held: &mut Vec<TcpStream>,
) -> u32 {
    let delivered = primary.registry.handoff_stats(key).expect("a hand-off handle").delivered;
    let byte = u8::try_from(held.len()).expect("few connections");
    held.push(connect_and_write(address, byte));
    let (id, received) = primary.next_conn(workers);
    let worker = workers.iter().find(|w| w.id == id).expect("one of ours");
    let conn = received.conn;
    let mut stream = received.into_tcp();
    assert_eq!(read_byte(&mut stream), byte);
    if let Some(message) = before_ack {
        worker.send(&message);
    }
    worker.ack(conn, true);
    primary.run_until_delivered(key, delivered + 1);
    // The worker keeps the connection open (it never reports it closed).
    held.push(stream);
    id
}

#[test]
fn new_connections_go_to_the_least_loaded_worker_until_balanced() {
    let mut primary = Primary::new("least-conn", 1);
    let g1 = primary.query(1, "tcp://127.0.0.1:0", 0);
    let (key, address) = (g1.key.clone(), tcp_address(&g1));
    let w1 = Worker::new(1, g1);
    let mut held = Vec::new();

    // Alone, worker 1 takes three connections and keeps them open.
    for _ in 0..3 {
        assert_eq!(hand_one(&mut primary, &key, address, &[&w1], None, &mut held), 1);
    }

    // Worker 2 joins with none: it gets the next three, until both have three.
    let w2 = Worker::new(2, primary.query(2, "tcp://127.0.0.1:0", 0));
    let picked: Vec<u32> = (0..3)
        .map(|_| hand_one(&mut primary, &key, address, &[&w1, &w2], None, &mut held))
        .collect();
    assert_eq!(picked, [2, 2, 2]);

    // Balanced at three each: a tie goes to the worker picked least recently, worker 1.
    assert_eq!(hand_one(&mut primary, &key, address, &[&w1, &w2], None, &mut held), 1);
}

#[test]
fn a_close_report_steers_the_next_connection_back() {
    let mut primary = Primary::new("least-conn", 1);
    let g1 = primary.query(1, "tcp://127.0.0.1:0", 0);
    let (key, address) = (g1.key.clone(), tcp_address(&g1));
    let w1 = Worker::new(1, g1);
    let w2 = Worker::new(2, primary.query(2, "tcp://127.0.0.1:0", 0));
    let both = [&w1, &w2];
    let mut held = Vec::new();

    // Two each, in rotation: 1, 2, 1, 2. Worker 2 is picked last, so a tie now goes to 1.
    let picked: Vec<u32> =
        (0..4).map(|_| hand_one(&mut primary, &key, address, &both, None, &mut held)).collect();
    assert_eq!(picked, [1, 2, 1, 2]);

    // Worker 1 reports two closed with its next acknowledgement: it has 1 open, worker 2 has 2.
    let report = Some(FromWorker::Closed { count: 2 });
    assert_eq!(hand_one(&mut primary, &key, address, &both, report, &mut held), 1);
    assert_eq!(
        hand_one(&mut primary, &key, address, &both, None, &mut held),
        1,
        "worker 1 reported closes, so it has fewer open (1 + 1 against 2) and gets the next"
    );
    // Now 2 each, worker 1 picked last: worker 2 is next.
    assert_eq!(hand_one(&mut primary, &key, address, &both, None, &mut held), 2);
}

#[test]
fn a_bogus_close_count_neither_stalls_nor_underflows() {
    let mut primary = util::Primary::new("least-conn", 1);
    let grant = primary.query(1, "tcp://127.0.0.1:0", 0);
    let key = grant.key.clone();
    let address = util::tcp_address(&grant);
    let worker = util::Worker::new(1, grant);
    // Four billion "closed" reports would take minutes if counted one by one.
    worker.send(&herd_registry::wire::FromWorker::Closed { count: u32::MAX });
    let _client = util::connect_and_write(address, 7);
    let (_, conn) = primary.next_conn(&[&worker]);
    worker.ack(conn.conn, true);
    primary.run_until_delivered(&key, 1);
}

/// Under `least-conn` a thread worker's credit changes nothing: it keeps the cluster's bound,
/// so each connection waits for the least loaded worker rather than going, a wake-up at a
/// time, to the one with the most idle threads.
#[test]
fn a_thread_workers_credit_does_not_raise_its_bound() {
    use herd_registry::wire::ToWorker;
    let mut primary = Primary::new("least-conn", 1);
    let grant = primary.query(1, "tcp://127.0.0.1:0", 0);
    let (key, address) = (grant.key.clone(), tcp_address(&grant));
    let worker = Worker::new(1, grant);
    let queued = |w: &Worker| -> Vec<u64> {
        std::iter::from_fn(|| w.channel.try_recv_value::<ToWorker>().ok())
            .map(|(ToWorker::NewConn { conn, .. }, _)| conn)
            .collect()
    };
    let clients: Vec<_> = (0..4).map(|i| connect_and_write(address, i)).collect();
    primary.run_until("four connections accepted", |registry| {
        (registry.handoff_stats(&key).expect("a hand-off handle").accepted == 4).then_some(())
    });
    let mut first = Vec::new();
    primary.run_until("the first hand-off", |_| {
        first.extend(queued(&worker));
        (!first.is_empty()).then_some(())
    });
    assert_eq!(first.len(), 1);
    worker.ack_idle(first[0], true, 3);
    primary.run_until_delivered(&key, 1);
    // The next one is sent in the turn that read the ack: exactly one, as before the credit.
    let mut next = Vec::new();
    primary.run_until("the next hand-off", |_| {
        next.extend(queued(&worker));
        (!next.is_empty()).then_some(())
    });
    assert_eq!(next.len(), 1, "one in flight whatever the credit: {next:?}");
    assert_eq!(primary.registry.connections_held(), 3, "one in flight, two pending");
    drop(clients);
}
