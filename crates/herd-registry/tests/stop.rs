//! A graceful stop (`Registry::stop_listening`): every stream handle stops taking connections at
//! once for every holder, connections in flight to a worker are still its own, and the handle
//! is detached from its key until its last worker leaves.

mod util;

use std::net::TcpListener;

use herd_handle::{Listener, Spec};
use herd_registry::Key;
use util::{
    Primary, Worker, accept, assert_closed_by_peer, assert_refused, connect_and_write, inode,
    read_byte, tcp_address,
};

/// Under every policy: after the stop a client is refused at once, though two workers still
/// hold the handle; the table keeps the handle until both leave; a query for the same key
/// after the stop binds a new socket, which serves, and the old handle's leaving workers do
/// not touch it.
#[test]
fn a_stop_refuses_new_connections_at_once_and_detaches_the_handle_from_its_key() {
    for policy in ["none", "rr", "least-conn", "reuseport"] {
        // A fixed port: the new bind must get it back while the stopped socket is still held.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let spec = format!("tcp://127.0.0.1:{port}");
        let mut primary = Primary::new(policy, 1);
        let first = primary.query(1, &spec, 0);
        let second = primary.query(2, &spec, 0);
        let address = tcp_address(&first);
        let key = first.key.clone();

        primary.registry.stop_listening();
        assert_refused(address);
        assert!(!primary.registry.is_empty(), "{policy}: held by workers 1 and 2");
        assert_eq!(primary.registry.workers_of(&key), [1, 2], "{policy}");

        // Worker 3 asks for the same key: a new socket on the same port.
        let third = primary.query(3, &spec, 0);
        assert_eq!(tcp_address(&third), address, "{policy}: the same address");
        assert_ne!(inode(&third.fd), inode(&first.fd), "{policy}: a new socket");
        assert_eq!(primary.registry.keys().filter(|k| **k == key).count(), 2, "{policy}");
        assert_eq!(primary.registry.workers_of(&key), [3], "{policy}: queries join the new one");

        // The old holders leave: the stopped handle closes, the new one stays.
        assert!(!primary.registry.release(1, &key), "{policy}: worker 2 still holds it");
        assert!(primary.registry.release(2, &key), "{policy}: the last one out closes it");
        assert_eq!(primary.registry.keys().collect::<Vec<&Key>>(), [&key]);
        drop((first, second));

        // The new handle serves.
        let client = connect_and_write(address, 9);
        let mut server = match policy {
            "rr" | "least-conn" => {
                let worker = Worker::new(3, third);
                let (_, received) = primary.next_conn(&[&worker]);
                worker.ack(received.conn, true);
                received.into_tcp()
            }
            _ => {
                let listener = Listener::from_fd(third.fd).unwrap();
                match accept(&listener) {
                    herd_handle::Stream::Tcp(stream) => stream,
                    other => panic!("{policy}: {other:?}"),
                }
            }
        };
        assert_eq!(read_byte(&mut server), 9, "{policy}");
        drop(client);
        assert!(primary.registry.release(3, &key), "{policy}");
        assert!(primary.registry.is_empty(), "{policy}");
    }
}

/// Under `rr`: a connection in flight to a worker when the stop begins is still that worker's
/// (its ack counts, and it serves the client); one the primary accepted that no worker took is
/// closed at once rather than held until the last worker leaves.
#[test]
fn a_stop_closes_the_connections_no_worker_took_and_leaves_those_in_flight_to_their_worker() {
    let mut primary = Primary::new("rr", 1);
    let grant = primary.query(1, "tcp://127.0.0.1:0", 0);
    let key = grant.key.clone();
    let address = tcp_address(&grant);
    let worker = Worker::new(1, grant);

    let _in_flight = connect_and_write(address, 1);
    let (_, received) = primary.next_conn(&[&worker]);
    // The worker has one in flight (max_in_flight 1): the second waits in the primary.
    let mut pending = connect_and_write(address, 2);
    primary.run_until("the second connection accepted", |registry| {
        (registry.handoff_stats(&key)?.accepted == 2).then_some(())
    });
    assert_eq!(primary.registry.connections_held(), 2);

    // What `Primary::disconnect_all` does: retire every worker, then stop.
    primary.registry.retire_worker(1);
    primary.registry.stop_listening();
    assert_refused(address);
    assert_closed_by_peer(&mut pending);
    let stats = primary.registry.handoff_stats(&key).unwrap();
    assert_eq!((stats.closed_at_stop, stats.delivered), (1, 0), "{stats:?}");
    assert_eq!(primary.registry.connections_held(), 1, "the one in flight is kept");

    worker.ack(received.conn, true);
    primary.run_until_delivered(&key, 1);
    assert_eq!(primary.registry.connections_held(), 0);
    let mut stream = received.into_tcp();
    assert_eq!(read_byte(&mut stream), 1, "the worker serves the connection it took");
    assert!(primary.registry.release(1, &key));
    assert!(primary.registry.is_empty());
}

/// A stop leaves UDP sockets as they are (no connection to refuse): the key keeps its socket,
/// which a later query joins.
#[test]
fn a_stop_leaves_udp_sockets_bound() {
    let mut primary = Primary::new("rr", 1);
    let first = primary.query(1, "udp://127.0.0.1:0", 0);
    primary.registry.stop_listening();
    let second = primary.query(2, "udp://127.0.0.1:0", 0);
    assert_eq!(inode(&first.fd), inode(&second.fd), "the same socket");
    let spec: Spec = "udp://127.0.0.1:0".parse().unwrap();
    assert_eq!(primary.registry.workers_of(&Key::new(&spec, 0)), [1, 2]);
}
