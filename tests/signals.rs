//! The primary's signal handling across fork and beside the application's own handlers: the
//! `signal-primary` and `tokio-primary` fixtures play the primary, so that signals reach them
//! and their children and never this test process.

use std::os::unix::process::CommandExt;
use std::process::Command;

use herd_tests::run_fixture;

/// Runs the `signal-primary` fixture with `args` in a process group of its own (nothing it
/// does reaches this test's group); returns its report (stdout) and stderr once it exited 0.
fn run_signal_primary(args: &[&str]) -> (String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_signal-primary"));
    cmd.args(args).process_group(0);
    run_fixture(cmd)
}

#[test]
fn a_signal_landing_in_a_child_between_fork_and_exec_is_not_counted_by_the_primary() {
    let (out, stderr) = run_signal_primary(&[]);
    assert_eq!(
        out.trim(),
        "hup 0",
        "the child's SIGHUP reached the primary's loop; stderr:\n{stderr}"
    );
}

#[test]
fn a_sigttin_whose_fork_fails_is_reported_not_dropped() {
    let (out, _stderr) = run_signal_primary(&["ttin-fails"]);
    assert!(out.starts_with("ForkFailed fork worker 1: spawn /nonexistent/herd-worker: "), "{out}");
}

/// herd's handler of SIGHUP and the application's (`tokio::signal`, registered before it) both
/// run for one SIGHUP, and the primary's async events (`next_event_async`, in a `select!`
/// beside the application's signal stream) carry herd's restart through.
#[test]
fn the_primarys_signal_handling_runs_beside_another_handler_of_the_same_signal() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokio-primary"));
    cmd.process_group(0);
    let (out, stderr) = run_fixture(cmd);
    assert_eq!(out.trim(), "tokio 1 herd 1 restarted true", "stderr:\n{stderr}");
}
