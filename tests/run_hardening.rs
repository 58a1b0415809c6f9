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
