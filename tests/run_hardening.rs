//! `herd run` against what a breaker found (issue 11's hardening): descriptors sent with a
//! notification, broken output pipes, signals during the start, what a stopped worker leaves
//! behind, unbounded lines, descriptors leaking into workers, huge durations and counts.

use std::process::Command;

use herd_tests::hello::{Hello, herd_binary};

/// `herd run ARGS` with stdin, stdout (read line by line) and stderr (collected) piped.
fn herd_run(args: &[&str]) -> Hello {
    Hello::spawn_command(Command::new(herd_binary()), args, &[])
}

fn on_path(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// `systemd-notify --ready` sends `READY=1`, then `BARRIER=1` with a descriptor and waits (5 s
/// at most) for its receiver to close it (`sd_notify_barrier(3)`); when it times out it fails.
/// herd must close the descriptor, as systemd does, so the barrier returns and the tool exits 0.
#[test]
fn systemd_notify_ready_returns_at_once_under_ready_notify() {
    if !on_path("systemd-notify") {
        eprintln!("skipped: no systemd-notify on PATH");
        return;
    }
    let script = "if systemd-notify --ready; then echo notify-returned-0 >&2; \
                  else echo notify-failed >&2; fi; exec sleep 1000";
    let herd = herd_run(&[
        "run",
        "-w",
        "1",
        "--ready",
        "notify",
        "--listen",
        "web=127.0.0.1:0",
        "--",
        "sh",
        "-c",
        script,
    ]);
    herd.wait_for_log("herd: ready: 1 workers", 1);
    let said = herd.wait_for_log("notify-", 1);
    assert!(said[0].ends_with("notify-returned-0"), "{said:?}\n{}", herd.stderr_so_far());
    herd.signal("TERM");
    let (status, _, stderr) = herd.wait();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
}

/// `herd run ARGS` through `sh -c 'SETUP; exec herd ARGS'`: herd inherits what the shell set
/// up (an ignored signal, an open descriptor).
fn herd_run_after(setup: &str, args: &[&str]) -> Hello {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("{setup}; exec \"$0\" \"$@\"")).arg(herd_binary());
    Hello::spawn_command(cmd, args, &[])
}

/// Runs one worker whose `sh -c SCRIPT` reports on stderr, waits for its line holding `tag`,
/// stops herd (exit 0) and returns the line.
fn one_worker_says(setup: &str, extra: &[&str], script: &str, tag: &str) -> String {
    let mut args = vec!["run", "-w", "1", "--ready", "delay:0s"];
    args.extend(extra);
    args.extend(["--", "sh", "-c", script]);
    let herd = herd_run_after(setup, &args);
    let line = herd.wait_for_log(tag, 1).remove(0);
    herd.signal("TERM");
    let (status, _, stderr) = herd.wait();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    line
}

/// A socket-activated worker starts with every signal at its default disposition, as systemd
/// starts a service, even when herd itself was started with SIGINT and SIGQUIT ignored (as a
/// shell starts a command with `&`): `SigIgn` in `/proc/PID/status` is all zeros
/// but the C library's own signals.
#[test]
fn a_worker_starts_with_no_signal_ignored_even_when_herd_was() {
    let script = "grep '^SigIgn' /proc/$$/status >&2; exec sleep 1000";
    let line =
        one_worker_says("trap '' INT QUIT", &["--listen", "web=127.0.0.1:0"], script, "SigIgn");
    let mask = line.rsplit('\t').next().and_then(|m| u64::from_str_radix(m, 16).ok());
    // Signals 32 and 33 are the C library's own (its sigaction refuses them, as it refuses
    // systemd, whose reset leaves them as they are too).
    let reserved = 0b11 << 31;
    assert_eq!(mask.map(|m| m & !reserved), Some(0), "{line:?}");
}

/// Nothing but the sockets passes to a socket-activated worker: a descriptor herd inherited
/// without CLOEXEC from its caller (9) is closed in the worker, as systemd closes it; an
/// `fd://7` socket is handed over at 3 only, not left open at 7 too.
#[test]
fn only_the_sockets_at_3_reach_a_worker_not_inherited_descriptors() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let script = "for fd in 3 4 7 9; do [ -e /proc/$$/fd/$fd ] && open=\"$open $fd\"; done; \
                  echo \"open:$open.\" >&2; exec sleep 1000";
    // A bound socket at 7 (python3 binds it and execs herd with it), and /dev/null at 9.
    let setup = format!(
        "exec 9</dev/null; exec python3 -c 'import os,socket,sys; s=socket.socket(); \
         s.bind((\"{}\", {})); s.listen(); os.dup2(s.fileno(), 7); os.execv(sys.argv[1], \
         sys.argv[1:])' \"$0\" \"$@\"; false",
        address.ip(),
        address.port()
    );
    let line = one_worker_says(&setup, &["--listen", "web=fd://7"], script, "open:");
    assert!(line.ends_with("open: 3."), "{line:?}");
}

