//! Listening through the primary, end to end: shared and fixed ports, indexes, exclusive
//! listens, unix sockets, UDP, bind errors and retries, and the last worker out closing the
//! socket. A primary in this test process, `cluster-worker` fixtures as its workers.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use herd::{Event, Policy};
use herd_tests::cluster::{TestCluster, fixture_settings, free_ports, greeting_worker, respawning};
use herd_tests::{DEADLINE, may_fork, no_forks_elsewhere};

const WORKER: &str = env!("CARGO_BIN_EXE_cluster-worker");

fn cluster(policy: &str) -> TestCluster {
    TestCluster::new(WORKER, Some(policy.parse::<Policy>().unwrap()))
}

/// The greeting at `address` (`tcp://` or `host:port`), read without running the primary's
/// loop: only a worker accepting on a real socket can answer.
fn fetch_without_primary(address: &str) -> String {
    let mut stream = TcpStream::connect(address.trim_start_matches("tcp://")).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap_or_else(|e| panic!("read from {address}: {e}"));
    text
}

/// The port of a `tcp://` or `udp://` address.
fn port(address: &str) -> u16 {
    let spec: herd::Spec = address.parse().unwrap();
    spec.port().unwrap_or_else(|| panic!("no port in {address}"))
}

#[test]
fn eight_workers_share_two_fixed_ports_and_bind_them_again_after_closing() {
    // Asserts that closed sockets are closed: no other test's child may hold a copy.
    let _forks = no_forks_elsewhere();
    for policy in ["rr", "none"] {
        let mut c = cluster(policy);
        let ids = c.fork_online(8);
        let ports = free_ports(2);
        let mut expected: Vec<String> =
            ports.iter().map(|p| format!("127.0.0.1:{p}:4:undefined:0")).collect();
        expected.sort();
        for round in 1..=2 {
            let mut held = Vec::new();
            for &id in &ids {
                for &port in &ports {
                    let spec = format!("tcp://127.0.0.1:{port}");
                    let (n, address) = c.listen(id, &spec, "");
                    assert_eq!(address, spec, "{policy} round {round} worker {id}");
                    held.push((id, n));
                }
            }
            assert_eq!(c.primary.handles(), expected, "{policy} round {round}: one per port");
            for &port in &ports {
                for _ in 0..5 {
                    let greeting = c.fetch(&format!("127.0.0.1:{port}"));
                    assert!(ids.contains(&greeting_worker(&greeting)), "{policy}: {greeting:?}");
                }
            }
            for (id, n) in held {
                c.close(id, n);
            }
            c.pump_until(&format!("{policy} round {round}: every handle closed"), |c| {
                c.primary.handles().is_empty()
            });
        }
    }
}

#[test]
fn under_none_a_worker_accepts_on_the_real_shared_socket() {
    let _forks = may_fork();
    let mut c = cluster("none");
    let ids = c.fork_online(2);
    let (_, address, kind) = c.listen_kind(ids[0], "tcp://127.0.0.1:0", "");
    assert_eq!(kind, "socket");
    let (_, same, kind) = c.listen_kind(ids[1], "tcp://127.0.0.1:0", "");
    assert_eq!((same.as_str(), kind.as_str()), (address.as_str(), "socket"));
    // The primary's loop does not run from here on: every connection is accepted by a worker
    // on its copy of the one socket.
    let mut served = BTreeSet::new();
    for _ in 0..300 {
        served.insert(greeting_worker(&fetch_without_primary(&address)));
        if served.len() == ids.len() {
            break;
        }
    }
    assert_eq!(served, ids.iter().copied().collect(), "workers that served");
}

#[test]
fn the_listening_answer_and_event_carry_the_same_real_port() {
    let _forks = may_fork();
    for policy in ["rr", "none", "least-conn", "reuseport"] {
        let mut c = cluster(policy);
        let ids = c.fork_online(2);
        let mut first = None;
        for &id in &ids {
            let (_, address, kind) = c.listen_kind(id, "tcp://127.0.0.1:0", "");
            let handoff = matches!(policy, "rr" | "least-conn");
            assert_eq!(kind, if handoff { "handoff" } else { "socket" }, "{policy}");
            assert_ne!(port(&address), 0, "{policy}: worker {id} answered the real port");
            let event = c.wait_for(
                &format!("{policy}: worker {id} listening"),
                |e| matches!(e, Event::Listening { worker, .. } if *worker == id),
            );
            let Event::Listening { address: reported, .. } = event else { unreachable!() };
            assert_eq!(reported.to_string(), address, "{policy}: worker {id}");
            assert_eq!(*first.get_or_insert(address.clone()), address, "{policy}: one port");
        }
    }
}

