//! The `none` policy's shared handles: one bind per key, a duplicate for every worker, failed
//! binds that store nothing, and the last worker out closing the socket.

mod util;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;

use herd_handle::{Listener, Spec};
use herd_registry::{Key, Mode};
use util::{Primary, TempDir, accept, assert_refused, connect, inode, tcp_address};

#[test]
fn workers_share_one_bind_per_key_and_another_index_binds_again() {
    let mut primary = Primary::new("none", 1);
    let first = primary.query(1, "tcp://127.0.0.1:0", 0);
    let second = primary.query(2, "tcp://127.0.0.1:0", 0);
    let other_index = primary.query(1, "tcp://127.0.0.1:0", 1);

    // Keys are spelled as Node's primary spells them, with the port asked for (0).
    assert_eq!(first.key.to_string(), "127.0.0.1:0:4:undefined:0");
    assert_eq!(second.key, first.key);
    assert_eq!(other_index.key.to_string(), "127.0.0.1:0:4:undefined:1");
    assert_eq!((first.mode, second.mode), (Mode::Listener, Mode::Listener));

    // Bound once: one socket, so one real port, shared by both workers.
    let address = tcp_address(&first);
    assert_ne!(address.port(), 0, "the grant reports the real port");
    assert_eq!(tcp_address(&second), address);
    assert_eq!(inode(&first.fd), inode(&second.fd), "both workers hold the same socket");
    assert_eq!(primary.registry.workers_of(&first.key), [1, 2]);

    // Index 1 is a handle of its own: another bind, another port, another socket.
    assert_ne!(tcp_address(&other_index).port(), address.port());
    assert_ne!(inode(&other_index.fd), inode(&first.fd));
    assert_eq!(primary.registry.keys().count(), 2);

    // Both grants accept: each worker takes one connection off the shared queue.
    let listeners = [first, second].map(|g| Listener::from_fd(g.fd).expect("a listening socket"));
    for (i, listener) in listeners.iter().enumerate() {
        let mut client = connect(address);
        let mut server = accept(listener);
        client.write_all(&[i as u8]).unwrap();
        let mut byte = [0];
        server.read_exact(&mut byte).unwrap();
        assert_eq!(byte[0], i as u8, "worker {} got the client's connection", i + 1);
    }
}

#[test]
fn failed_bind_reports_the_errno_and_address_stores_nothing_and_can_be_retried() {
    for policy in ["none", "rr", "least-conn", "reuseport"] {
        let mut primary = Primary::new(policy, 1);
        let blocker = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = blocker.local_addr().unwrap();
        let spec: Spec = format!("tcp://{taken}").parse().unwrap();

        let error =
            primary.registry.query(1, &spec, 0, &Default::default()).expect_err("port is taken");
        assert_eq!(error.raw_os_error(), Some(libc::EADDRINUSE), "{policy}: {error}");
        assert!(error.to_string().contains(&taken.to_string()), "{policy}: {error} names {taken}");
        assert!(primary.registry.is_empty(), "{policy}: a failed bind stores nothing");
        assert!(primary.registry.workers_of(&Key::new(&spec, 0)).is_empty());

        // The error was not stored: once the port is free, the next query binds.
        drop(blocker);
        let grant = primary
            .registry
            .query(2, &spec, 0, &Default::default())
            .unwrap_or_else(|e| panic!("{policy}: retry after the port was freed: {e}"));
        assert_eq!(tcp_address(&grant), taken, "{policy}");
        assert_eq!(primary.registry.workers_of(&grant.key), [2], "{policy}");
    }
}

#[test]
fn last_worker_out_closes_the_socket() {
    let mut primary = Primary::new("none", 1);
    let first = primary.query(1, "tcp://127.0.0.1:0", 0);
    let second = primary.query(2, "tcp://127.0.0.1:0", 0);
    let address = tcp_address(&first);
    let key = first.key.clone();
    // The workers close their duplicates, so only the primary's copy keeps the socket open.
    drop((first, second));

    assert!(!primary.registry.release(1, &key), "worker 2 still holds the handle");
    assert_eq!(primary.registry.workers_of(&key), [2]);
    drop(connect(address)); // still listening
    assert!(!primary.registry.release(1, &key), "a second release by worker 1 closes nothing");

    assert!(primary.registry.release(2, &key), "the last worker out closes the handle");
    assert!(primary.registry.is_empty());
    assert_refused(address);
    assert!(!primary.registry.release(2, &key), "nothing is left to close");
}

/// A port-0 key keeps its port for the registry's life: the handle closes with its last
/// worker, and the next query for the key binds the same port again, under every policy; only
/// a port another process took meanwhile is given up for a new one (kept from then on).
#[test]
fn a_port_0_key_binds_its_first_port_again_after_its_handle_closed() {
    for policy in ["none", "rr", "least-conn", "reuseport"] {
        let mut primary = Primary::new(policy, 1);
        let first = primary.query(1, "tcp://127.0.0.1:0", 0);
        let (address, key) = (tcp_address(&first), first.key.clone());
        drop(first);
        assert!(primary.registry.release(1, &key), "{policy}: the last worker out closes it");
        assert_refused(address);

        let again = primary.query_in_place(2, "tcp://127.0.0.1:0", 0);
        assert_eq!(tcp_address(&again), address, "{policy}: the same port again");
        drop(again);
        assert!(primary.registry.release(2, &key), "{policy}");

        // Taken by someone else meanwhile: a new port rather than no handle at all.
        let thief = TcpListener::bind(address).expect("bind the freed port");
        let moved = primary.query(3, "tcp://127.0.0.1:0", 0);
        let new_address = tcp_address(&moved);
        assert_ne!(new_address, address, "{policy}");
        drop((moved, thief));
        assert!(primary.registry.release(3, &key), "{policy}");
        let last = primary.query(4, "tcp://127.0.0.1:0", 0);
        assert_eq!(tcp_address(&last), new_address, "{policy}: the new port is kept");
    }
}

