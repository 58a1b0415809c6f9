//! The `rr` hand-off: the primary accepts and sends each connection's descriptor to a worker
//! over its hand-off channel, keeping its copy until the worker acknowledges.

mod util;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use herd_registry::{HandoffStats, Key, Mode};
use util::{
    Primary, Worker, assert_closed_by_peer, assert_refused, connect_and_write, read_byte,
    tcp_address,
};

/// An `rr` primary with `workers` workers (ids 1, 2, ...) on one TCP handle.
fn rr(max_in_flight: usize, workers: u32) -> (Primary, Key, SocketAddr, Vec<Worker>) {
    let mut primary = Primary::new("rr", max_in_flight);
    let grants: Vec<_> =
        (1..=workers).map(|id| primary.query(id, "tcp://127.0.0.1:0", 0)).collect();
    let key = grants[0].key.clone();
    let address = tcp_address(&grants[0]);
    for grant in &grants {
        assert_eq!(grant.mode, Mode::Handoff);
        assert_eq!(tcp_address(grant), address, "every worker is told the one bound address");
    }
    let workers = (1..).zip(grants).map(|(id, grant)| Worker::new(id, grant)).collect();
    (primary, key, address, workers)
}

#[test]
fn sequential_connections_rotate_strictly_and_each_arrives_with_its_descriptor() {
    let (mut primary, key, address, workers) = rr(1, 2);
    let [w1, w2] = [&workers[0], &workers[1]];
    let mut order = Vec::new();
    let mut tokens = BTreeSet::new();
    for i in 0..10u8 {
        let client = connect_and_write(address, i);
        let (worker, received) = primary.next_conn(&[w1, w2]);
        assert!(tokens.insert(received.conn), "connection token {} reused", received.conn);
        let conn = received.conn;
        let mut stream = received.into_tcp();
        // It is the real connection: same peer, and the client's byte arrives on it.
        assert_eq!(stream.peer_addr().unwrap(), client.local_addr().unwrap());
        assert_eq!(read_byte(&mut stream), i);
        workers[worker as usize - 1].ack(conn, true);
        primary.run_until_delivered(&key, u64::from(i) + 1);
        order.push(worker);
    }
    assert_eq!(order, [1, 2, 1, 2, 1, 2, 1, 2, 1, 2]);
    assert_eq!(
        primary.registry.handoff_stats(&key),
        Some(HandoffStats {
            accepted: 10,
            delivered: 10,
            refused: 0,
            deferred: 0,
            exhausted: 0,
            send_errors: 0,
            closed_at_stop: 0,
        })
    );
    assert_eq!(primary.registry.connections_held(), 0, "acknowledged copies are closed");
}

#[test]
fn a_refused_connection_goes_to_the_next_worker() {
    let (mut primary, key, address, workers) = rr(1, 2);
    let [w1, w2] = [&workers[0], &workers[1]];
    let _client = connect_and_write(address, 7);

    let (worker, offered) = primary.next_conn(&[w1, w2]);
    assert_eq!(worker, 1, "the first connection goes to the first worker");
    w1.ack(offered.conn, false);
    drop(offered.fd); // a worker that refuses closes its copy

    let (worker, received) = primary.next_conn(&[w1, w2]);
    assert_eq!(worker, 2, "worker 1 refused it, so worker 2 gets it");
    assert_eq!(received.conn, offered.conn, "the same connection, offered again");
    let conn = received.conn;
    let mut stream = received.into_tcp();
    assert_eq!(read_byte(&mut stream), 7);
    w2.ack(conn, true);
    primary.run_until_delivered(&key, 1);
    assert_eq!(
        primary.registry.handoff_stats(&key),
        Some(HandoffStats {
            accepted: 1,
            delivered: 1,
            refused: 0,
            deferred: 0,
            exhausted: 0,
            send_errors: 0,
            closed_at_stop: 0
        })
    );
    assert_eq!(primary.registry.connections_held(), 0);
}

