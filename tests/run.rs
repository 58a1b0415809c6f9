//! `herd run` from outside: unmodified socket-activated programs (Python, Rust with the
//! `listenfd` crate, Node.js when `node` is on `PATH`) served under `none` and `reuseport`,
//! each worker with its own `LISTEN_PID`, on TCP and unix sockets; a rolling restart under
//! load gated on `READY=1`; a replacement that never gets ready; socket activation and
//! notifications under systemd; PID 1's jobs (orphans reaped, signals forwarded); the kill
//! timeout; bad input.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use herd_tests::cluster::free_ports;
use herd_tests::hello::{Hello, herd_binary};
use herd_tests::{DEADLINE, http};

/// What a worker under `--ready notify` sees of herd's variables: its own `NOTIFY_SOCKET`.
const NOTIFY: &str = "HERD_WORKER_ID,NOTIFY_SOCKET";

/// What a fixture answered: `key=value` pairs of its one-line body.
#[derive(Debug, Clone)]
struct Answer {
    pid: u32,
    listen_pid: String,
    fds: String,
    names: String,
    herd_env: String,
    /// What descriptor 3 is in the worker: `socket:[inode]`.
    sock: String,
}

fn parse(body: &str) -> Answer {
    let field = |name: &str| {
        body.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {body:?}"))
            .to_owned()
    };
    Answer {
        pid: field("pid").parse().unwrap_or_else(|_| panic!("pid in {body:?}")),
        listen_pid: field("listen_pid"),
        fds: field("fds"),
        names: field("names"),
        herd_env: field("herd_env"),
        sock: field("sock"),
    }
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name).display().to_string()
}

