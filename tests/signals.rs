//! The primary's signal handling across fork: a `signal-primary` fixture plays the primary,
//! so that signals reach it and its child and never this test process.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use herd_tests::{Reaped, within_deadline};

#[test]
fn a_signal_landing_in_a_child_between_fork_and_exec_is_not_counted_by_the_primary() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_signal-primary"));
    // A group of its own: nothing it does reaches this test's group.
    cmd.stdout(Stdio::piped()).process_group(0);
    let mut primary = Reaped::spawn(cmd);
    let mut stdout = primary.take_stdout().expect("piped stdout");
    let (status, stderr) = primary.wait();
    let out = within_deadline("the fixture's report", move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    assert!(status.success(), "signal-primary: {status}; stderr:\n{stderr}");
    assert_eq!(
        out.expect("read the report").trim(),
        "hup 0",
        "the child's SIGHUP reached the primary's loop; stderr:\n{stderr}"
    );
}

#[test]
fn a_sigttin_whose_fork_fails_is_reported_not_dropped() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_signal-primary"));
    cmd.arg("ttin-fails").stdout(Stdio::piped()).process_group(0);
    let mut primary = Reaped::spawn(cmd);
    let mut stdout = primary.take_stdout().expect("piped stdout");
    let (status, stderr) = primary.wait();
    let out = within_deadline("the fixture's report", move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    assert!(status.success(), "signal-primary: {status}; stderr:\n{stderr}");
    let out = out.expect("read the report");
    assert!(out.starts_with("ForkFailed fork worker 1: spawn /nonexistent/herd-worker: "), "{out}");
}