#[test]
fn a_connection_every_worker_refuses_is_closed_not_bounced() {
    let (mut primary, key, address, workers) = rr(1, 1);
    let w1 = &workers[0];
    let mut client = connect_and_write(address, 1);

    let (_, offered) = primary.next_conn(&[w1]);
    w1.ack(offered.conn, false);
    drop(offered.fd);
    primary.run_until("the refused connection closed", |registry| {
        (registry.handoff_stats(&key).expect("a hand-off handle").refused == 1).then_some(())
    });

    assert_eq!(
        primary.registry.handoff_stats(&key),
        Some(HandoffStats {
            accepted: 1,
            delivered: 0,
            refused: 1,
            deferred: 0,
            exhausted: 0,
            send_errors: 0,
            closed_at_stop: 0
        })
    );
    assert_eq!(primary.registry.connections_held(), 0, "the primary closed its copy");
    assert_closed_by_peer(&mut client);
    // No ping-pong: the worker that refused it is not offered it again.
    assert!(w1.try_conn().is_none(), "the refused connection came back");
}

#[test]
fn connections_in_flight_to_a_worker_that_dies_go_to_the_others() {
    let (mut primary, key, address, mut workers) = rr(4, 2);
    let w2 = workers.pop().expect("worker 2");
    let w1 = workers.pop().expect("worker 1");
    let clients: Vec<_> = (0..5u8).map(|i| connect_and_write(address, b'a' + i)).collect();

    // Worker 1 reads what it is sent but never acknowledges; worker 2 takes everything.
    let mut dying = Vec::new();
    let mut taken = Vec::new();
    primary.run_until("all 5 connections handed out", |_| {
        while let Some(received) = w1.try_conn() {
            dying.push(received);
        }
        while let Some(received) = w2.try_conn() {
            w2.ack(received.conn, true);
            taken.push(received);
        }
        (dying.len() + taken.len() == 5).then_some(())
    });
    assert!(!dying.is_empty(), "worker 1 holds some connections in flight");

    // Worker 1 dies: its channel end and everything it received close.
    drop(w1);
    drop(dying);
    primary.run_until("worker 1's connections reach worker 2", |_| {
        while let Some(received) = w2.try_conn() {
            w2.ack(received.conn, true);
            taken.push(received);
        }
        (taken.len() == 5).then_some(())
    });
    primary.run_until_delivered(&key, 5);

    // Each is a real connection, and every client's is there exactly once.
    let bytes: BTreeSet<u8> = taken.into_iter().map(|r| read_byte(&mut r.into_tcp())).collect();
    assert_eq!(bytes, (0..5).map(|i| b'a' + i).collect());
    assert_eq!(
        primary.registry.handoff_stats(&key),
        Some(HandoffStats {
            accepted: 5,
            delivered: 5,
            refused: 0,
            deferred: 0,
            exhausted: 0,
            send_errors: 0,
            closed_at_stop: 0
        })
    );
    assert_eq!(primary.registry.connections_held(), 0);
    assert!(w2.try_conn().is_none(), "no connection is handed out twice");
    drop(clients);
}

#[test]
fn releasing_the_last_worker_closes_connections_still_held() {
    let (mut primary, key, address, workers) = rr(1, 1);
    let w1 = &workers[0];
    let mut clients: Vec<_> = (0..3u8).map(|i| connect_and_write(address, i)).collect();
    primary.run_until("3 connections accepted", |registry| {
        (registry.handoff_stats(&key).expect("a hand-off handle").accepted == 3).then_some(())
    });
    // One in flight (unacknowledged), two queued.
    let offered = w1.try_conn().expect("one connection in flight to worker 1");
    drop(offered);
    assert_eq!(primary.registry.connections_held(), 3);

    assert!(primary.registry.release(1, &key));
    assert_eq!(primary.registry.connections_held(), 0);
    for client in &mut clients {
        assert_closed_by_peer(client);
    }
    assert_refused(address);
}

#[test]
fn a_worker_gets_no_second_connection_before_acknowledging_the_first() {
    // With max_in_flight 1, a worker that has not acknowledged gets nothing more: the next
    // connection waits in the primary for another worker.
    let (mut primary, key, address, workers) = rr(1, 1);
    let w1 = &workers[0];
    let _first = connect_and_write(address, 1);
    let (_, offered) = primary.next_conn(&[w1]);
    let _second = connect_and_write(address, 2);
    primary.run_until("the second connection accepted", |registry| {
        (registry.handoff_stats(&key).expect("a hand-off handle").accepted == 2).then_some(())
    });
    assert!(w1.try_conn().is_none(), "a second hand-off before the first was acknowledged");
    assert_eq!(primary.registry.connections_held(), 2);

    w1.ack(offered.conn, true);
    let (_, next) = primary.next_conn(&[w1]);
    assert_eq!(read_byte(&mut next.into_tcp()), 2);
}