fn on_path(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// `herd run ARGS`, with the primary's own socket-activation variables set as a service
/// manager would set them for it: none of them may reach a worker.
fn herd_run(args: &[&str]) -> Hello {
    let env = [
        ("LISTEN_FDS", "1"),
        ("LISTEN_PID", "1"),
        ("LISTEN_FDNAMES", "leaked"),
        ("NOTIFY_SOCKET", "@leaked"),
    ];
    Hello::spawn_command(Command::new(herd_binary()), args, &env)
}

/// Requests until every worker of `herd` answered (within [`DEADLINE`]); checks each answer.
/// Returns the pids that answered, and the sockets they hold at descriptor 3.
#[track_caller]
fn reach_every_worker(herd: &Hello, address: &str, workers: usize) -> Reached {
    reach_every_worker_with(herd, address, workers, "HERD_WORKER_ID")
}

/// The workers that answered, and the sockets they hold at descriptor 3.
type Reached = (BTreeSet<u32>, BTreeSet<String>);

/// [`reach_every_worker`], each worker seeing exactly `herd_env` of herd's and the protocols'
/// variables.
#[track_caller]
fn reach_every_worker_with(herd: &Hello, address: &str, workers: usize, herd_env: &str) -> Reached {
    let expected: BTreeSet<u32> = herd.worker_pids().into_iter().collect();
    assert_eq!(expected.len(), workers, "herd's children: {expected:?}");
    let mut seen = BTreeSet::new();
    let mut sockets = BTreeSet::new();
    let started = Instant::now();
    while seen != expected {
        assert!(
            started.elapsed() < DEADLINE,
            "answered by {seen:?}, not every worker of {expected:?}; herd's stderr:\n{}",
            herd.stderr_so_far()
        );
        let response = http::get(address, "/").expect("GET /");
        let answer = parse(&response.body);
        assert_eq!(answer.listen_pid, answer.pid.to_string(), "LISTEN_PID: {answer:?}");
        assert!(expected.contains(&answer.pid), "{answer:?} is no child of herd: {expected:?}");
        assert_eq!((answer.fds.as_str(), answer.names.as_str()), ("1", "web"), "{answer:?}");
        assert_eq!(answer.herd_env, herd_env, "nothing else of herd's leaks: {answer:?}");
        seen.insert(answer.pid);
        sockets.insert(answer.sock);
    }
    (seen, sockets)
}

/// How many sockets `policy` gives `workers` workers: one shared, or one per place.
fn sockets_for(policy: &str, workers: usize) -> usize {
    if policy == "reuseport" { workers } else { 1 }
}

/// Serves `cmd` through `herd run -w 2` under `policy`, reaches every worker (on one shared
/// socket, or on one socket each), stops it with SIGTERM (SIGINT under `reuseport`): each
/// worker gets SIGTERM (none is left for SIGKILL), herd exits 0. Returns herd's stdout lines
/// and stderr.
fn serve(policy: &str, cmd: &[&str]) -> (Vec<String>, String) {
    let address = format!("127.0.0.1:{}", free_ports(1)[0]);
    let listen = format!("web={address}");
    let mut args = vec!["run", "-w", "2", "--policy", policy, "--ready", "delay:0s"];
    args.extend(["--listen", &listen, "--"]);
    args.extend(cmd);
    let herd = herd_run(&args);
    herd.wait_for_log("herd: ready: 2 workers", 1);
    let (_, sockets) = reach_every_worker(&herd, &address, 2);
    assert_eq!(sockets.len(), sockets_for(policy, 2), "{policy}: {sockets:?}");
    herd.signal(if policy == "reuseport" { "INT" } else { "TERM" });
    let (status, stdout, stderr) = herd.wait();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert_eq!(stderr.matches(") exited: ").count(), 2, "{stderr}");
    // Each was told with SIGTERM: it died of it, or exited 0 on it.
    for exit in stderr.lines().filter(|l| l.contains(") exited: ")) {
        let told = exit.ends_with("exit status: 0") || exit.ends_with("signal: 15 (SIGTERM)");
        assert!(told, "a worker was not told to stop with SIGTERM: {exit}\n{stderr}");
    }
    (stdout, stderr)
}

#[test]
fn a_python_script_is_served_under_none_and_reuseport() {
    if !on_path("python3") {
        eprintln!("skipped: no python3 on PATH");
        return;
    }
    for policy in ["none", "reuseport"] {
        let (stdout, stderr) = serve(policy, &["python3", &fixture("activated.py")]);
        // Its output, line by line, prefixed with the command's name and the worker's id:
        // stdout on herd's stdout, stderr on herd's stderr.
        for id in [1, 2] {
            let line = format!("[python3 worker {id}] python worker started");
            assert!(stdout.contains(&line), "{policy}: no {line:?} in {stdout:?}");
            let line = format!("[python3 worker {id}] python worker says on stderr\n");
            assert!(stderr.contains(&line), "{policy}: no {line:?} in {stderr}");
            assert!(!stdout.iter().any(|l| l.contains("on stderr")), "{policy}: {stdout:?}");
        }
    }
}

#[test]
fn a_rust_program_using_listenfd_is_served_under_none_and_reuseport() {
    for policy in ["none", "reuseport"] {
        let _ = serve(policy, &[env!("CARGO_BIN_EXE_activated-server")]);
    }
}

#[test]
fn a_node_program_is_served_under_none_and_reuseport() {
    if !on_path("node") {
        eprintln!("skipped: no node on PATH");
        return;
    }
    for policy in ["none", "reuseport"] {
        let _ = serve(policy, &["node", &fixture("activated.js")]);
    }
}

/// Clients that request in a loop until stopped: how many answers, and the failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(address: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, address) = (stop.clone(), ok.clone(), address.to_owned());
                std::thread::spawn(move || {
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        match http::get(&address, "/") {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(r) => failures.push(format!("status {}", r.status)),
                            Err(e) => failures.push(e.to_string()),
                        }
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, threads }
    }

    fn answered(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let failures = self.threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        (self.ok.load(Ordering::SeqCst), failures)
    }
}

