//! The README's program ("A cluster in a few lines"), as the `readme` fixture: that it is the
//! README's text, and how it fails on a port in use (issue 9, finding 2: it used to crash-loop
//! for ever, each worker printing the error and being respawned).

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use herd_tests::{Reaped, send_signal, wait_until};

/// The tests here use port 8080, the README's: one at a time.
static PORT_8080: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The fixture's source without its leading `//!` lines: the program itself.
fn fixture_program() -> String {
    let source = include_str!("fixtures/readme.rs");
    let body: Vec<&str> = source.lines().skip_while(|l| l.starts_with("//!")).collect();
    body.join("\n").trim_start().to_owned()
}

/// The first fenced block after `heading` in `text`, `fence` (```` ```rust ````) included.
fn block_after(text: &str, heading: &str, fence: &str) -> String {
    let at = text.find(heading).unwrap_or_else(|| panic!("no {heading:?}"));
    let start = text[at..].find(fence).map(|i| at + i + fence.len() + 1).expect("a code block");
    let end = text[start..].find("```").map(|i| start + i).expect("the block's end");
    text[start..end].to_owned()
}

#[test]
fn the_readme_program_and_the_crate_docs_example_are_the_fixture() {
    let program = fixture_program();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let in_readme = block_after(&readme, "## A cluster in a few lines", "```rust,no_run");
    assert_eq!(in_readme.trim_end(), program.trim_end(), "README.md and fixtures/readme.rs");
    let lib =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/herd/src/lib.rs"))
            .expect("crates/herd/src/lib.rs");
    let docs: String = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
        .collect();
    let in_docs = block_after(&docs, "", "```no_run");
    assert_eq!(
        in_docs.trim_end(),
        program.trim_end(),
        "the herd crate's example and fixtures/readme.rs"
    );
}

/// The scenario: port 8080 in use, the README's program started. It prints the primary's bind
/// error in one line and exits non-zero within 2 s.
#[test]
fn on_a_port_in_use_the_readme_program_exits_non_zero_within_2_s_in_one_line() {
    let _port = PORT_8080.lock().unwrap_or_else(|p| p.into_inner());
    // Held here, or by whoever holds it already: in use either way.
    let blocker = TcpListener::bind("127.0.0.1:8080");
    if let Err(e) = &blocker {
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "bind 127.0.0.1:8080: {e}");
    }
    // Three runs: a worker still starting when the primary stops must add nothing either.
    for run in 1..=3 {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_readme"));
        cmd.env_remove(herd::WORKER_ID_VAR).env_remove("HERD_SCHED_POLICY");
        let started = Instant::now();
        let (status, stderr) = Reaped::spawn(cmd).wait();
        let took = started.elapsed();
        assert!(!status.success(), "run {run}: {status}; stderr:\n{stderr}");
        assert!(took < Duration::from_secs(2), "run {run}: exited after {took:?}; {stderr:?}");
        assert_eq!(stderr.lines().count(), 1, "run {run}: one line: {stderr:?}");
        assert!(
            stderr.contains("127.0.0.1:8080") && stderr.contains("in use"),
            "run {run}: the line names the address and the error: {stderr:?}"
        );
    }
}

/// SIGTERM to the README's program: a graceful stop, exit 0, and not a word on stderr. Its
/// workers used to print `Error: ... the listening socket was shut down by the primary` and
/// exit 1 (8 runs in 10 under `reuseport`, 5 under `none`): an accept woken by the stop's
/// shutdown returned the error before the worker's disconnect arrived.
#[test]
fn the_readme_program_stops_quietly_on_sigterm() {
    let _port = PORT_8080.lock().unwrap_or_else(|p| p.into_inner());
    for policy in ["reuseport", "none", "rr"] {
        for run in 1..=5 {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_readme"));
            cmd.env_remove(herd::WORKER_ID_VAR).env("HERD_SCHED_POLICY", policy);
            let program = Reaped::spawn(cmd);
            // Both workers serving, so both wait in accept when the stop comes.
            let mut greeted = std::collections::BTreeSet::new();
            wait_until("both workers of the README program answering on 8080", || {
                use std::io::Read;
                let mut text = String::new();
                let answered = std::net::TcpStream::connect("127.0.0.1:8080")
                    .and_then(|mut s| s.read_to_string(&mut text));
                if answered.is_ok() && text.starts_with("hello from worker ") {
                    greeted.insert(text);
                }
                greeted.len() == 2
            });
            send_signal(program.id(), "TERM");
            let (status, stderr) = program.wait();
            assert!(status.success(), "{policy}, run {run}: {status}; stderr:\n{stderr}");
            assert_eq!(stderr, "", "{policy}, run {run}: stderr");
        }
    }
}