#[test]
fn a_full_worker_queue_delays_connections_and_drops_none() {
    // The worker reads nothing until every client has connected, so its hand-off channel
    // fills up (a SEQPACKET queue holds a few hundred records); the rest must wait in the
    // primary, not count as refusals.
    const CLIENTS: usize = 600;
    let (mut primary, key, address, workers) = rr(CLIENTS, 1);
    let mut clients = Vec::new();
    // In batches, accepted as they come, so the kernel's backlog (511) never overflows.
    for batch in 0..CLIENTS / 100 {
        clients.extend((0..100).map(|i| connect_and_write(address, (batch * 100 + i) as u8)));
        primary.run_until("the batch accepted", |registry| {
            (registry.handoff_stats(&key).unwrap().accepted == clients.len() as u64).then_some(())
        });
    }
    let mut received = 0;
    primary.run_until("every connection received by the worker", |_| {
        // A few acks a turn: the worker and the primary share this thread, so acks must not
        // fill the channel faster than the primary reads them (a batch a wake-up) or the
        // worker's blocking send would wait for a primary that never runs.
        for _ in 0..16 {
            let Some(conn) = workers[0].try_conn() else { break };
            workers[0].ack(conn.conn, true);
            received += 1;
        }
        (received == CLIENTS).then_some(())
    });
    primary.run_until_delivered(&key, CLIENTS as u64);
    assert_eq!(primary.registry.handoff_stats(&key).unwrap().refused, 0);
    drop(clients);
}

/// Whether a descriptor is `O_NONBLOCK` (octal 04000 in `/proc/self/fdinfo`'s `flags`).
fn is_nonblocking(fd: impl std::os::fd::AsFd) -> bool {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
    let info = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).expect("a flags line");
    u32::from_str_radix(flags.trim(), 8).expect("octal flags") & 0o4000 != 0
}

/// Each hand-off says who the client is (the address the primary's accept got, so the worker
/// needs no `getpeername`) and whether the descriptor is nonblocking: blocking until every
/// worker of the handle asked for nonblocking connections, nonblocking from then on.
#[test]
fn a_hand_off_carries_the_peer_and_is_nonblocking_once_every_worker_asked() {
    use herd_registry::wire::{FromWorker, ToWorker};
    let (mut primary, _key, address, workers) = rr(8, 2);
    let next = |primary: &mut Primary, workers: &[Worker]| {
        let client = connect_and_write(address, 7);
        let (conn, fds) = primary.run_until("a hand-off", |_| {
            workers.iter().find_map(|w| w.channel.try_recv_value::<ToWorker>().ok())
        });
        let ToWorker::NewConn { tcp_peer, nonblocking, .. } = conn;
        let fd = fds.into_iter().next().expect("the connection's descriptor");
        assert_eq!(tcp_peer, Some(client.local_addr().unwrap()), "the client's address");
        assert_eq!(is_nonblocking(&fd), nonblocking, "the flag says what the descriptor is");
        nonblocking
    };
    assert!(!next(&mut primary, &workers), "blocking by default");
    workers[0].send(&FromWorker::EventLoop);
    // One worker asked, the other did not: still blocking (it would have to switch it).
    primary.run_until("worker 1's message read", |_| Some(()));
    assert!(!next(&mut primary, &workers));
    assert!(!next(&mut primary, &workers));
    workers[1].send(&FromWorker::EventLoop);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next(&mut primary, &workers));
    }
    assert!(seen.ends_with(&[true, true]), "nonblocking once both asked: {seen:?}");
}