#[test]
fn two_listens_on_one_address_in_one_worker_are_two_binds() {
    let _forks = may_fork();
    for policy in ["rr", "none"] {
        let mut c = cluster(policy);
        let [a, b] = c.fork_online(2)[..] else { unreachable!() };
        let (_, first) = c.listen(a, "tcp://127.0.0.1:0", "");
        let (_, second) = c.listen(a, "tcp://127.0.0.1:0", "");
        assert_ne!(first, second, "{policy}: index 0 and index 1 are separate binds");
        assert_ne!(port(&second), 0, "{policy}");
        assert_eq!(
            c.primary.handles(),
            ["127.0.0.1:0:4:undefined:0", "127.0.0.1:0:4:undefined:1"],
            "{policy}"
        );
        // Another worker's first listen is index 0 again: it shares the first bind.
        let (_, shared) = c.listen(b, "tcp://127.0.0.1:0", "");
        assert_eq!(shared, first, "{policy}");
        assert_eq!(c.primary.handles().len(), 2, "{policy}");
        // Only worker a holds index 1.
        for _ in 0..3 {
            assert_eq!(greeting_worker(&c.fetch(&second)), a, "{policy}");
        }
    }
}

#[test]
fn exclusive_listens_bind_in_the_worker_and_the_primary_knows_nothing() {
    let _forks = may_fork();
    let mut c = cluster("rr");
    let [a, b] = c.fork_online(2)[..] else { unreachable!() };
    let (_, at_a, kind_a) = c.listen_kind(a, "tcp://127.0.0.1:0", "exclusive");
    let (_, at_b, kind_b) = c.listen_kind(b, "tcp://127.0.0.1:0", "exclusive");
    assert_ne!(at_a, at_b, "two exclusive binds get two ports");
    assert_eq!((kind_a.as_str(), kind_b.as_str()), ("socket", "socket"));
    assert_eq!(c.primary.handles(), Vec::<String>::new());
    assert_eq!(greeting_worker(&fetch_without_primary(&at_a)), a);
    assert_eq!(greeting_worker(&fetch_without_primary(&at_b)), b);
    // Let the primary read whatever the workers sent: still nothing about these listeners.
    assert_eq!(c.command(a, "echo done", "echo"), "echo done");
    assert_eq!(c.command(b, "echo done", "echo"), "echo done");
    assert_eq!(c.primary.handles(), Vec::<String>::new());
    let listening: Vec<_> =
        c.seen.iter().filter(|e| matches!(e, Event::Listening { .. })).collect();
    assert!(listening.is_empty(), "no listening event for an exclusive listen: {listening:?}");
}

/// A fresh socket path in the temporary directory, removed (if left) when dropped.
struct SocketPath(PathBuf);

