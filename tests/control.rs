//! The control socket from outside: `herd status --json` lists every worker with its pid,
//! for a `herd run` cluster and for a library app that turned it on (`hello --control`);
//! `herd reload` returns once every worker is replaced, and reports each; a stopped primary
//! makes a command fail within its timeout, a stale socket file says so; a second `herd stop`
//! during a stop kills the workers left at once; idle connections make room for a new one; a
//! scale above `herd::MAX_WORKERS` is refused; a connection from another uid is refused, by
//! the socket file's mode and, past a mode changed by hand, by `SO_PEERCRED`; a socket directory another user owns or may write is refused, and so is,
//! by the client, a server running as another uid.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use herd_tests::hello::{Hello, herd_binary};
use herd_tests::{Reaped, TempDir, process_gone, stop_process, within_deadline};

/// The uid a refused client runs as (`nobody`).
const NOBODY: u32 = 65534;

/// Runs `herd ARGS` (a control subcommand) to its end, within the deadline, as `uid` if
/// given: its status, stdout and stderr.
fn client(args: &[&str], uid: Option<u32>) -> (ExitStatus, String, String) {
    let mut cmd = Command::new(herd_binary());
    cmd.args(args).stdout(Stdio::piped());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let mut child = Reaped::spawn(cmd);
    let mut stdout = child.take_stdout().expect("piped stdout");
    let out = within_deadline("herd's output", move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let (status, stderr) = child.wait();
    (status, out.expect("read herd's stdout"), stderr)
}

/// `herd status --json`, parsed.
#[track_caller]
fn status(socket: &Path) -> serde_json::Value {
    let (status, out, stderr) = client(&["status", "--json", "--control", path(socket)], None);
    assert!(status.success(), "herd status: {status}; stderr:\n{stderr}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// The workers' pids in a status.
fn pids(status: &serde_json::Value) -> BTreeSet<u32> {
    status["workers"]
        .as_array()
        .unwrap_or_else(|| panic!("no workers in {status}"))
        .iter()
        .map(|w| w["pid"].as_u64().unwrap_or_else(|| panic!("no pid in {w}")) as u32)
        .collect()
}

/// `herd run -w WORKERS` of the `activated-server` fixture with its control socket in `dir`,
/// once every worker is ready.
fn herd_run(dir: &TempDir, workers: usize) -> (Hello, std::path::PathBuf) {
    let socket = dir.join("control.sock");
    let workers = workers.to_string();
    let args = [
        "run",
        "-w",
        &workers,
        "--ready",
        "delay:100ms",
        "--listen",
        "127.0.0.1:0",
        "--control",
        path(&socket),
        "--",
        env!("CARGO_BIN_EXE_activated-server"),
    ];
    let herd = Hello::spawn_command(Command::new(herd_binary()), &args, &[]);
    herd.wait_for_log(&format!("herd: ready: {workers} workers"), 1);
    (herd, socket)
}

#[test]
fn herd_status_json_lists_every_worker_with_its_pid() {
    let dir = TempDir::new("control-status");
    let (herd, socket) = herd_run(&dir, 3);
    let mode = std::fs::metadata(&socket).expect("the socket file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let status = status(&socket);
    let children: BTreeSet<u32> = herd.worker_pids().into_iter().collect();
    assert_eq!(pids(&status), children, "{status}");
    assert_eq!(status["primary_pid"], herd.pid(), "{status}");
    let places: BTreeSet<u64> =
        status["workers"].as_array().unwrap().iter().filter_map(|w| w["place"].as_u64()).collect();
    assert_eq!(places, [0, 1, 2].into(), "{status}");
    for worker in status["workers"].as_array().unwrap() {
        assert_eq!(worker["state"], "listening", "{worker}");
        assert!(worker["rss_bytes"].as_u64().is_some_and(|rss| rss > 0), "{worker}");
    }
    // The table: a header and a row per worker, its pid in the second column.
    let (done, table, stderr) = client(&["status", "--control", path(&socket)], None);
    assert!(done.success(), "{done}; stderr:\n{stderr}");
    let mut lines = table.lines().skip(1);
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header[..5], ["ID", "PID", "PLACE", "STATE", "UPTIME"], "{table}");
    let shown: BTreeSet<u32> =
        lines.map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap()).collect();
    assert_eq!(shown, children, "{table}");
    herd.signal("TERM");
    let (exit, _, stderr) = herd.wait();
    assert!(exit.success(), "{exit}; stderr:\n{stderr}");
    assert!(!socket.exists(), "the socket file is removed at the end");
}

#[test]
fn herd_reload_returns_after_every_worker_is_replaced_and_reports_each() {
    let dir = TempDir::new("control-reload");
    let (herd, socket) = herd_run(&dir, 3);
    let before = status(&socket);
    let old: Vec<(u64, u32)> = before["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["id"].as_u64().unwrap(), w["pid"].as_u64().unwrap() as u32))
        .collect();
    let (done, out, stderr) = client(&["reload", "--control", path(&socket)], None);
    assert!(done.success(), "herd reload: {done}; stdout:\n{out}\nstderr:\n{stderr}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"herd: rolling restart of 3 workers"), "{out}");
    assert!(lines.last().is_some_and(|l| l.starts_with("herd: restarted: 3 workers")), "{out}");
    // One line per replaced worker: `place P: worker OLD replaced by worker NEW (pid PID)`.
    let replaced: Vec<&str> = lines.iter().copied().filter(|l| l.contains("replaced by")).collect();
    assert_eq!(replaced.len(), 3, "{out}");
    let mut new_pids = BTreeSet::new();
    for (line, (id, _)) in replaced.iter().zip(&old) {
        assert!(line.contains(&format!("worker {id} replaced by")), "{line}");
        let pid = line.split("(pid ").nth(1).and_then(|r| r.split(')').next()).unwrap();
        new_pids.insert(pid.parse::<u32>().unwrap());
    }
    // When it returned, every old worker had exited, and the new ones are the cluster.
    for (id, pid) in &old {
        assert!(process_gone(*pid), "worker {id} (pid {pid}) still runs after the reload");
    }
    assert_eq!(pids(&status(&socket)), new_pids, "{out}");
    herd.signal("TERM");
    let (exit, _, stderr) = herd.wait();
    assert!(exit.success(), "{exit}; stderr:\n{stderr}");
}

#[test]
fn herd_reload_exits_non_zero_saying_why_when_the_restart_aborts() {
    let dir = TempDir::new("control-abort");
    let socket = dir.join("control.sock");
    let flag = dir.join("deployable");
    std::fs::write(&flag, "").unwrap();
    // A worker starts only while the flag exists: the deploy the reload rolls out is broken.
    let script = format!("test -e '{}' && exec sleep 1000", flag.display());
    let args = [
        "run",
        "-w",
        "2",
        "--ready",
        "delay:200ms",
        "--listen",
        "127.0.0.1:0",
        "--control",
        path(&socket),
        "--",
        "/bin/sh",
        "-c",
        &script,
    ];
    let herd = Hello::spawn_command(Command::new(herd_binary()), &args, &[]);
    herd.wait_for_log("herd: ready: 2 workers", 1);
    let before = pids(&status(&socket));
    std::fs::remove_file(&flag).unwrap();
    let (done, out, stderr) = client(&["reload", "--control", path(&socket)], None);
    assert!(!done.success(), "an aborted reload succeeded:\n{out}");
    assert!(out.starts_with("herd: rolling restart of 2 workers"), "{out}");
    assert!(!out.contains("replaced by"), "{out}");
    assert!(
        stderr.starts_with("herd: reload: restart aborted at place 0: replacement worker 3 died")
            && stderr.contains("exit status: 1"),
        "{stderr}"
    );
    // The old workers serve on.
    assert_eq!(pids(&status(&socket)), before);
    herd.signal("TERM");
    let (exit, _, stderr) = herd.wait();
    assert!(exit.success(), "{exit}; stderr:\n{stderr}");
}

#[test]
fn a_library_app_that_turns_it_on_answers_herd_status_and_stop() {
    let dir = TempDir::new("control-hello");
    let socket = dir.join("hello.sock");
    let (hello, _, _) = Hello::start(
        &["--workers", "2", "--listen", "127.0.0.1:0", "--control", path(&socket)],
        &[],
    );
    let status = status(&socket);
    let children: BTreeSet<u32> = hello.worker_pids().into_iter().collect();
    assert_eq!(pids(&status), children, "{status}");
    assert_eq!(status["policy"], "rr", "{status}");
    // `herd stop` returns once the stop is done: the workers have exited.
    let (done, out, stderr) = client(&["stop", "--control", path(&socket)], None);
    assert!(done.success(), "herd stop: {done}; stdout:\n{out}\nstderr:\n{stderr}");
    assert!(out.contains("herd: stopping 2 workers") && out.contains("herd: stopped"), "{out}");
    for pid in &children {
        assert!(process_gone(*pid), "worker pid {pid} runs after herd stop returned");
    }
    let (exit, _, stderr) = hello.wait();
    assert!(exit.success(), "{exit}; stderr:\n{stderr}");
}

#[test]
fn a_connection_from_another_uid_is_refused() {
    if !herd_tests::sys::running_as_root() {
        eprintln!("note: not root, so no client under another uid: skipped");
        return;
    }
    let dir = TempDir::new("control-uid");
    // The directory lets anyone reach the socket file: only the file and SO_PEERCRED guard it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (herd_run, socket) = herd_run(&dir, 1);
    let args = ["status", "--json", "--control", path(&socket)];
    // The file's mode (0600) stops the connect itself.
    let (done, out, stderr) = client(&args, Some(NOBODY));
    assert!(!done.success(), "uid {NOBODY} was served:\n{out}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    // A mode opened by hand lets the connect through; the primary refuses it by SO_PEERCRED,
    // saying why to the client and in its log.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (done, out, stderr) = client(&args, Some(NOBODY));
    assert!(!done.success(), "uid {NOBODY} was served:\n{out}");
    assert!(out.is_empty(), "uid {NOBODY} got an answer:\n{out}");
    assert!(
        stderr.contains(&format!("uid {NOBODY}"))
            && stderr.contains("may not use this control socket"),
        "{stderr}"
    );
    herd_run.wait_for_log(&format!("control socket: uid {NOBODY}"), 1);
    // The primary's own uid still is.
    assert_eq!(pids(&status(&socket)), herd_run.worker_pids().into_iter().collect());
    herd_run.signal("TERM");
    let (exit, _, stderr) = herd_run.wait();
    assert!(exit.success(), "{exit}; stderr:\n{stderr}");
}

#[test]
fn a_scale_above_max_workers_is_refused_with_one_line_and_forks_nothing() {
    let dir = TempDir::new("control-scale-max");
    let (herd, socket) = herd_run(&dir, 1);
    // The client refuses it before asking.
    let (done, _, stderr) = client(&["scale", "100000", "--control", path(&socket)], None);
    assert!(!done.success(), "{stderr}");
    assert!(stderr.contains("100000"), "{stderr}");
    // Past the client (another program speaking the protocol), the primary refuses it.
    let answer = within_deadline("the primary's answer", {
        let socket = socket.clone();
        move || {
            use std::io::{BufRead, Write};
            let mut stream = std::os::unix::net::UnixStream::connect(&socket)?;
            stream.write_all(b"{\"cmd\":\"scale\",\"workers\":100000}\n")?;
            let mut line = String::new();
            std::io::BufReader::new(stream).read_line(&mut line)?;
            Ok::<_, std::io::Error>(line)
        }
    })
    .expect("an answer");
    assert!(answer.contains("at most 1024 workers"), "{answer}");
    assert_eq!(pids(&status(&socket)).len(), 1, "nothing was forked");
    herd.signal("TERM");
    let (exit, _, stderr) = herd.wait();
    assert!(exit.success(), "{exit}; stderr:\n{stderr}");
}

#[test]
fn a_control_directory_another_user_owns_or_may_write_is_refused() {
    if !herd_tests::sys::running_as_root() {
        eprintln!("note: not root, so no directory of another uid: skipped");
        return;
    }
    let dir = TempDir::new("control-dir-owner");
    // Another user made it first, open to all (the /tmp/herd-UID takeover).
    let theirs = dir.join("herd");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    // Ours, but writable by everyone and not sticky.
    let open = dir.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    for (socket_dir, why) in [(&theirs, "owned by uid 65534"), (&open, "writable by others")] {
        let socket = socket_dir.join("app.sock");
        let args = [
            "run",
            "-w",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--control",
            path(&socket),
            "--",
            env!("CARGO_BIN_EXE_activated-server"),
        ];
        let herd = Hello::spawn_command(Command::new(herd_binary()), &args, &[]);
        let (exit, _, stderr) = herd.wait();
        assert!(!exit.success(), "{exit}; stderr:\n{stderr}");
        assert!(stderr.contains(why) && stderr.contains(path(socket_dir)), "{stderr}");
        assert!(!socket.exists(), "nothing was bound in {}", socket_dir.display());
    }
}

#[test]
fn a_client_refuses_a_socket_served_by_another_uid() {
    if !herd_tests::sys::running_as_root() {
        eprintln!("note: not root, so no server under another uid: skipped");
        return;
    }
    let dir = TempDir::new("control-server-uid");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A server of another user's where ours would be (here: its own directory, so its
    // own directory check passes).
    let theirs = dir.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let socket = theirs.join("app.sock");
    let args = [
        "run",
        "-w",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--control",
        path(&socket),
        "--",
        env!("CARGO_BIN_EXE_activated-server"),
    ];
    let mut cmd = Command::new(herd_binary());
    cmd.uid(NOBODY).gid(NOBODY);
    let impostor = Hello::spawn_command(cmd, &args, &[]);
    impostor.wait_for_log("herd: ready: 1 worker", 1);
    // Root's `herd stop` finds it there and refuses to talk to it.
    let (done, out, stderr) = client(&["stop", "--control", path(&socket)], None);
    assert!(!done.success(), "herd stop succeeded against uid {NOBODY}'s socket:\n{out}");
    assert!(
        stderr.contains(&format!("runs as uid {NOBODY}")) && stderr.contains("not asking it"),
        "{stderr}"
    );
    assert!(!process_gone(impostor.pid()), "nothing was sent to it");
    impostor.signal("TERM");
    let (exit, _, stderr) = impostor.wait();
    assert!(exit.success(), "{exit}; stderr:\n{stderr}");
}

#[test]
fn a_second_cluster_of_the_same_default_name_stops_asking_for_a_name() {
    let dir = TempDir::new("control-same-name");
    let runtime = path(dir.path()).to_owned();
    let args =
        ["run", "-w", "1", "--listen", "127.0.0.1:0", "--", env!("CARGO_BIN_EXE_activated-server")];
    let env = [("XDG_RUNTIME_DIR", runtime.as_str())];
    let first = Hello::spawn_command(Command::new(herd_binary()), &args, &env);
    first.wait_for_log("herd: ready: 1 worker", 1);
    let second = Hello::spawn_command(Command::new(herd_binary()), &args, &env);
    let (exit, _, stderr) = second.wait();
    assert!(!exit.success(), "{exit}; stderr:\n{stderr}");
    assert!(stderr.contains("--name") && stderr.contains("--no-control"), "{stderr}");
    // The default socket is still the first one's.
    let socket = dir.join("herd").join("activated-server.sock");
    assert_eq!(status(&socket)["primary_pid"], first.pid());
    first.signal("TERM");
    let (exit, _, stderr) = first.wait();
    assert!(exit.success(), "{exit}; stderr:\n{stderr}");
}

/// Sends SIGCONT to a stopped process when dropped, so that a failing test leaves no
/// stopped primary behind (its guard then kills it and reaps it).
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

#[test]
fn a_stopped_primary_makes_every_command_fail_within_its_timeout_saying_so() {
    let dir = TempDir::new("control-sigstop");
    let (herd, socket) = herd_run(&dir, 1);
    stop_process(herd.pid());
    let resume = Resume(herd.pid());
    let no_answer = |within: &str| {
        format!("no answer from the cluster at {} within {within} s", socket.display())
    };
    // `herd status` waits its default 10 s; the client's own deadline would catch a hang.
    let (done, _, stderr) = client(&["status", "--control", path(&socket)], None);
    assert!(!done.success(), "herd status of a stopped primary: {done}");
    assert!(stderr.contains(&no_answer("10")), "{stderr}");
    let started = std::time::Instant::now();
    let (done, _, stderr) =
        client(&["scale", "2", "--timeout", "2s", "--control", path(&socket)], None);
    assert!(!done.success(), "herd scale of a stopped primary: {done}");
    assert!(stderr.contains(&no_answer("2")), "{stderr}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(2), "{stderr}");
    drop(resume);
    // Resumed, it acts on the scale queued meanwhile, and stops.
    herd.signal("TERM");
    let (exit, _, stderr) = herd.wait();
    assert!(exit.success(), "{exit}; stderr:\n{stderr}");
}

#[test]
fn a_stale_socket_file_says_no_cluster_runs_there() {
    let dir = TempDir::new("control-stale");
    let socket = dir.join("stale.sock");
    // A socket bound and closed, as a primary killed by SIGKILL leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists());
    let (done, _, stderr) = client(&["status", "--control", path(&socket)], None);
    assert!(!done.success(), "{done}");
    let line = format!("no cluster runs at {} (stale socket)", socket.display());
    assert!(stderr.contains(&line), "{stderr}");
}

#[test]
fn a_second_herd_stop_during_a_stop_kills_the_workers_left_as_a_second_sigterm_does() {
    let dir = TempDir::new("control-stop-twice");
    let socket = dir.join("control.sock");
    // Workers that ignore SIGTERM, and a kill timeout far past the test: only a hard stop
    // ends this stop in time.
    let args = [
        "run",
        "-w",
        "2",
        "--ready",
        "delay:100ms",
        "--kill-timeout",
        "10m",
        "--listen",
        "127.0.0.1:0",
        "--control",
        path(&socket),
        "--",
        env!("CARGO_BIN_EXE_activated-server"),
        "--ignore-term",
    ];
    let herd = Hello::spawn_command(Command::new(herd_binary()), &args, &[]);
    herd.wait_for_log("herd: ready: 2 workers", 1);
    let workers = herd.worker_pids();
    let mut first = Command::new(herd_binary());
    first.args(["stop", "--timeout", "10m", "--control", path(&socket)]).stdout(Stdio::piped());
    let mut first = Reaped::spawn(first);
    let mut first_out = std::io::BufReader::new(first.take_stdout().expect("piped stdout"));
    let began = within_deadline("the first herd stop's first line", move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut first_out, &mut line).map(|_| (line, first_out))
    });
    let (line, mut first_out) = began.expect("read the first herd stop");
    assert!(line.contains("herd: stopping 2 workers"), "{line:?}");
    let (done, out, stderr) = client(&["stop", "--control", path(&socket)], None);
    assert!(done.success(), "the second herd stop: {done}; stdout:\n{out}\nstderr:\n{stderr}");
    assert!(out.contains("killing the 2 workers left at once (SIGKILL)"), "{out}");
    assert!(out.contains("herd: stopped: every worker exited"), "{out}");
    for pid in &workers {
        assert!(process_gone(*pid), "worker pid {pid} runs after the second herd stop returned");
    }
    // The first one hears the end too.
    let rest = within_deadline("the first herd stop's end", move || {
        let mut text = String::new();
        first_out.read_to_string(&mut text).map(|_| text)
    });
    let rest = rest.expect("read the first herd stop");
    let (status, stderr) = first.wait();
    assert!(status.success(), "the first herd stop: {status}; {rest}\nstderr:\n{stderr}");
    assert!(rest.contains("herd: stopped"), "{rest}");
    let _ = herd.wait();
}

#[test]
fn idle_control_connections_make_room_for_herd_status_oldest_first() {
    let dir = TempDir::new("control-idle");
    let (herd, socket) = herd_run(&dir, 1);
    // 16 (herd::control::MAX_CONNECTIONS) clients that connect and never send a request.
    let idle: Vec<std::os::unix::net::UnixStream> = (0..herd::control::MAX_CONNECTIONS)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).expect("connect"))
        .collect();
    let status = status(&socket);
    assert_eq!(pids(&status).len(), 1, "{status}");
    // The oldest idle one was closed for it: it reads the end of the stream, at once.
    let mut oldest = &idle[0];
    oldest.set_read_timeout(Some(herd_tests::DEADLINE)).expect("set a read timeout");
    let mut rest = Vec::new();
    oldest.read_to_end(&mut rest).expect("the oldest idle connection is closed");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    drop(idle);
    herd.signal("TERM");
    let (exit, _, stderr) = herd.wait();
    assert!(exit.success(), "{exit}; stderr:\n{stderr}");
}
