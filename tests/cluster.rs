//! The cluster core, end to end: a primary in this test process, `cluster-worker` fixtures as
//! its workers.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herd::{Event, Policy, Signal};
use herd_tests::cluster::{TestCluster, greeting_worker};
use herd_tests::{DEADLINE, Reaped, process_gone, send_signal, within_deadline};

const WORKER: &str = env!("CARGO_BIN_EXE_cluster-worker");

fn cluster(policy: &str) -> TestCluster {
    TestCluster::new(WORKER, Some(policy.parse::<Policy>().unwrap()))
}

#[test]
fn events_come_in_node_order_fork_online_listening() {
    let mut c = cluster("rr");
    let id = c.primary.fork().unwrap();
    assert!(matches!(c.primary.next_event(None).unwrap(), Some(Event::Fork(w)) if w == id));
    c.wait_for("online", |e| matches!(e, Event::Online(w) if *w == id));
    assert!(c.seen.is_empty(), "nothing before online: {:?}", c.seen);
    let (_, address) = c.listen(id, "tcp://127.0.0.1:0", "");
    let event =
        c.wait_for("listening", |e| matches!(e, Event::Listening { worker, .. } if *worker == id));
    let Event::Listening { address: reported, .. } = event else { unreachable!() };
    assert_eq!(reported.to_string(), address);
    assert_ne!(reported.port(), Some(0), "the listening event carries the real port");
}

#[test]
fn each_policy_serves_connections_from_every_worker() {
    for policy in ["none", "rr", "least-conn", "reuseport"] {
        let mut c = cluster(policy);
        let ids = c.fork_online(3);
        // Port 0 in every worker is one key, so one bind: every worker gets the same port.
        let (_, address) = c.listen(ids[0], "tcp://127.0.0.1:0", "");
        for &id in &ids[1..] {
            let (_, same) = c.listen(id, "tcp://127.0.0.1:0", "");
            assert_eq!(same, address, "{policy}: every worker shares the address");
        }
        let mut served = BTreeSet::new();
        for _ in 0..300 {
            served.insert(greeting_worker(&c.fetch(&address)));
            if served.len() == ids.len() {
                break;
            }
        }
        assert_eq!(served, ids.iter().copied().collect(), "{policy}: workers that served");
    }
}

#[test]
fn messages_flow_both_ways_in_order_with_fds() {
    let mut c = cluster("rr");
    let [id] = c.fork_online(1)[..] else { unreachable!() };
    for i in 0..50 {
        let (reader, writer) = std::io::pipe().unwrap();
        let (answer, fds) =
            c.command_with_fds(id, &format!("echo {i}"), &[writer.as_fd(), reader.as_fd()], "echo");
        assert_eq!(answer, format!("echo {i}"));
        assert_eq!(fds.len(), 2, "descriptors come back with the message");
    }
    // A descriptor sent to the worker is the same pipe.
    let (mut reader, writer) = std::io::pipe().unwrap();
    c.command_with_fds(id, "fd", &[writer.as_fd()], "fd-written");
    drop(writer);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut reader, &mut text).unwrap();
    assert_eq!(text, format!("worker {id}"));
}

#[test]
fn send_refuses_what_no_channel_can_carry_and_drops_nothing_queued() {
    let mut c = cluster("rr");
    let [id] = c.fork_online(1)[..] else { unreachable!() };
    let pid = c.primary.worker(id).unwrap().pid;
    // Stopped, the worker reads nothing: its channel fills and later messages wait in the
    // primary's queue. 40 messages of 60 KB are far more than any socket buffer holds.
    herd_tests::stop_process(pid);
    let filler = format!("noop {}", "x".repeat(60_000));
    for i in 0..40 {
        c.primary.send(id, filler.as_bytes(), &[]).unwrap_or_else(|e| panic!("filler {i}: {e}"));
    }
    // 70,000 bytes; and exactly the limit in data, which framing pushes over it.
    for len in [70_000, herd::ipc::MAX_MESSAGE_BYTES] {
        let error = c.primary.send(id, &vec![b'x'; len], &[]).expect_err("an oversized message");
        let text = error.to_string();
        // The frame: a version byte, the variant, a 3-byte length, the data.
        let framed = len + 5;
        assert!(
            text.starts_with(&format!("worker {id}: "))
                && text.contains(&format!("{framed} bytes"))
                && text.contains(&format!("{} bytes", herd::ipc::MAX_MESSAGE_BYTES)),
            "{len} bytes: {text}"
        );
    }
    let (_reader, writer) = std::io::pipe().unwrap();
    let fds = vec![writer.as_fd(); herd::ipc::MAX_FDS_PER_MESSAGE + 1];
    let error = c.primary.send(id, b"echo fds", &fds).expect_err("65 descriptors");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("worker {id}: ")) && text.contains("65 descriptors"),
        "{text}"
    );
    c.primary.send(id, b"echo after", &[]).expect("a message after the refused ones");
    send_signal(pid, "CONT");

    for i in 0..40 {
        c.wait_for(&format!("the answer to filler {i}"), |e| {
            matches!(e, Event::Message { worker, data, .. } if *worker == id && data == b"unknown noop")
        });
    }
    let event = c.wait_for("the message queued behind the full channel", |e| {
        matches!(e, Event::Message { worker, data, .. } if *worker == id && data.starts_with(b"echo"))
    });
    let Event::Message { data, fds, .. } = event else { unreachable!() };
    assert_eq!((data.as_slice(), fds.len()), (&b"echo after"[..], 0), "nothing refused arrived");
}