impl SocketPath {
    fn new() -> SocketPath {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("herd-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        SocketPath(path)
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_unix_socket_is_shared_and_its_file_removed_with_the_last_listener() {
    let _forks = may_fork();
    for policy in ["rr", "none"] {
        let path = SocketPath::new();
        let spec = format!("unix://{}", path.0.display());
        assert!(spec.starts_with("unix:///"), "{spec}");
        let mut c = cluster(policy);
        let [a, b] = c.fork_online(2)[..] else { unreachable!() };
        let (na, at_a) = c.listen(a, &spec, "");
        let (nb, at_b) = c.listen(b, &spec, "");
        assert_eq!((at_a.as_str(), at_b.as_str()), (spec.as_str(), spec.as_str()), "{policy}");
        let metadata = std::fs::symlink_metadata(&path.0).unwrap();
        assert!(metadata.file_type().is_socket(), "{policy}: {spec} is a socket file");
        let mut served = BTreeSet::new();
        for _ in 0..300 {
            served.insert(greeting_worker(&c.fetch_unix(&path.0)));
            if served.len() == 2 {
                break;
            }
        }
        assert_eq!(served, [a, b].into(), "{policy}: workers that served");

        c.close(a, na);
        assert_eq!(greeting_worker(&c.fetch_unix(&path.0)), b, "{policy}: b still serves");
        assert!(path.0.exists(), "{policy}: the file stays while a worker listens");
        c.close(b, nb);
        c.pump_until(&format!("{policy}: handle closed"), |c| c.primary.handles().is_empty());
        assert!(!path.0.exists(), "{policy}: the last listener out removes {spec}");
    }
}

#[test]
fn udp_is_shared_and_every_datagram_reaches_a_worker() {
    let _forks = may_fork();
    for policy in ["rr", "none"] {
        let mut c = cluster(policy);
        let [a, b] = c.fork_online(2)[..] else { unreachable!() };
        let bound = c.command(a, "udp udp://127.0.0.1:0", "bound");
        assert!(bound.starts_with("bound udp://127.0.0.1:"), "{policy}: {bound}");
        assert_eq!(c.command(b, "udp udp://127.0.0.1:0", "bound"), bound, "{policy}: shared");
        assert_ne!(port(&bound["bound ".len()..]), 0, "{policy}: {bound}");
        assert_eq!(c.primary.handles(), ["127.0.0.1:0:udp4:-1:0"], "{policy}");
        let to = bound.trim_start_matches("bound udp://");
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..10 {
            let text = format!("d{i}");
            socket.send_to(text.as_bytes(), to).unwrap();
            let expected = format!("datagram {text}");
            c.wait_for(
                &format!("{policy}: {expected}"),
                |e| matches!(e, Event::Message { data, .. } if *data == expected.as_bytes()),
            );
        }
    }
}

/// Listens on a port a std listener holds: the worker's answer is `error 98 ...` naming the
/// address, and the primary keeps nothing.
#[track_caller]
fn listen_on_blocked_port(c: &mut TestCluster, id: herd::WorkerId, port: u16) {
    let answer = c.command(id, &format!("listen tcp://127.0.0.1:{port}"), "listening");
    assert!(answer.starts_with("error 98 "), "EADDRINUSE expected: {answer}");
    assert!(answer.contains(&format!("127.0.0.1:{port}")), "names the address: {answer}");
    assert_eq!(c.primary.handles(), Vec::<String>::new(), "a failed bind stores nothing");
}

#[test]
fn a_port_in_use_gives_eaddrinuse_naming_the_address() {
    let _forks = may_fork();
    for policy in ["none", "rr"] {
        let blocker = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = blocker.local_addr().unwrap().port();
        let mut c = cluster(policy);
        let [id] = c.fork_online(1)[..] else { unreachable!() };
        listen_on_blocked_port(&mut c, id, port);
    }
}

/// Issue 9, finding 2: a bind the primary did for a worker and that failed is the primary's to
/// report (`Event::ListenFailed`, with the address asked, the operation and the errno), and a
/// worker that then dies without ever having listened is not respawned into the same failure
/// (`RespawnHalted`: the application decides), where one that listened before is respawned as
/// any crashed worker.
#[test]
fn a_failed_listen_is_the_primarys_event_and_a_worker_that_never_listened_is_not_respawned() {
    let _forks = may_fork();
    let blocker = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blocker.local_addr().unwrap().port();
    let blocked = format!("tcp://127.0.0.1:{port}");
    let settings = fixture_settings(WORKER, "rr");
    let ms = std::time::Duration::from_millis;
    let mut c = TestCluster::with(respawning(settings, ms(20), ms(20), 100));
    // Places 0 and 1.
    let [never, listened] = c.fork_online(2)[..] else { unreachable!() };
    c.listen(listened, "tcp://127.0.0.1:0", "");
    for id in [never, listened] {
        let answer = c.command(id, &format!("listen {blocked}"), "listening");
        assert!(answer.starts_with("error 98 "), "worker {id}: EADDRINUSE expected: {answer}");
        let event = c.wait_for(
            &format!("worker {id}'s failed listen reported"),
            |e| matches!(e, Event::ListenFailed { worker, .. } if *worker == id),
        );
        let Event::ListenFailed { address, error, .. } = event else { unreachable!() };
        assert_eq!(address.to_string(), blocked, "worker {id}: the address asked");
        assert_eq!((error.op(), error.raw_os_error()), ("bind", Some(98)), "{error}");
        assert!(error.to_string().contains(&blocked), "{error} names {blocked}");
    }
    for id in [never, listened] {
        c.primary.send(id, b"exit 1", &[]).unwrap();
    }
    let fate = |c: &mut TestCluster, id: herd::WorkerId, place: usize| {
        c.wait_for(&format!("worker {id} respawned or not"), |e| match e {
            Event::Respawning { worker, .. } => *worker == id,
            Event::RespawnHalted { place: p, .. } => *p == place,
            _ => false,
        })
    };
    let halted = fate(&mut c, never, 0);
    let Event::RespawnHalted { reason, .. } = &halted else {
        panic!("worker {never}, which never listened, is respawned: {halted:?}")
    };
    assert!(
        reason.contains("before it ever listened") && reason.contains(&blocked),
        "the reason says why: {reason}"
    );
    let respawned = fate(&mut c, listened, 1);
    assert!(
        matches!(respawned, Event::Respawning { place: 1, .. }),
        "worker {listened} listened before: respawned as any crash: {respawned:?}"
    );
}

#[test]
fn a_failed_bind_is_retried_by_the_next_listen() {
    // Asserts that closed sockets are closed: no other test's child may hold a copy.
    let _forks = no_forks_elsewhere();
    for policy in ["none", "rr"] {
        let blocker = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = blocker.local_addr().unwrap().port();
        let mut c = cluster(policy);
        let [id] = c.fork_online(1)[..] else { unreachable!() };
        listen_on_blocked_port(&mut c, id, port);
        drop(blocker);
        let spec = format!("tcp://127.0.0.1:{port}");
        let (_, address) = c.listen(id, &spec, "");
        assert_eq!(address, spec, "{policy}");
        assert_eq!(greeting_worker(&c.fetch(&address)), id, "{policy}");
    }
}

#[test]
fn the_last_worker_out_closes_the_socket() {
    // Asserts that closed sockets are closed: no other test's child may hold a copy.
    let _forks = no_forks_elsewhere();
    for policy in ["rr", "none"] {
        let mut c = cluster(policy);
        let [a, b] = c.fork_online(2)[..] else { unreachable!() };
        let (na, address) = c.listen(a, "tcp://127.0.0.1:0", "");
        let (nb, _) = c.listen(b, "tcp://127.0.0.1:0", "");
        c.close(a, na);
        assert_eq!(greeting_worker(&c.fetch(&address)), b, "{policy}: the socket stays open");
        assert_eq!(c.primary.handles().len(), 1, "{policy}");
        c.close(b, nb);
        c.pump_until(&format!("{policy}: handle closed"), |c| c.primary.handles().is_empty());
        let refused = TcpStream::connect(address.trim_start_matches("tcp://"))
            .map(|_| ())
            .expect_err("connected to a closed socket");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{policy}: {refused}");
    }
}

#[test]
fn a_bad_address_is_an_error_that_quotes_it() {
    let _forks = may_fork();
    let mut c = cluster("rr");
    let [id] = c.fork_online(1)[..] else { unreachable!() };
    for input in [
        "tcp://1.2.3:80",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:99999",
        "ftp://127.0.0.1:80",
        "unix://relative/app.sock",
        "fd://x",
    ] {
        let answer = c.command(id, &format!("listen {input}"), "listening");
        assert!(answer.starts_with("error - "), "{input}: {answer}");
        assert!(answer.contains(&format!("{input:?}")), "quotes {input:?}: {answer}");
        let answer = c.command(id, &format!("udp {input}"), "bound");
        assert!(answer.starts_with("error - "), "udp {input}: {answer}");
        assert!(answer.contains(&format!("{input:?}")), "udp quotes {input:?}: {answer}");
    }
    // Well-formed, but of the wrong kind for the call: the message names the address.
    let answer = c.command(id, "listen udp://127.0.0.1:0", "listening");
    assert!(answer.starts_with("error - "), "{answer}");
    assert!(answer.contains("udp://127.0.0.1:0"), "{answer}");
    let answer = c.command(id, "udp tcp://127.0.0.1:0", "bound");
    assert!(answer.starts_with("error - "), "{answer}");
    assert!(answer.contains("tcp://127.0.0.1:0"), "{answer}");
    // The primary bound a TCP handle for that query; the worker's refusal released it.
    c.pump_until("no handle left", |c| c.primary.handles().is_empty());
    assert_eq!(c.primary.handles(), Vec::<String>::new());
}
