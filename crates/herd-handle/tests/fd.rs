//! Descriptors: `fd://` specs, `Listener::from_fd` and `stream_from_fd`.

mod util;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

use herd_handle::{BindOptions, Bound, Listener, Spec, Stream, bind, stream_from_fd};
use util::{DEADLINE, TempDir, accept, is_cloexec, is_nonblocking, is_open, listen};

fn connect(listener: &Listener) -> TcpStream {
    TcpStream::connect(listener.local_addr().unwrap().socket_addr().unwrap()).unwrap()
}

#[test]
fn fd_spec_of_a_listening_socket_gives_a_listener_and_leaves_the_original() {
    let original = listen("tcp://127.0.0.1:0");
    // A second descriptor of our own for the spec to name, so nothing is owned twice.
    let named: OwnedFd = original.as_fd().try_clone_to_owned().unwrap();
    let spec = Spec::Fd(named.as_raw_fd());

    let inherited = match bind(&spec, &BindOptions::default()).unwrap() {
        Bound::Listener(listener) => listener,
        Bound::Udp(_) => panic!("a listener"),
    };
    assert_ne!(inherited.as_raw_fd(), named.as_raw_fd(), "duplicated, not taken over");
    assert!(is_cloexec(&inherited));
    assert!(is_nonblocking(&inherited));
    assert_eq!(inherited.local_addr().unwrap(), original.local_addr().unwrap());

    let _client = connect(&original);
    accept(&inherited);
    drop(inherited);

    // The named descriptor and the original listener are still open and working.
    assert!(is_open(named.as_raw_fd()));
    let _client = connect(&original);
    accept(&original);
}

/// An inherited descriptor without CLOEXEC (as a caller passes it: `--listen fd://7`) is
/// made CLOEXEC once bound, so the programs this process starts do not inherit it besides
/// the copy they are handed (found by brk11: `herd run --listen fd://7` left 7 open in each
/// worker).
#[test]
fn fd_spec_makes_the_inherited_descriptor_close_on_exec() {
    let original = listen("tcp://127.0.0.1:0");
    // SAFETY: dup of an open descriptor; the new one (without CLOEXEC) is owned just below.
    let raw = unsafe { libc::dup(original.as_raw_fd()) };
    assert!(raw >= 0, "dup: {}", io::Error::last_os_error());
    // SAFETY: `raw` was just created and nothing else owns it.
    let named = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    assert!(!is_cloexec(&named));
    let bound = bind(&Spec::Fd(raw), &BindOptions::default()).unwrap();
    assert!(is_cloexec(&named), "fd://{raw} left inheritable");
    drop(bound);
}

#[test]
fn fd_spec_of_a_udp_socket_gives_a_udp_socket() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let bound = bind(&Spec::Fd(socket.as_raw_fd()), &BindOptions::default()).unwrap();
    assert_eq!(bound.local_addr().unwrap(), Spec::Udp(socket.local_addr().unwrap()));
    let inherited = bound.into_udp().expect("a UDP socket");
    assert!(is_cloexec(&inherited));
    inherited.set_read_timeout(Some(DEADLINE)).unwrap();
    socket.send_to(b"d", inherited.local_addr().unwrap()).unwrap();
    let mut buf = [0; 1];
    assert_eq!(inherited.recv(&mut buf).unwrap(), 1);
}

#[test]
fn fd_spec_of_an_unusable_descriptor_is_an_error() {
    let error = bind(&Spec::Fd(i32::MAX), &BindOptions::default()).unwrap_err();
    assert_eq!((error.op(), error.raw_os_error()), ("dup", Some(libc::EBADF)));
    assert_eq!(error.address(), format!("fd://{}", i32::MAX));

    let (reader, _writer) = io::pipe().unwrap();
    let error = bind(&Spec::Fd(reader.as_raw_fd()), &BindOptions::default()).unwrap_err();
    assert_eq!((error.op(), error.raw_os_error()), ("inherit", Some(libc::ENOTSOCK)));

    let listener = listen("tcp://127.0.0.1:0");
    let client = connect(&listener);
    let error = bind(&Spec::Fd(client.as_raw_fd()), &BindOptions::default()).unwrap_err();
    assert_eq!(error.op(), "inherit");
    assert!(error.to_string().contains("not a listening socket"), "{error}");
    assert!(is_open(client.as_raw_fd()), "the original stays open");
}

#[test]
fn from_fd_rejects_a_socket_that_does_not_listen() {
    let listener = listen("tcp://127.0.0.1:0");
    let client = connect(&listener);
    let error = Listener::from_fd(client.into()).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("not a listening socket"), "{error}");
}

#[test]
fn from_fd_rejects_a_udp_socket() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let error = Listener::from_fd(socket.into()).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("not a stream socket"), "{error}");
}

#[test]
fn from_fd_adopts_std_listeners_and_makes_them_nonblocking() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = tcp.local_addr().unwrap();
    let listener = Listener::from_fd(tcp.into()).unwrap();
    assert!(is_nonblocking(&listener));
    assert_eq!(listener.local_addr().unwrap(), Spec::Tcp(address));
    assert_eq!(listener.try_accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
    let _client = TcpStream::connect(address).unwrap();
    accept(&listener);

    let dir = TempDir::new("from-fd");
    let path = dir.join("std.sock");
    let unix = UnixListener::bind(&path).unwrap();
    let listener = Listener::from_fd(unix.into()).unwrap();
    assert!(listener.is_unix());
    assert!(is_nonblocking(&listener));
    // Adopted listeners report what getsockname says.
    assert_eq!(listener.local_addr().unwrap(), Spec::Unix(path.clone()));
    let _client = UnixStream::connect(&path).unwrap();
    accept(&listener);
}

#[test]
fn listeners_convert_to_owned_fds_and_back() {
    let listener = listen("tcp://127.0.0.1:0");
    let spec = listener.local_addr().unwrap();
    let fd = OwnedFd::from(listener);
    let listener = Listener::from_fd(fd).unwrap();
    assert_eq!(listener.local_addr().unwrap(), spec);
}

#[test]
fn stream_from_fd_adopts_tcp_and_unix_connections() {
    let listener = listen("tcp://127.0.0.1:0");
    let mut client = connect(&listener);
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let (accepted, _) = accept(&listener);
    let mut stream = stream_from_fd(accepted.into()).unwrap();
    assert!(matches!(stream, Stream::Tcp(_)));
    stream.write_all(b"t").unwrap();
    let mut buf = [0];
    client.read_exact(&mut buf).unwrap();

    let (ours, mut theirs) = UnixStream::pair().unwrap();
    theirs.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut stream = stream_from_fd(ours.into()).unwrap();
    assert!(matches!(stream, Stream::Unix(_)));
    stream.write_all(b"u").unwrap();
    theirs.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"u");
}

#[test]
fn stream_from_fd_rejects_listeners_and_datagram_sockets() {
    let listener = listen("tcp://127.0.0.1:0");
    let error = stream_from_fd(listener.into()).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("listening"), "{error}");

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let error = stream_from_fd(socket.into()).unwrap_err();
    assert!(error.to_string().contains("not a stream socket"), "{error}");

    let (reader, _writer) = io::pipe().unwrap();
    let error = stream_from_fd(reader.into()).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::ENOTSOCK));
}