/// A duration far beyond any clock (`u64::MAX` seconds and more) is taken as
/// `herd::MAX_DURATION` (100 years), not a panic: `--ready delay:` at the first fork,
/// `--ready-timeout` at the start, `--kill-timeout` at the stop. SIGTERM then stops herd with exit 0 (the worker exits on it).
#[test]
fn huge_durations_are_clamped_not_a_panic() {
    let huge = "10000000000000000000s";
    let delay = format!("delay:{huge}");
    let herd = herd_run(&[
        "run",
        "-w",
        "1",
        "--ready",
        &delay,
        "--kill-timeout",
        huge,
        "--ready-timeout",
        huge,
        "--listen",
        "web=127.0.0.1:0",
        "--",
        "sh",
        "-c",
        "echo started >&2; exec sleep 1000",
    ]);
    herd.wait_for_log("started", 1);
    herd.signal("TERM");
    let (status, _, stderr) = herd.wait();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// At a stop a socket-activated worker is told by SIGTERM alone, as systemd tells a service:
/// the socket is not shut down under it, so its blocked `accept(2)` is not failed with
/// `EINVAL` before its SIGTERM handler runs (found by brk11: a Python app logged a traceback
/// and exited 1). The worker here ignores SIGTERM, so only a shut-down socket would end its
/// accept; it is killed after the kill timeout instead.
#[test]
fn the_stop_does_not_shut_down_the_socket_under_a_worker_blocked_in_accept() {
    if !on_path("python3") {
        eprintln!("skipped: no python3 on PATH");
        return;
    }
    let script = "import signal, socket, sys\n\
                  listener = socket.fromfd(3, socket.AF_INET, socket.SOCK_STREAM)\n\
                  signal.signal(signal.SIGTERM, signal.SIG_IGN)\n\
                  print('accepting', file=sys.stderr, flush=True)\n\
                  try:\n    listener.accept()\n\
                  except OSError as e:\n    print(f'accept failed: {e}', file=sys.stderr, flush=True)\n";
    for policy in ["none", "reuseport"] {
        let herd = herd_run(&[
            "run",
            "-w",
            "2",
            "--policy",
            policy,
            "--ready",
            "delay:0s",
            "--kill-timeout",
            "1s",
            "--listen",
            "web=127.0.0.1:0",
            "--",
            "python3",
            "-c",
            script,
        ]);
        herd.wait_for_log("accepting", 2);
        herd.signal("TERM");
        let (status, _, stderr) = herd.wait();
        assert!(status.success(), "{policy}: {status}; stderr:\n{stderr}");
        assert!(!stderr.contains("accept failed"), "{policy}:\n{stderr}");
        assert_eq!(stderr.matches("exited: signal: 9 (SIGKILL)").count(), 2, "{policy}:\n{stderr}");
    }
}

/// Kills the processes it names when dropped (a test that fails leaves none behind).
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in self.0.iter().filter(|&&pid| !herd_tests::process_gone(pid)) {
            herd_tests::send_signal(*pid, "KILL");
        }
    }
}