#[test]
fn last_worker_out_removes_the_unix_socket_file() {
    let dir = TempDir::new("unix");
    let path = dir.join("app.sock");
    let spec = format!("unix://{}", path.display());
    let mut primary = Primary::new("none", 1);
    let first = primary.query(1, &spec, 0);
    let second = primary.query(2, &spec, 0);
    assert_eq!(first.key.to_string(), format!("{}:-1:-1:undefined:0", path.display()));
    assert_eq!(first.address, Spec::Unix(path.clone()));
    assert_eq!(inode(&first.fd), inode(&second.fd));
    let key = first.key.clone();
    drop((first, second));

    assert!(!primary.registry.release(2, &key));
    let file =
        std::fs::symlink_metadata(&path).expect("the socket file stays while a worker listens");
    assert!(file.file_type().is_socket());
    drop(UnixStream::connect(&path).expect("still listening"));

    assert!(primary.registry.release(1, &key));
    assert!(!path.exists(), "the primary removes the socket file it created");
    let error = UnixStream::connect(&path).expect_err("nothing listens");
    assert_eq!(error.raw_os_error(), Some(libc::ENOENT), "{error}");
}

#[test]
fn remove_worker_releases_every_key_it_held() {
    let mut primary = Primary::new("none", 1);
    let shared = primary.query(1, "tcp://127.0.0.1:0", 0);
    let own = primary.query(1, "tcp://127.0.0.1:0", 1);
    let other = primary.query(2, "tcp://127.0.0.1:0", 0);
    let (shared_address, own_address) = (tcp_address(&shared), tcp_address(&own));
    let (shared_key, own_key) = (shared.key.clone(), own.key.clone());
    drop((shared, own, other));

    primary.registry.remove_worker(1, false);
    assert_eq!(primary.registry.keys().collect::<Vec<_>>(), [&shared_key]);
    assert_eq!(primary.registry.workers_of(&shared_key), [2]);
    assert!(primary.registry.workers_of(&own_key).is_empty());
    assert_refused(own_address);
    drop(connect(shared_address)); // worker 2 still listens there

    primary.registry.remove_worker(2, false);
    assert!(primary.registry.is_empty());
    assert_refused(shared_address);
}

/// herd removes only the socket file it created. A deploy's new instance that binds the same
/// path while the old cluster drains (it removes the old file and binds its own) keeps its
/// file when the old cluster's last worker leaves.
#[test]
fn last_worker_out_leaves_a_socket_file_another_process_bound_since() {
    let dir = TempDir::new("unix-replaced");
    let path = dir.join("app.sock");
    let spec = format!("unix://{}", path.display());
    let mut primary = Primary::new("none", 1);
    let grant = primary.query(1, &spec, 0);
    let key = grant.key.clone();
    drop(grant);

    // The new instance: the path is taken over by a socket of its own.
    std::fs::remove_file(&path).unwrap();
    let newcomer = std::os::unix::net::UnixListener::bind(&path).unwrap();

    assert!(primary.registry.release(1, &key), "the last worker out closes the handle");
    assert!(
        std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()),
        "the newcomer's socket file was removed"
    );
    let _client = UnixStream::connect(&path).expect("the newcomer is reachable");
    newcomer.accept().expect("and accepts");
}

/// The last worker of a handle dies and its place will be respawned: the handle stays open for
/// the replacement (same socket, same port, the connections queued meanwhile), under every
/// policy. Nobody coming (`vacate_slot`) or the replacement not listening in time
/// (`expire_awaiting`) closes it.
#[test]
fn a_handle_waits_for_the_respawn_of_its_last_workers_place() {
    for policy in ["none", "rr", "least-conn", "reuseport"] {
        for end in ["respawned", "vacated", "expired"] {
            let mut primary = Primary::new(policy, 1);
            let first = primary.query_in_place(1, "tcp://127.0.0.1:0", 0);
            let (key, address) = (first.key.clone(), tcp_address(&first));
            drop(first);
            primary.registry.remove_worker(1, true);
            assert_eq!(primary.registry.keys().count(), 1, "{policy}: the handle waits");
            let queued = connect(address); // completes: something still listens there
            match end {
                "respawned" => {
                    let second = primary.query_in_place(2, "tcp://127.0.0.1:0", 0);
                    assert_eq!(tcp_address(&second), address, "{policy}: the same port");
                    assert_eq!(primary.registry.workers_of(&key), [2]);
                    drop(second);
                    // Worker 2 leaves with no replacement coming: the handle closes.
                    primary.registry.remove_worker(2, false);
                }
                "vacated" => primary.registry.vacate_slot(0),
                _ => primary.registry.expire_awaiting(0),
            }
            assert!(primary.registry.is_empty(), "{policy}, {end}: the handle closed");
            assert_refused(address);
            drop(queued);
        }
    }
}