/// Waits (within [`DEADLINE`]) until `load` has `count` more answers than now.
#[track_caller]
fn more_answers(load: &Load, count: usize) {
    let target = load.answered() + count;
    let started = Instant::now();
    while load.answered() < target {
        assert!(started.elapsed() < DEADLINE, "the load got no {count} more answers");
        // Polling counters other threads move: nothing announces an answer.
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn sighup_under_load_replaces_every_worker_once_ready_with_no_failed_request() {
    for policy in ["none", "reuseport"] {
        let address = format!("127.0.0.1:{}", free_ports(1)[0]);
        let listen = format!("web={address}");
        let herd = herd_run(&[
            "run",
            "-w",
            "2",
            "--policy",
            policy,
            "--ready",
            "notify",
            "--kill-timeout",
            "15s",
            "--listen",
            &listen,
            "--",
            env!("CARGO_BIN_EXE_activated-server"),
            "--notify-after-ms",
            "300",
        ]);
        herd.wait_for_log("herd: ready: 2 workers", 1);
        let (old, old_sockets) = reach_every_worker_with(&herd, &address, 2, NOTIFY);
        let load = Load::start(&address, 4);
        more_answers(&load, 20);
        herd.signal("HUP");
        herd.wait_for_log("herd: restarted", 1);
        more_answers(&load, 20);
        let (answered, failures) = load.stop();
        assert!(
            failures.is_empty(),
            "{policy}: {} failed of {answered}: {failures:?}",
            failures.len()
        );
        let (new, new_sockets) = reach_every_worker_with(&herd, &address, 2, NOTIFY);
        assert!(old.is_disjoint(&new), "{policy}: not every worker replaced: {old:?} then {new:?}");
        // Each place's socket (under reuseport, one per place) is its replacement's.
        assert_eq!(old_sockets, new_sockets, "{policy}");
        assert_eq!(new_sockets.len(), sockets_for(policy, 2), "{policy}: {new_sockets:?}");
        // Gated on READY=1: a replacement was ready only after its notification.
        let stderr = herd.stderr_so_far();
        assert_eq!(stderr.matches(" ready\n").count(), 4, "{policy}: {stderr}");
        herd.signal("TERM");
        let (status, _, stderr) = herd.wait();
        assert!(status.success(), "{policy}: {status}; stderr:\n{stderr}");
    }
}

#[test]
fn a_replacement_never_ready_aborts_the_restart_and_the_old_workers_keep_serving() {
    let address = format!("127.0.0.1:{}", free_ports(1)[0]);
    let listen = format!("web={address}");
    let dir = std::env::temp_dir().join(format!("herd-run-never-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken");
    let _ = std::fs::remove_file(&broken);
    let herd = herd_run(&[
        "run",
        "-w",
        "2",
        "--ready",
        "notify",
        "--ready-timeout",
        "1s",
        "--listen",
        &listen,
        "--",
        env!("CARGO_BIN_EXE_activated-server"),
        "--notify-after-ms",
        "0",
        "--never-ready-if",
        broken.to_str().unwrap(),
    ]);
    herd.wait_for_log("herd: ready: 2 workers", 1);
    let (old, _) = reach_every_worker_with(&herd, &address, 2, NOTIFY);
    std::fs::write(&broken, "").unwrap();
    herd.signal("HUP");
    // Another process telling the replacement's NOTIFY_SOCKET `READY=1` is not heard: only
    // the worker's own process tree speaks for it.
    let started = Instant::now();
    let name = loop {
        // The replacement, once it has exec'd (before, its environment is herd's).
        let found = herd.worker_pids().into_iter().filter(|p| !old.contains(p)).find_map(|p| {
            let environ = std::fs::read(format!("/proc/{p}/environ")).unwrap_or_default();
            environ
                .split(|&b| b == 0)
                .find_map(|kv| kv.strip_prefix(b"NOTIFY_SOCKET=@"))
                .filter(|name| name.starts_with(b"herd-notify/"))
                .map(<[u8]>::to_vec)
        });
        if let Some(name) = found {
            break name;
        }
        assert!(started.elapsed() < DEADLINE, "no replacement: {:?}", herd.worker_pids());
        // Polling /proc: nothing announces herd's fork and the replacement's exec.
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let spoofer = std::os::unix::net::UnixDatagram::unbound().unwrap();
        spoofer.send_to_addr(b"READY=1\n", &addr).expect("send a spoofed READY=1");
    }
    let aborted = herd.wait_for_log("herd: restart aborted", 1);
    assert!(aborted[0].contains("within 1s"), "{aborted:?}");
    // The replacement was killed and reaped; the old workers are herd's only children.
    herd.wait_for_log("signal: 9 (SIGKILL)", 1);
    assert_eq!(reach_every_worker_with(&herd, &address, 2, NOTIFY).0, old);
    std::fs::remove_dir_all(&dir).unwrap();
    herd.signal("TERM");
    let (status, _, stderr) = herd.wait();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
}

/// Runs `herd ARGS` to its end: it must fail with one line on stderr, which is returned.
#[track_caller]
fn fails_with_one_line(args: &[&str]) -> String {
    let herd = herd_run(args);
    let (status, _, stderr) = herd.wait();
    assert!(!status.success(), "{args:?}: {status}; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.starts_with('[')).collect();
    assert_eq!(lines.len(), 1, "{args:?}: not one line:\n{stderr}");
    assert!(lines[0].starts_with("herd: run: "), "{args:?}: {stderr}");
    lines[0].to_owned()
}

#[test]
fn bad_input_is_one_line_naming_what_and_where() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let line = fails_with_one_line(&["run", "-w", "2", "--listen", &address, "--", "/bin/true"]);
    assert!(line.contains("bind") && line.contains(&address), "{line}");

    let line = fails_with_one_line(&["run", "--", "/nonexistent/herd-test-program"]);
    assert!(line.contains("/nonexistent/herd-test-program"), "{line}");
    let line = fails_with_one_line(&["run", "--", "herd-test-no-such-program"]);
    assert!(line.contains("herd-test-no-such-program") && line.contains("PATH"), "{line}");
    let line = fails_with_one_line(&["run", "--", &fixture("activated.py")]);
    assert!(line.contains("activated.py") && line.contains("not executable"), "{line}");

    let line = fails_with_one_line(&["run", "-w", "2", "--ready", "delay:5s", "--", "/bin/false"]);
    assert!(line.contains("exited at once") && line.contains("exit status: 1"), "{line}");

    let line = fails_with_one_line(&["run", "--policy", "rr", "--", "/bin/true"]);
    assert!(line.contains("--policy rr"), "{line}");
}

/// A datagram socket standing in for systemd's `NOTIFY_SOCKET`, at a fresh abstract name.
fn fake_notify_socket() -> (std::os::unix::net::UnixDatagram, String) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let name = format!("herd-test-systemd/{}/{:?}", std::process::id(), Instant::now());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    (socket, format!("@{name}"))
}

/// The next notification `herd` sent to `socket`, watchdog pings (`WATCHDOG=1` alone) left
/// out but counted in `pings`; panics if none comes within [`DEADLINE`].
#[track_caller]
fn next_notification(
    socket: &std::os::unix::net::UnixDatagram,
    herd: &Hello,
    pings: &mut usize,
) -> String {
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < DEADLINE,
            "only watchdog pings within {DEADLINE:?}; herd's stderr:\n{}",
            herd.stderr_so_far()
        );
        match socket.recv(&mut buf) {
            Ok(n) if &buf[..n] == b"WATCHDOG=1\n" => *pings += 1,
            Ok(n) => return String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) => panic!("no notification: {e}; herd's stderr:\n{}", herd.stderr_so_far()),
        }
    }
}

