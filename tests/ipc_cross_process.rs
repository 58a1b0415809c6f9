//! herd-ipc between real processes: a fixture binary exec'd as a child.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;

use herd_ipc::{Channel, Error};
use herd_tests::{CHANNEL_FD, CHANNEL_FD_VAR, Reaped, inheritable_fds, within_deadline};

fn child(mode: &str) -> (Reaped, Channel) {
    let (ours, theirs) = Channel::pair().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ipc-child"));
    cmd.arg(mode);
    theirs.into_child(&mut cmd, CHANNEL_FD, CHANNEL_FD_VAR).unwrap();
    let child = Reaped::spawn(cmd);
    // Dropping the command closes our copy of the child's end: the child's exit is then EOF.
    (child, ours)
}

#[test]
fn a_child_serves_a_connection_on_a_listener_it_received() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let (child, channel) = child("serve");
    let child_pid = child.id();

    channel.send(b"listener+report", &[listener.as_fd(), writer.as_fd()]).unwrap();
    // Only the child has the write end from now on, so the report ends when the child does.
    drop(writer);
    // The parent never accepts: the connection can only be served by the child.
    let mut conn = TcpStream::connect(addr).unwrap();
    let greeting = within_deadline("child's answer", move || {
        let mut text = String::new();
        conn.read_to_string(&mut text).map(|_| text)
    });
    let report = within_deadline("child's report", move || {
        let mut line = String::new();
        BufReader::new(reader).read_line(&mut line).map(|_| line)
    });
    let (status, stderr) = child.wait();

    let report = report.unwrap();
    assert!(status.success(), "child failed: {status}; stderr:\n{stderr}");
    assert_eq!(greeting.unwrap(), format!("pid={child_pid}\n"));
    assert!(report.starts_with(&format!("served pid={child_pid} peer=127.0.0.1:")), "{report}");
    // Nothing but stdio, the channel, and whatever this test process itself inherited
    // without FD_CLOEXEC from its own parent crossed exec.
    let mut expected: Vec<i32> = inheritable_fds();
    expected.extend([0, 1, 2, CHANNEL_FD]);
    expected.sort_unstable();
    expected.dedup();
    let expected: Vec<String> = expected.iter().map(i32::to_string).collect();
    let got = report.trim_end().rsplit_once("fds=").map(|(_, fds)| fds);
    assert_eq!(got, Some(expected.join(",").as_str()), "{report}");
}

#[test]
fn a_killed_child_is_end_of_stream_not_a_hang() {
    let (mut child, channel) = child("hang");
    let ready = within_deadline("child ready", {
        let channel = Channel::from_fd(channel.as_fd().try_clone_to_owned().unwrap()).unwrap();
        move || channel.recv().map(|m| m.bytes)
    });
    assert_eq!(ready.unwrap(), b"ready");
    child.kill();
    let after = within_deadline("end of stream", move || channel.recv().map(|m| m.bytes));
    assert!(matches!(after, Err(Error::Closed)), "{after:?}");
}

#[test]
fn a_parent_with_its_standard_streams_closed_still_hands_over_a_working_channel() {
    // The fixture closes 0, 1 and 2 itself (std reopens closed ones at start-up), so its
    // channel's ends are 0 and 1, and its child's stdout is redirected to /dev/null.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ipc-child"));
    cmd.arg("closed-stdio");
    let (status, stderr) = Reaped::spawn(cmd).wait();
    assert!(status.success(), "ipc-child closed-stdio: {status}; stderr:\n{stderr}");
    assert_eq!(stderr.trim(), "ready through fd 1");
}