/// A worker that does not read cannot make the primary hold messages and descriptors without
/// bound: past the queue's bounds `send` fails at the call (nothing queued), and everything it
/// accepted arrives, in order, once the worker reads again.
#[test]
fn send_to_a_worker_that_does_not_read_is_bounded_and_loses_nothing_accepted() {
    let mut c = cluster("rr");
    let [id] = c.fork_online(1)[..] else { unreachable!() };
    let pid = c.primary.worker(id).unwrap().pid;
    herd_tests::stop_process(pid);
    let (_reader, writer) = std::io::pipe().unwrap();
    let before = herd_tests::open_fds().len();
    // Each message carries a descriptor: the descriptor bound comes first.
    let mut accepted = 0;
    let error = loop {
        match c.primary.send(id, format!("echo {accepted}").as_bytes(), &[writer.as_fd()]) {
            Ok(()) => accepted += 1,
            Err(error) => break error,
        }
        assert!(accepted <= 10_000, "no bound after {accepted} messages");
    };
    let held = herd_tests::open_fds().len() - before;
    assert!(matches!(error, herd::Error::QueueFull { id: w, .. } if w == id), "{error}");
    assert!(
        held <= herd::Primary::MAX_QUEUED_FDS + 1024,
        "the primary holds {held} descriptors for {accepted} messages"
    );
    // Without descriptors the message bound holds.
    let mut plain = 0;
    while c.primary.send(id, b"noop", &[]).is_ok() {
        plain += 1;
        assert!(plain <= 10_000, "no bound after {plain} plain messages");
    }
    send_signal(pid, "CONT");
    for i in 0..accepted {
        let text = format!("echo {i}");
        let event = c.wait_for(&format!("the answer to message {i}"), |e| {
            matches!(e, Event::Message { worker, data, .. } if *worker == id && data.starts_with(b"echo"))
        });
        let Event::Message { data, fds, .. } = event else { unreachable!() };
        assert_eq!((String::from_utf8_lossy(&data), fds.len()), (text.as_str().into(), 1));
    }
    assert!(accepted > 0 && plain > 0, "{accepted} with descriptors, {plain} without");
}

#[test]
fn worker_ids_are_never_reused_after_a_worker_exits() {
    let mut c = cluster("rr");
    assert_eq!(c.fork_online(2), [1, 2]);
    c.primary.send(1, b"exit 0", &[]).unwrap();
    let status = c.wait_exit(1);
    assert_eq!(status.code(), Some(0), "worker 1 exited by itself with 0: {status:?}");
    c.wait_for("worker 1 disconnect", |e| matches!(e, Event::Disconnect { worker: 1, .. }));
    assert!(c.primary.worker(1).is_none(), "an exited, disconnected worker leaves the table");
    assert_eq!(c.fork_online(1), [3], "the next worker gets a new id, not the free 1");
    let ids: Vec<_> = c.primary.workers().map(|w| w.id).collect();
    assert_eq!(ids, [2, 3]);
}

#[test]
fn a_process_spawned_by_a_worker_does_not_take_itself_for_a_worker() {
    let mut c = cluster("rr");
    let [id] = c.fork_online(1)[..] else { unreachable!() };
    // The worker runs its own binary again, which inherits HERD_WORKER_ID; it must still say
    // it is no worker (the fixture prints `primary` then).
    assert_eq!(c.command(id, "role", "role"), "role primary");
}

#[test]
fn a_connection_a_worker_refuses_is_served_by_another() {
    let mut c = cluster("rr");
    let [refusing, taking] = c.fork_online(2)[..] else { unreachable!() };
    // max=0: the refusing worker turns down every hand-off. It listens first, so it is first in
    // the rotation and is offered connections.
    let (_, address) = c.listen(refusing, "tcp://127.0.0.1:0", "max=0");
    let (_, same) = c.listen(taking, "tcp://127.0.0.1:0", "");
    assert_eq!(same, address);
    for i in 0..20 {
        let greeting = c.fetch(&address);
        assert_eq!(greeting_worker(&greeting), taking, "fetch {i}: {greeting:?}");
    }
}