/// `herd run ARGS` started as systemd starts a socket-activated `Type=notify` service:
/// `listener` at descriptor 3, `LISTEN_FDS=listen_fds`, `LISTEN_FDNAMES=names` (unset if
/// empty), `LISTEN_PID` the primary's own pid (set by the shell that then execs it),
/// `NOTIFY_SOCKET`.
fn herd_as_systemd_starts_it(
    listener: &std::net::TcpListener,
    listen_fds: &str,
    names: &str,
    notify: &str,
    args: &[&str],
) -> Hello {
    use std::os::fd::AsFd;
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("export LISTEN_PID=$$; exec \"$0\" \"$@\"").arg(herd_binary());
    herd_tests::sys::pass_fd(&mut cmd, listener.as_fd(), 3);
    let mut env = vec![
        ("LISTEN_FDS", listen_fds),
        ("NOTIFY_SOCKET", notify),
        // A watchdog of 200 ms: pinged every 100 ms.
        ("WATCHDOG_USEC", "200000"),
    ];
    // No names (an empty `names`): no LISTEN_FDNAMES, as from a service manager that names
    // nothing.
    if names.is_empty() {
        cmd.env_remove("LISTEN_FDNAMES");
    } else {
        env.push(("LISTEN_FDNAMES", names));
    }
    Hello::spawn_command(cmd, args, &env)
}

