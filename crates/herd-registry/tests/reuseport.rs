//! The `reuseport` policy: one `SO_REUSEPORT` listening socket per worker slot, kept by the
//! primary, so a replacement worker inherits its predecessor's socket.

mod util;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

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
fn a_replacement_worker_inherits_the_released_workers_socket_and_queue() {
    let mut primary = Primary::new("reuseport", 1);
    let first = primary.query(1, "tcp://127.0.0.1:0", 0);
    let second = primary.query(2, "tcp://127.0.0.1:0", 0);
    let key = first.key.clone();
    let (slot0, slot1) = (inode(&first.fd), inode(&second.fd));
    let address = tcp_address(&first);
    let listener2 = Listener::from_fd(second.fd).expect("a listening socket");

    // Worker 1 dies: its slot's socket stays for a replacement. (The test still looks at its
    // descriptor, only to see where the kernel queues connections.)
    primary.registry.remove_worker(1, true);
    assert_eq!(primary.registry.workers_of(&key), [2]);

    // The kernel hashes each connection to one of the two sockets: connect until one is
    // queued on worker 1's old socket, letting worker 2 take those that land on its own.
    let mut clients = Vec::new();
    let mut queued = None;
    for i in 0..64u8 {
        let mut client = connect(address);
        client.write_all(&[i]).unwrap();
        clients.push(client);
        match ready_among([first.fd.as_fd(), listener2.as_fd()]) {
            0 => {
                queued = Some(i);
                break;
            }
            _ => drop(accept(&listener2)),
        }
    }
    let queued = queued.expect("no connection out of 64 was queued on slot 0's socket");
    drop(first); // worker 1's copy is gone; only the primary keeps slot 0's socket open

    // Worker 3 is given slot 0: worker 1's socket, with the connection still queued on it.
    let third = primary.query(3, "tcp://127.0.0.1:0", 0);
    assert_eq!(inode(&third.fd), slot0, "worker 3 takes worker 1's slot socket");
    assert_ne!(inode(&third.fd), slot1);
    assert_eq!(tcp_address(&third), address);
    assert_eq!(primary.registry.workers_of(&key), [2, 3]);
    let listener3 = Listener::from_fd(third.fd).expect("a listening socket");
    let mut server = accept(&listener3);
    let mut byte = [0];
    server.read_exact(&mut byte).unwrap();
    assert_eq!(byte[0], queued, "the queued connection survived the change of worker");
}

/// Waits until one of `fds` is readable, at most [`util::DEADLINE`], and returns its index.
#[track_caller]
fn ready_among<const N: usize>(fds: [BorrowedFd<'_>; N]) -> usize {
    let mut pollfds =
        fds.map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
    let timeout = libc::c_int::try_from(util::DEADLINE.as_millis()).expect("a short deadline");
    let count = libc::nfds_t::try_from(N).expect("few descriptors");
    // SAFETY: `pollfds` is valid for `count` entries for the call; the descriptors are
    // borrowed, so open.
    let n = unsafe { libc::poll(pollfds.as_mut_ptr(), count, timeout) };
    assert!(
        n > 0,
        "none readable within {:?}: {}",
        util::DEADLINE,
        std::io::Error::last_os_error()
    );
    pollfds.iter().position(|p| p.revents & libc::POLLIN != 0).expect("one is readable")
}

#[test]
fn unix_sockets_under_reuseport_are_shared() {
    // A unix path cannot be bound once per slot; it is shared as under `none`.
    let dir = util::TempDir::new("reuseport-unix");
    let spec = format!("unix://{}", dir.join("s.sock").display());
    let mut primary = util::Primary::new("reuseport", 1);
    let first = primary.query(1, &spec, 0);
    let second = primary.query(2, &spec, 0);
    assert_eq!(util::inode(&first.fd), util::inode(&second.fd));
}

/// A worker that closes its listener stays in its place, so nobody else will take its slot:
/// the slot's socket leaves the group at once, even while the worker's duplicate is open, and
/// every new connection goes to the slots that are held. A vacated slot does the same.
#[test]
fn a_slot_nobody_will_take_leaves_the_group() {
    let mut primary = Primary::new("reuseport", 1);
    let first = primary.query(1, "tcp://127.0.0.1:0", 0);
    let second = primary.query(2, "tcp://127.0.0.1:0", 0);
    let third = primary.query(3, "tcp://127.0.0.1:0", 0);
    let key = first.key.clone();
    let address = tcp_address(&first);
    let closed = Listener::from_fd(first.fd).expect("a listening socket");
    let kept = Listener::from_fd(second.fd).expect("a listening socket");
    let vacated = Listener::from_fd(third.fd).expect("a listening socket");

    assert!(!primary.registry.release(1, &key), "workers 2 and 3 still listen");
    // Worker 3 dies and nobody is coming to its place: the primary vacates its slot.
    primary.registry.remove_worker(3, false);
    primary.registry.vacate_slot(2);
    for (name, gone) in [("closed", &closed), ("vacated", &vacated)] {
        let error = gone.try_accept().expect_err("no longer listening");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{name}: {error}");
    }
    // Out of the group: every new connection reaches worker 2's socket.
    for i in 0..32u8 {
        let mut client = connect(address);
        client.write_all(&[i]).unwrap();
        assert_eq!(ready_among([kept.as_fd()]), 0);
        let mut server = accept(&kept);
        let mut byte = [0];
        server.read_exact(&mut byte).unwrap();
        assert_eq!(byte[0], i);
    }
}