/// With the cluster's bound of 1 (Node's), a worker gets its next connection only after
/// acknowledging the last; one that said it is an event loop gets up to 8 unacknowledged, so a
/// wake-up's connections go to it together.
#[test]
fn an_event_loop_worker_takes_several_hand_offs_unacknowledged() {
    use herd_registry::wire::{FromWorker, ToWorker};
    let (mut primary, key, address, workers) = rr(1, 1);
    let clients: Vec<_> = (0..3).map(|i| connect_and_write(address, i)).collect();
    primary.run_until("three connections accepted", |registry| {
        (registry.handoff_stats(&key).expect("a hand-off handle").accepted == 3).then_some(())
    });
    fn queued(w: &Worker) -> usize {
        std::iter::from_fn(|| w.channel.try_recv_value::<ToWorker>().ok()).count()
    }
    assert_eq!(queued(&workers[0]), 1, "one in flight before");
    workers[0].send(&FromWorker::EventLoop);
    let mut got = 0;
    primary.run_until("the other two sent without an ack", |_| {
        got += queued(&workers[0]);
        (got == 2).then_some(())
    });
    assert_eq!(primary.registry.connections_held(), 3, "none acknowledged yet");
    drop(clients);
}

/// A thread-per-connection worker's credit: an ack saying `idle` threads still wait in
/// `accept` lets the primary have that many hand-offs in flight to it (sent together), and an
/// ack saying none brings it back to the cluster's bound of 1, so no connection waits at a
/// worker whose threads are all busy.
#[test]
fn a_thread_worker_takes_as_many_hand_offs_as_it_has_threads_waiting() {
    use herd_registry::wire::ToWorker;
    let (mut primary, key, address, workers) = rr(1, 1);
    let worker = &workers[0];
    let clients: Vec<_> = (0..6).map(|i| connect_and_write(address, i)).collect();
    primary.run_until("six connections accepted", |registry| {
        (registry.handoff_stats(&key).expect("a hand-off handle").accepted == 6).then_some(())
    });
    let queued = |w: &Worker| -> Vec<u64> {
        std::iter::from_fn(|| w.channel.try_recv_value::<ToWorker>().ok())
            .map(|(ToWorker::NewConn { conn, .. }, _)| conn)
            .collect()
    };
    let first = queued(worker);
    assert_eq!(first.len(), 1, "one in flight before any credit");
    // Three threads still wait: three more, unacknowledged.
    worker.ack_idle(first[0], true, 3);
    let mut batch = Vec::new();
    primary.run_until("three sent on the credit", |_| {
        batch.extend(queued(worker));
        (batch.len() >= 3).then_some(())
    });
    assert_eq!(batch.len(), 3, "as many as threads wait: {batch:?}");
    // The threads are busy now: two in flight is above the bound of 1, so nothing more comes.
    worker.ack_idle(batch[0], true, 0);
    primary.run_until_delivered(&key, 2);
    assert_eq!(queued(worker), Vec::<u64>::new(), "no hand-off beyond the waiting threads");
    worker.ack_idle(batch[1], true, 0);
    worker.ack_idle(batch[2], true, 0);
    primary.run_until_delivered(&key, 4);
    let mut next = Vec::new();
    primary.run_until("the next one sent", |_| {
        next.extend(queued(worker));
        (!next.is_empty()).then_some(())
    });
    assert_eq!(next.len(), 1, "back to one in flight: {next:?}");
    assert_eq!(primary.registry.connections_held(), 2, "one in flight, one pending");
    drop(clients);
}

/// An event loop waits in no `accept`, so its acks say no thread waits: that credit does not
/// lower its own bound of 8.
#[test]
fn an_event_loop_workers_bound_ignores_the_credit_of_its_acks() {
    use herd_registry::wire::{FromWorker, ToWorker};
    let (mut primary, key, address, workers) = rr(1, 1);
    let worker = &workers[0];
    worker.send(&FromWorker::EventLoop);
    let queued = |w: &Worker| -> Vec<u64> {
        std::iter::from_fn(|| w.channel.try_recv_value::<ToWorker>().ok())
            .map(|(ToWorker::NewConn { conn, .. }, _)| conn)
            .collect()
    };
    let first_client = connect_and_write(address, 0);
    let mut first = Vec::new();
    primary.run_until("the first hand-off", |_| {
        first.extend(queued(worker));
        (!first.is_empty()).then_some(())
    });
    worker.ack_idle(first[0], true, 0);
    primary.run_until_delivered(&key, 1);
    let clients: Vec<_> = (1..4).map(|i| connect_and_write(address, i)).collect();
    let mut batch = Vec::new();
    primary.run_until("three sent unacknowledged", |_| {
        batch.extend(queued(worker));
        (batch.len() >= 3).then_some(())
    });
    assert_eq!(batch.len(), 3);
    drop((first_client, clients));
}