#[test]
fn under_systemd_it_serves_the_passed_socket_and_notifies_ready_reloading_stopping_watchdog() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (notifications, notify) = fake_notify_socket();
    let herd = herd_as_systemd_starts_it(
        &listener,
        "1",
        "web",
        &notify,
        &[
            "run",
            "-w",
            "2",
            "--ready",
            "notify",
            "--listen",
            "systemd:web",
            "--",
            env!("CARGO_BIN_EXE_activated-server"),
            "--notify-after-ms",
            "100",
        ],
    );
    // The test's copy stays open: only the primary's copy can be what the workers serve on
    // if it answers at all, so check the workers' socket is that very one.
    let mut pings = 0;
    let first = next_notification(&notifications, &herd, &mut pings);
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    let (_, sockets) = reach_every_worker_with(&herd, &address, 2, NOTIFY);
    let passed = std::fs::read_link(format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        listener.as_raw_fd()
    }))
    .unwrap();
    assert_eq!(sockets, BTreeSet::from([passed.display().to_string()]));
    herd.signal("HUP");
    let reloading = next_notification(&notifications, &herd, &mut pings);
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading:?}");
    assert!(reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{reloading:?}");
    let ready = next_notification(&notifications, &herd, &mut pings);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    herd.wait_for_log("herd: restarted", 1);
    // The watchdog is pinged meanwhile.
    let mut buf = [0u8; 64];
    while pings == 0 {
        let n = notifications.recv(&mut buf).expect("a WATCHDOG=1 within the deadline");
        assert_eq!(&buf[..n], b"WATCHDOG=1\n", "{:?}", String::from_utf8_lossy(&buf[..n]));
        pings += 1;
    }
    herd.signal("TERM");
    let stopping = next_notification(&notifications, &herd, &mut pings);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let (status, _, stderr) = herd.wait();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
}

#[test]
fn a_malformed_listen_fds_or_a_name_not_passed_is_one_line_naming_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (_notifications, notify) = fake_notify_socket();
    let herd = herd_as_systemd_starts_it(
        &listener,
        "one",
        "web",
        &notify,
        &["run", "--listen", "systemd:web", "--", "/bin/true"],
    );
    let (status, _, stderr) = herd.wait();
    assert!(!status.success(), "{status}; stderr:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("herd: run: ") && stderr.contains("LISTEN_FDS=\"one\""), "{stderr}");
    // More descriptors claimed than passed (only 3 is open), named or not, even absurdly many:
    // one line naming the first one missing.
    for (count, names) in [("2", "web:api"), ("2000000000", "")] {
        let herd = herd_as_systemd_starts_it(
            &listener,
            count,
            names,
            &notify,
            &["run", "--listen", "systemd:web", "--", "/bin/true"],
        );
        let (status, _, stderr) = herd.wait();
        assert!(!status.success(), "{status}; stderr:\n{stderr}");
        assert_eq!(
            stderr,
            format!(
                "herd: run: listen systemd:web: socket activation: LISTEN_FDS=\"{count}\": \
                 descriptor 4: Bad file descriptor (os error 9)\n"
            )
        );
    }
    // A name systemd did not pass: the names it did pass are listed.
    let herd = herd_as_systemd_starts_it(
        &listener,
        "1",
        "web",
        &notify,
        &["run", "--listen", "systemd:api", "--", "/bin/true"],
    );
    let (status, _, stderr) = herd.wait();
    assert!(!status.success(), "{status}; stderr:\n{stderr}");
    assert_eq!(
        stderr,
        "herd: run: listen systemd:api: systemd passed no socket named \"api\" \
         (LISTEN_FDNAMES: \"web\")\n"
    );
    // Variables for another process (LISTEN_PID 1): nothing passed to herd.
    let line = fails_with_one_line(&["run", "--listen", "systemd:web", "--", "/bin/true"]);
    assert!(
        line.contains("systemd:web") && line.contains("passed this process no socket"),
        "{line}"
    );
}