#[test]
fn a_worker_killed_with_connections_in_flight_to_it_loses_none() {
    const CLIENTS: usize = 6;
    let mut c = cluster("rr");
    let [idle, busy] = c.fork_online(2)[..] else { unreachable!() };
    // The idle worker never accepts, so never acknowledges: with the default max_in_flight of
    // 1 it holds one connection in flight, and the busy worker serves the others.
    let (_, address) = c.listen(idle, "tcp://127.0.0.1:0", "idle");
    let (_, same) = c.listen(busy, "tcp://127.0.0.1:0", "");
    assert_eq!(same, address);
    let target = address.trim_start_matches("tcp://").to_owned();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let target = target.clone();
            std::thread::spawn(move || -> std::io::Result<String> {
                let mut stream = TcpStream::connect(&target)?;
                stream.set_read_timeout(Some(DEADLINE))?;
                let mut text = String::new();
                stream.read_to_string(&mut text)?;
                Ok(text)
            })
        })
        .collect();
    c.pump_until("one connection in flight to the idle worker, the others served", |c| {
        c.primary.connections_held() == 1
            && clients.iter().filter(|t| t.is_finished()).count() == CLIENTS - 1
    });
    c.primary.kill(idle, Signal::Kill).unwrap();
    c.pump_until("every client answered", |_| clients.iter().all(|t| t.is_finished()));
    for (i, client) in clients.into_iter().enumerate() {
        let greeting = client.join().unwrap().unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(greeting_worker(&greeting), busy, "client {i}: {greeting:?}");
    }
    c.wait_exit(idle);
    assert_eq!(c.primary.connections_held(), 0);
}

/// Kills, when dropped, the listed processes that are still alive: workers of a fixture
/// primary are not our children, and would keep its stderr pipe open.
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if !process_gone(pid) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
    }
}

#[test]
fn a_primary_killed_with_sigkill_leaves_no_worker_after_3_s() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cluster-primary"));
    cmd.arg(WORKER).env_remove(herd::WORKER_ID_VAR).env_remove("HERD_SCHED_POLICY");
    cmd.stdout(Stdio::piped());
    let mut primary = Reaped::spawn(cmd);
    let stdout = primary.take_stdout().unwrap();
    let pids = within_deadline("the fixture primary's two worker pids", move || {
        let mut pids = Vec::new();
        for line in BufReader::new(stdout).lines().take(2) {
            let line = line.map_err(|e| e.to_string())?;
            let pid = line.strip_prefix("pid ").and_then(|p| p.parse::<u32>().ok());
            pids.push(pid.ok_or_else(|| format!("not a pid line: {line:?}"))?);
        }
        Ok::<_, String>(pids)
    })
    .unwrap();
    assert_eq!(pids.len(), 2, "pids {pids:?}");
    // Dropped before `primary`, so a surviving worker cannot hold its stderr pipe open.
    let _workers = KillOnDrop(pids.clone());
    assert!(pids.iter().all(|&p| !process_gone(p)), "workers alive before the kill");

    primary.kill();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|&p| !process_gone(p)).collect();
        if alive.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "workers {alive:?} alive 3 s after the primary died");
        // No event announces another process's death: poll /proc.
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn settings_reach_the_worker_env_per_cluster_and_per_fork_cwd_uid_gid() {
    let dir = std::env::temp_dir().join(format!("herd-cwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Switching ids needs privilege, and the fixture must be reachable by `nobody` (every
    // directory above it searchable by others); otherwise the ids are not switched.
    use std::os::unix::fs::PermissionsExt;
    let reachable = std::path::Path::new(WORKER)
        .ancestors()
        .all(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    let root = reachable
        && std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    let mut settings = herd::Cluster::new()
        .exec(WORKER)
        .args(Vec::<String>::new())
        .env("HERD_TEST_CLUSTER_ENV", "for-all")
        .cwd(&dir);
    if root {
        settings = settings.uid(65534).gid(65534);
    }
    let mut c = TestCluster::with(settings);
    let id = c.primary.fork_with_env(&[("HERD_TEST_FORK_ENV".into(), "for-one".into())]).unwrap();
    c.wait_for("online", |e| matches!(e, Event::Online(w) if *w == id));
    assert_eq!(c.command(id, "env HERD_TEST_CLUSTER_ENV", "env"), "env for-all");
    assert_eq!(c.command(id, "env HERD_TEST_FORK_ENV", "env"), "env for-one");
    let whoami = c.command(id, "whoami", "whoami");
    let expected_ids = if root { "uid=65534 gid=65534".to_owned() } else { String::new() };
    assert!(whoami.starts_with(&format!("whoami cwd={} ", dir.display())), "{whoami}");
    assert!(whoami.ends_with(&expected_ids), "{whoami}");
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A worker's message whose descriptor cannot be installed in the primary (its descriptor
/// table is full) reaches the application as `Event::DescriptorsLost`, with its data: never
/// skipped in silence. The `fd-limit-primary` fixture fills its own table, in a process of its
/// own under a low limit.
#[test]
fn a_message_whose_descriptors_are_lost_at_the_limit_is_reported() {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" \"$1\"")
        .arg(env!("CARGO_BIN_EXE_fd-limit-primary"))
        .arg(WORKER);
    let (out, stderr) = herd_tests::run_fixture(cmd);
    assert_eq!(out.trim(), "lost sendfd", "stderr:\n{stderr}");
}
