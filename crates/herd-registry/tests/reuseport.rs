//! The `reuseport` policy: one `SO_REUSEPORT` listening socket per worker slot, kept by the
//! primary, so a replacement worker inherits its predecessor's socket.

mod util;

use std::io::{Read, Write};

use herd_handle::Listener;
use herd_registry::Mode;
use util::{Primary, accept, connect, inode, reuse_port, tcp_address};

#[test]
fn each_worker_gets_its_own_socket_on_the_same_address() {
    let mut primary = Primary::new("reuseport", 1);
    let first = primary.query(1, "tcp://127.0.0.1:0", 0);
    let second = primary.query(2, "tcp://127.0.0.1:0", 0);
    assert_eq!(first.key, second.key, "one handle, one key");
    assert_eq!((first.mode, second.mode), (Mode::Listener, Mode::Listener));
    assert_eq!(first.key.to_string(), "127.0.0.1:0:4:undefined:0");

    let address = tcp_address(&first);
    assert_ne!(address.port(), 0);
    assert_eq!(tcp_address(&second), address);
    assert_ne!(inode(&first.fd), inode(&second.fd), "two sockets, not two descriptors of one");
    assert!(reuse_port(&first.fd) && reuse_port(&second.fd), "both are SO_REUSEPORT");
    assert_eq!(primary.registry.handoff_stats(&first.key), None);

    // Both listen on that one address: each is a listening socket bound to it.
    for grant in [first, second] {
        let listener = Listener::from_fd(grant.fd).expect("a listening socket");
        assert_eq!(listener.local_addr().unwrap().socket_addr(), Some(address));
    }
}

#[test]
fn a_replacement_worker_inherits_the_released_workers_socket() {
    let mut primary = Primary::new("reuseport", 1);
    let first = primary.query(1, "tcp://127.0.0.1:0", 0);
    let second = primary.query(2, "tcp://127.0.0.1:0", 0);
    let key = first.key.clone();
    let (slot0, slot1) = (inode(&first.fd), inode(&second.fd));
    let address = tcp_address(&first);

    // Worker 1 goes away; a connection queued on its slot's socket meanwhile stays queued,
    // since the primary keeps the socket open.
    drop(first);
    assert!(!primary.registry.release(1, &key));

    let third = primary.query(3, "tcp://127.0.0.1:0", 0);
    assert_eq!(inode(&third.fd), slot0, "worker 3 takes worker 1's slot socket");
    assert_ne!(inode(&third.fd), slot1);
    assert_eq!(tcp_address(&third), address);
    assert_eq!(primary.registry.workers_of(&key), [2, 3]);

    // The inherited socket works: worker 3 accepts on it.
    let listener = Listener::from_fd(third.fd).expect("a listening socket");
    drop(second); // worker 2's socket keeps listening in the primary, but nobody accepts on it
    let mut got = None;
    for i in 0..64u8 {
        // The kernel hashes each connection to one of the two sockets: keep connecting until
        // one lands on worker 3's, reading whatever arrives.
        let mut client = connect(address);
        client.write_all(&[i]).unwrap();
        if listener_ready(&listener) {
            let mut server = accept(&listener);
            let mut byte = [0];
            server.read_exact(&mut byte).unwrap();
            got = Some(byte[0]);
            break;
        }
    }
    assert!(got.is_some(), "no connection out of 64 reached worker 3's socket");
}

/// Whether a connection is queued on `listener` right now (a zero-timeout `poll(2)`).
fn listener_ready(listener: &Listener) -> bool {
    use std::os::fd::AsRawFd;
    let mut pollfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the call; the descriptor stays open (borrowed from listener).
    let n = unsafe { libc::poll(&mut pollfd, 1, 0) };
    n == 1
}
