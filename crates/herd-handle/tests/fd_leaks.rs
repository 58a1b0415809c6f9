//! No descriptor leaks on error paths: failing binds and rejected adoptions leave the
//! process's descriptor table as they found it.
//!
//! The only test of its own binary, so no other test opens descriptors meanwhile.

mod util;

use std::fs;
use std::io;
use std::net::{TcpStream, UdpSocket};
use std::os::fd::AsRawFd;

use herd_handle::{BindOptions, Listener, Spec, bind, stream_from_fd};
use util::{TempDir, accept, listen, listen_with};

fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn failures_close_every_descriptor_they_opened() {
    let dir = TempDir::new("leaks");
    let options = BindOptions::default();
    let tcp = listen("tcp://127.0.0.1:0");
    let tcp_spec = tcp.local_addr().unwrap();
    let live_path = dir.join("live.sock");
    let live = listen_with(&Spec::Unix(live_path.clone()), &options);
    let file_path = dir.join("file.sock");
    fs::write(&file_path, b"").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(tcp_spec.socket_addr().unwrap()).unwrap();
    let (_served, _) = accept(&tcp);
    let long = Spec::Unix(dir.join(&"x".repeat(200)));

    let before = open_fds();
    for _ in 0..5 {
        assert!(bind(&tcp_spec, &options).is_err());
        assert!(bind(&Spec::Unix(live_path.clone()), &options).is_err());
        assert!(bind(&Spec::Unix(file_path.clone()), &options).is_err());
        assert!(bind(&long, &options).is_err());
        assert!(bind(&Spec::UnixAbstract(Vec::new()), &options).is_err());
        assert!(bind(&Spec::Fd(i32::MAX), &options).is_err());
        assert!(bind(&Spec::Fd(client.as_raw_fd()), &options).is_err());
        let (reader, _writer) = io::pipe().unwrap();
        assert!(bind(&Spec::Fd(reader.as_raw_fd()), &options).is_err());
        assert!(Listener::from_fd(udp.try_clone().unwrap().into()).is_err());
        assert!(stream_from_fd(tcp.try_clone().unwrap().into()).is_err());
        drop(listen("tcp://127.0.0.1:0"));
        // Each live-socket probe reached the live listener: take it so the backlog stays
        // small, and close it.
        drop(accept(&live));
    }
    assert_eq!(open_fds(), before, "descriptors leaked");
}