#[test]
fn an_orphan_a_worker_leaves_behind_is_reaped_by_herd() {
    let address = format!("127.0.0.1:{}", free_ports(1)[0]);
    let listen = format!("web={address}");
    let herd = herd_run(&[
        "run",
        "-w",
        "1",
        "--ready",
        "delay:0s",
        "--listen",
        &listen,
        "--",
        env!("CARGO_BIN_EXE_activated-server"),
        "--double-fork",
    ]);
    herd.wait_for_log("herd: ready: 1 workers", 1);
    let body = http::get(&address, "/").expect("GET /").body;
    let orphan: u32 = body
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("orphan="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no orphan= in {body:?}"));
    // Its parent (sh) exited before the worker answered: it is herd's now (a subreaper) ...
    let stat = std::fs::read_to_string(format!("/proc/{orphan}/stat")).expect("orphan alive");
    let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
    assert_eq!(ppid, Some(herd.pid().to_string().as_str()), "{stat}");
    // ... and once it exits, herd reaps it: no zombie is left.
    let started = Instant::now();
    while std::path::Path::new(&format!("/proc/{orphan}")).exists() {
        assert!(
            started.elapsed() < DEADLINE,
            "orphan {orphan} not reaped: {:?}",
            std::fs::read_to_string(format!("/proc/{orphan}/stat"))
        );
        // Polling /proc: nothing announces another process's reaping.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    herd.signal("TERM");
    let (status, _, stderr) = herd.wait();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
}

#[test]
fn signals_scale_and_a_killed_worker_is_respawned_in_its_place() {
    let address = format!("127.0.0.1:{}", free_ports(1)[0]);
    let listen = format!("web={address}");
    let herd = herd_run(&[
        "run",
        "-w",
        "1",
        "--policy",
        "reuseport",
        "--ready",
        "delay:0s",
        "--listen",
        &listen,
        "--",
        env!("CARGO_BIN_EXE_activated-server"),
    ]);
    herd.wait_for_log("herd: ready: 1 workers", 1);
    let (first, _) = reach_every_worker(&herd, &address, 1);
    herd.signal("TTIN");
    herd.wait_for_log("herd: scaled from 1 to 2 workers", 1);
    herd.wait_for_log("herd: worker 2 (pid", 1);
    let (two, sockets) = reach_every_worker(&herd, &address, 2);
    assert!(two.is_superset(&first) && sockets.len() == 2, "{two:?} {sockets:?}");
    // A worker killed outright is replaced in its place, on its place's socket.
    let killed = *first.iter().next().unwrap();
    herd_tests::send_signal(killed, "KILL");
    herd.wait_for_log("herd: respawning worker 1's place 0", 1);
    herd.wait_for_log("herd: worker 3 (pid", 1);
    let (after, after_sockets) = reach_every_worker(&herd, &address, 2);
    assert!(!after.contains(&killed) && after_sockets == sockets, "{after:?} {after_sockets:?}");
    herd.signal("TTOU");
    herd.wait_for_log("herd: scaled from 2 to 1 workers", 1);
    herd.wait_for_log("herd: worker 2 (pid", 2); // ready, then exited
    let (one, _) = reach_every_worker(&herd, &address, 1);
    assert_eq!(one.len(), 1, "{one:?}");
    herd.signal("TERM");
    let (status, _, stderr) = herd.wait();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
}

#[test]
fn the_readme_app_py_is_served_by_the_readme_command() {
    if !on_path("python3") {
        eprintln!("skipped: no python3 on PATH");
        return;
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme.find("```python\n# app.py").expect("the README's app.py") + 10;
    let app = &readme[start..start + readme[start..].find("```").expect("its end")];
    assert!(
        readme.contains("herd run -w 4 --listen 127.0.0.1:8080 -- python3 app.py"),
        "the README's command"
    );
    let dir = std::env::temp_dir().join(format!("herd-readme-app-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.py");
    std::fs::write(&path, app).unwrap();
    // The README's command, on a free port.
    let address = format!("127.0.0.1:{}", free_ports(1)[0]);
    let herd = herd_run(&[
        "run",
        "-w",
        "4",
        "--listen",
        &address,
        "--",
        "python3",
        path.to_str().unwrap(),
    ]);
    herd.wait_for_log("herd: ready: 4 workers", 1);
    let pids: BTreeSet<u32> = herd.worker_pids().into_iter().collect();
    let started = Instant::now();
    let mut seen = BTreeSet::new();
    while seen != pids {
        assert!(started.elapsed() < DEADLINE, "answered by {seen:?} of {pids:?}");
        let response = http::get(&address, "/").expect("GET /");
        let (_, pid) = response.greeting().unwrap_or_else(|| panic!("{response:?}"));
        seen.insert(pid);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    herd.signal("TERM");
    let (status, _, stderr) = herd.wait();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
}

/// tini's other half: the signals herd does not act on itself (SIGQUIT, SIGUSR1, SIGUSR2,
/// SIGWINCH) reach every worker, and herd goes on serving.
#[test]
fn signals_herd_does_not_act_on_are_forwarded_to_every_worker() {
    let dir = std::env::temp_dir().join(format!("herd-test-forward-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let address = format!("127.0.0.1:{}", free_ports(1)[0]);
    let listen = format!("web={address}");
    let herd = herd_run(&[
        "run",
        "-w",
        "2",
        "--ready",
        "notify",
        "--listen",
        &listen,
        "--",
        env!("CARGO_BIN_EXE_activated-server"),
        // Ready once its handlers are in place, so no forwarded signal finds it without.
        "--notify-after-ms",
        "0",
        "--record-signals",
        dir.to_str().unwrap(),
    ]);
    herd.wait_for_log("herd: ready: 2 workers", 1);
    let workers = herd.worker_pids();
    assert_eq!(workers.len(), 2, "{workers:?}");
    let recorded = |pid: u32| -> BTreeSet<String> {
        let text = std::fs::read_to_string(dir.join(pid.to_string())).unwrap_or_default();
        text.lines().map(str::to_owned).collect()
    };
    let all: BTreeSet<String> = ["QUIT", "USR1", "USR2", "WINCH"].map(String::from).into();
    for signal in &all {
        herd.signal(signal);
        herd.wait_for_log(&format!("herd: SIG{signal} received, forwarded to every worker"), 1);
    }
    let started = Instant::now();
    while !workers.iter().all(|&pid| recorded(pid) == all) {
        assert!(
            started.elapsed() < DEADLINE,
            "recorded: {:?}; herd's stderr:\n{}",
            workers.iter().map(|&pid| (pid, recorded(pid))).collect::<Vec<_>>(),
            herd.stderr_so_far()
        );
        // Polling files another process writes: nothing announces a write.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Still the same workers, serving.
    reach_every_worker_with(&herd, &address, 2, NOTIFY);
    assert_eq!(herd.worker_pids(), workers);
    std::fs::remove_dir_all(&dir).unwrap();
    herd.signal("TERM");
    let (status, _, stderr) = herd.wait();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
}

/// `--kill-timeout`: on SIGTERM, a worker that ignores SIGTERM is killed (SIGKILL) once the
/// timeout has passed, not before, and herd exits 0 with no worker left behind. The timeout
/// (6 s) is longer than the default (5 s), so a `--kill-timeout` not honoured is seen.
#[test]
fn a_worker_that_ignores_sigterm_is_killed_after_the_kill_timeout_and_herd_exits_0() {
    let address = format!("127.0.0.1:{}", free_ports(1)[0]);
    let listen = format!("web={address}");
    let herd = herd_run(&[
        "run",
        "-w",
        "2",
        "--ready",
        "delay:0s",
        "--kill-timeout",
        "6s",
        "--listen",
        &listen,
        "--",
        env!("CARGO_BIN_EXE_activated-server"),
        "--ignore-term",
    ]);
    herd.wait_for_log("herd: ready: 2 workers", 1);
    let (workers, _) = reach_every_worker(&herd, &address, 2);
    let told = Instant::now();
    herd.signal("TERM");
    let (status, _, stderr) = herd.wait();
    let took = told.elapsed();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    // A lower bound only: a slow machine makes it longer, never shorter.
    assert!(took >= std::time::Duration::from_secs(6), "killed after {took:?}:\n{stderr}");
    let killed = stderr.lines().filter(|l| l.ends_with("exited: signal: 9 (SIGKILL)")).count();
    assert_eq!(killed, 2, "each worker killed:\n{stderr}");
    for pid in workers {
        assert!(herd_tests::process_gone(pid), "worker {pid} left behind");
    }
}

/// Makes a new connection to a unix socket.
type Connect<'a> = &'a dyn Fn() -> std::io::Result<std::os::unix::net::UnixStream>;

/// `GET /` over a new connection `connect` makes; the body of the answer.
fn get_over_unix(connect: Connect<'_>) -> String {
    use std::io::{Read, Write};
    let mut stream = connect().expect("connect to herd's unix socket");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: herd\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("the answer");
    let (_, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{response:?}"));
    body.to_owned()
}

/// Unix sockets through `herd run`: an abstract name under `none` and a socket file under
/// `reuseport` (one socket for every worker: a unix socket has no reuseport group), each
/// worker reached on it; the socket file herd created is removed at the stop.
#[test]
fn unix_and_abstract_sockets_are_served_and_the_socket_file_removed_at_the_stop() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixStream};
    let dir = std::env::temp_dir().join(format!("herd-test-run-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.sock");
    let name = format!("herd-test-run/{}/{:?}", std::process::id(), Instant::now());
    let abstract_connect = {
        let name = name.clone();
        move || UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)
    };
    let path_connect = {
        let path = path.clone();
        move || UnixStream::connect(&path)
    };
    let cases: [(&str, String, Connect<'_>); 2] = [
        ("none", format!("web=unix:@{name}"), &abstract_connect),
        ("reuseport", format!("web=unix://{}", path.display()), &path_connect),
    ];
    for (policy, listen, connect) in cases {
        let herd = herd_run(&[
            "run",
            "-w",
            "2",
            "--policy",
            policy,
            "--ready",
            "delay:0s",
            "--listen",
            &listen,
            "--",
            env!("CARGO_BIN_EXE_activated-server"),
        ]);
        herd.wait_for_log("herd: ready: 2 workers", 1);
        let expected: BTreeSet<u32> = herd.worker_pids().into_iter().collect();
        let (mut seen, mut sockets) = (BTreeSet::new(), BTreeSet::new());
        let started = Instant::now();
        while seen != expected {
            assert!(started.elapsed() < DEADLINE, "{policy}: answered by {seen:?} of {expected:?}");
            let answer = parse(&get_over_unix(connect));
            assert_eq!(answer.listen_pid, answer.pid.to_string(), "{policy}: {answer:?}");
            assert_eq!((answer.fds.as_str(), answer.names.as_str()), ("1", "web"), "{answer:?}");
            seen.insert(answer.pid);
            sockets.insert(answer.sock);
        }
        assert_eq!(sockets.len(), 1, "{policy}: one socket for every worker: {sockets:?}");
        herd.signal("TERM");
        let (status, _, stderr) = herd.wait();
        assert!(status.success(), "{policy}: {status}; stderr:\n{stderr}");
    }
    assert!(!path.exists(), "{} left behind", path.display());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A worker that exits at once fails the start in one line, and the others, still running,
/// are not left behind: herd kills them before it exits non-zero.
#[test]
fn a_worker_that_exits_at_once_stops_herd_with_no_other_worker_left_behind() {
    let dir = std::env::temp_dir().join(format!("herd-test-exits-at-once-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Worker 2 says its pid and waits for ever; worker 1 exits with 3 once worker 2 has said
    // it (so worker 2 surely runs when herd hears of the exit).
    let script = format!(
        "if test \"$HERD_WORKER_ID\" = 1; then while ! test -e {0}/pid; do sleep 0.02; done; \
         exit 3; fi; echo $$ > {0}/pid.tmp && mv {0}/pid.tmp {0}/pid; exec sleep 600",
        dir.display()
    );
    let line = fails_with_one_line(&[
        "run",
        "-w",
        "2",
        "--ready",
        "delay:30s",
        "--",
        "/bin/sh",
        "-c",
        &script,
    ]);
    assert!(line.contains("worker 1") && line.contains("exited at once"), "{line}");
    assert!(line.contains("exit status: 3"), "{line}");
    let pid: u32 = std::fs::read_to_string(dir.join("pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("worker 2 never started: {line}"));
    // ... and is gone: killed and reaped by herd, not orphaned.
    assert!(herd_tests::process_gone(pid), "worker 2 (pid {pid}) left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}