/// What a socket-activated worker started stops with it, as systemd's
/// `KillMode=control-group` stops a service's processes: SIGTERM goes to the worker's whole
/// process group (found by brk11: `sh -c 'sleep 100 & wait'` left both sleeps running after
/// herd exited 0).
#[test]
fn what_a_worker_started_in_its_group_is_stopped_with_it() {
    let script = "sleep 100 & echo \"background=$!\" >&2; wait";
    let herd = herd_run(&[
        "run",
        "-w",
        "2",
        "--ready",
        "delay:0s",
        "--listen",
        "web=127.0.0.1:0",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let pids: Vec<u32> = herd
        .wait_for_log("background=", 2)
        .iter()
        .map(|l| l.rsplit('=').next().and_then(|p| p.parse().ok()).expect(l))
        .collect();
    let background = KillOnDrop(pids);
    herd.signal("TERM");
    let (status, _, stderr) = herd.wait();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    for &pid in &background.0 {
        herd_tests::wait_until(&format!("background process {pid} stopped"), || {
            herd_tests::process_gone(pid)
        });
    }
}

/// A child killed (and reaped) when dropped, however the test ends.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// herd's stderr pipe breaking (a logger restarting) loses its lines, never the service:
/// herd and its workers run on through a rolling restart (whose lines cannot be written) and
/// stop with exit 0 (found by brk11: herd panicked with exit 101 and every worker died).
#[test]
fn a_broken_stderr_pipe_loses_lines_not_the_service() {
    use std::io::BufRead;
    let mut cmd = Command::new(herd_binary());
    cmd.args(["run", "-w", "2", "--no-control", "--ready", "delay:0s", "--listen"]);
    cmd.args([
        "web=127.0.0.1:0",
        "--",
        "sh",
        "-c",
        "echo started; echo to-stderr >&2; exec sleep 1000",
    ]);
    cmd.stdin(std::process::Stdio::null());
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut herd = Guard(cmd.spawn().expect("spawn herd"));
    // The reading end of herd's stderr is closed: its next line meets EPIPE.
    drop(herd.0.stderr.take());
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = herd.0.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut started = 0;
    let mut wait_started = |count: usize| {
        while started < count {
            let line = lines.recv_timeout(herd_tests::DEADLINE).expect("a worker's line");
            started += usize::from(line.ends_with("started"));
        }
    };
    wait_started(2);
    // A rolling restart: lines herd cannot write, and two new workers.
    herd_tests::send_signal(herd.0.id(), "HUP");
    wait_started(4);
    herd_tests::send_signal(herd.0.id(), "TERM");
    let mut status = None;
    herd_tests::wait_until("herd's exit", || {
        status = herd.0.try_wait().expect("try_wait");
        status.is_some()
    });
    let status = status.expect("exited");
    assert!(status.success(), "{status}");
}

/// A worker SIGTTOU removes during the start is no failed start: the start is done when the
/// workers left are ready (found by brk11: herd waited for the original count and failed
/// the start at the ready timeout).
#[test]
fn sigttou_during_the_start_is_no_failed_start() {
    let herd = herd_run(&[
        "run",
        "-w",
        "3",
        "--ready",
        "delay:4s",
        "--ready-timeout",
        "12s",
        "--listen",
        "web=127.0.0.1:0",
        "--",
        "sh",
        "-c",
        "echo started >&2; exec sleep 1000",
    ]);
    herd.wait_for_log("started", 3);
    herd.signal("TTOU");
    herd.wait_for_log("herd: ready: 2 workers", 1);
    herd.signal("TERM");
    let (status, _, stderr) = herd.wait();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
}

/// A worker count beyond the documented limit (1024) is one line and exit 1, before any fork
/// (found by brk11: `-w 99999999999` forked about 370 processes in 4 s, saying nothing).
#[test]
fn a_worker_count_beyond_the_limit_is_one_line() {
    use std::io::Read;
    let mut cmd = Command::new(herd_binary());
    cmd.args(["run", "-w", "99999999999", "--listen", "127.0.0.1:0", "--", "true"]);
    cmd.stdin(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut herd = Guard(cmd.spawn().expect("spawn herd"));
    let mut status = None;
    herd_tests::wait_until("herd's exit", || {
        status = herd.0.try_wait().expect("try_wait");
        status.is_some()
    });
    let mut stderr = String::new();
    herd.0.stderr.take().expect("piped").read_to_string(&mut stderr).expect("read stderr");
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert_eq!(stderr, "herd: run: -w 99999999999: a number of workers from 1 to 1024, or max\n");
}

/// A socket-activated worker's standard input is `/dev/null`, as systemd's
/// `StandardInput=null`, not herd's own (here `/dev/zero`).
#[test]
fn a_worker_reads_dev_null_not_herds_stdin() {
    let script = "echo \"stdin=$(readlink /proc/$$/fd/0)\" >&2; exec sleep 1000";
    let line =
        one_worker_says("exec 0</dev/zero", &["--listen", "web=127.0.0.1:0"], script, "stdin=");
    assert!(line.ends_with("stdin=/dev/null"), "{line:?}");
}

/// What a worker writes as it stops reaches herd's stdout before herd exits: herd waits (1 s at
/// most) for its relay threads to copy the last of each worker's output. Before, the relays were
/// never waited for, and herd could exit with a worker's last lines still in them (seen once:
/// a Python worker's first line missing from herd's output). 50,000 lines written on SIGTERM
/// take a relay longer to copy than herd took to exit.
#[test]
fn a_workers_last_output_is_relayed_before_herd_exits() {
    const LINES: usize = 50_000;
    let script = format!(
        "trap 'seq 1 {LINES}; exit 0' TERM; echo started >&2; while :; do sleep 0.05; done"
    );
    let herd = herd_run(&[
        "run",
        "-w",
        "1",
        "--ready",
        "delay:0s",
        "--listen",
        "web=127.0.0.1:0",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    herd.wait_for_log("started", 1);
    herd.signal("TERM");
    let (status, stdout, stderr) = herd.wait();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    let last = stdout.iter().rev().find(|l| l.contains("worker 1]"));
    assert_eq!(stdout.iter().filter(|l| l.contains("worker 1]")).count(), LINES, "last: {last:?}");
    assert_eq!(last.map(String::as_str), Some(&*format!("[sh worker 1] {LINES}")), "{stderr}");
}
