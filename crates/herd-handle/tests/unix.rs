//! Unix socket listeners: paths, permissions, stale files, abstract names.

mod util;

use std::fs;
use std::io::{self, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::Path;

use herd_handle::{BindOptions, Listener, PeerAddr, SocketFile, Spec, Stream, bind};
use util::{DEADLINE, TempDir, accept, is_cloexec, is_nonblocking, listen_with, unique_name};

fn unix(path: &Path) -> Spec {
    Spec::Unix(path.to_path_buf())
}

fn connect(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(path).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// Sends a byte each way between a client and the listener's accepted stream.
#[track_caller]
fn exchange(mut client: UnixStream, listener: &Listener) {
    let (mut server, peer) = accept(listener);
    assert!(matches!(server, Stream::Unix(_)));
    assert_eq!(peer.to_string(), "(unnamed)", "the client did not bind");
    assert!(is_cloexec(&server));
    assert!(!is_nonblocking(&server));
    client.write_all(b"u").unwrap();
    let mut buf = [0];
    server.read_exact(&mut buf).unwrap();
    server.write_all(b"x").unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"x");
}

#[test]
fn path_listener_binds_and_accepts() {
    let dir = TempDir::new("path");
    let path = dir.join("app.sock");
    let listener = listen_with(&unix(&path), &BindOptions::default());
    assert!(listener.is_unix());
    assert!(is_cloexec(&listener));
    assert!(is_nonblocking(&listener));
    assert_eq!(listener.local_addr().unwrap(), unix(&path));
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    exchange(connect(&path), &listener);

    let listener = listener.into_tcp_listener().expect_err("a Unix listener");
    let std_listener = listener.into_unix_listener().expect("a Unix listener");
    assert!(is_nonblocking(&std_listener));
}

#[test]
fn readable_and_writable_for_all_give_mode_666() {
    let dir = TempDir::new("mode");
    let path = dir.join("open.sock");
    let options = BindOptions { readable_all: true, writable_all: true, ..Default::default() };
    let _listener = listen_with(&unix(&path), &options);
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o666, "mode {mode:o}");
}

#[test]
fn readable_for_all_adds_read_bits() {
    let dir = TempDir::new("mode-r");
    let path = dir.join("read.sock");
    let options = BindOptions { readable_all: true, ..Default::default() };
    let _listener = listen_with(&unix(&path), &options);
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o444, 0o444, "mode {mode:o}");
    assert_eq!(mode & 0o111, 0, "no execute bits on a socket: mode {mode:o}");
}

#[test]
fn a_stale_socket_file_is_removed_and_the_path_rebound() {
    let dir = TempDir::new("stale");
    let path = dir.join("stale.sock");
    let spec = unix(&path);
    drop(listen_with(&spec, &BindOptions::default()));
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket(), "drop leaves the file");

    let no_removal = BindOptions { remove_stale: false, ..Default::default() };
    let error = bind(&spec, &no_removal).expect_err("the stale file is kept");
    assert_eq!(error.raw_os_error(), Some(libc::EADDRINUSE));

    let listener = listen_with(&spec, &BindOptions::default());
    exchange(connect(&path), &listener);
}

#[test]
fn a_live_socket_is_never_removed() {
    let dir = TempDir::new("live");
    let path = dir.join("live.sock");
    let spec = unix(&path);
    let live = listen_with(&spec, &BindOptions::default());

    let error = bind(&spec, &BindOptions::default()).expect_err("somebody listens there");
    assert_eq!(error.raw_os_error(), Some(libc::EADDRINUSE));
    assert_eq!(error.op(), "bind");
    assert!(error.to_string().starts_with(&format!("bind unix://{}: ", path.display())));

    // The first listener still has its file and its clients. (The liveness probe reached it as
    // a connection that closed at once: take that one first.)
    let (_probe, _) = accept(&live);
    exchange(connect(&path), &live);
}

#[test]
fn a_regular_file_is_never_removed() {
    let dir = TempDir::new("file");
    let path = dir.join("data.sock");
    fs::write(&path, b"precious").unwrap();
    let error = bind(&unix(&path), &BindOptions::default()).expect_err("the path is taken");
    assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    assert_eq!(fs::read(&path).unwrap(), b"precious");
}

#[test]
fn a_symlink_to_a_stale_socket_is_never_removed() {
    let dir = TempDir::new("symlink");
    let target = dir.join("target.sock");
    drop(listen_with(&unix(&target), &BindOptions::default()));
    let link = dir.join("link.sock");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let error = bind(&unix(&link), &BindOptions::default()).expect_err("the path is taken");
    assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
}

#[test]
fn abstract_name_binds_and_accepts() {
    let name = unique_name("abstract");
    let spec = Spec::UnixAbstract(name.clone());
    let listener = listen_with(&spec, &BindOptions::default());
    assert!(listener.is_unix());
    assert_eq!(listener.local_addr().unwrap(), spec);

    let address = SocketAddr::from_abstract_name(&name).unwrap();
    let client = UnixStream::connect_addr(&address).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    exchange(client, &listener);

    let error = bind(&spec, &BindOptions::default()).expect_err("the name is taken");
    assert_eq!(error.raw_os_error(), Some(libc::EADDRINUSE));
}

/// An abstract socket address for socket2: `sun_path` starts with a NUL byte.
fn abstract_addr(name: &[u8]) -> socket2::SockAddr {
    let path = [&[0][..], name].concat();
    socket2::SockAddr::unix(std::ffi::OsStr::from_bytes(&path)).unwrap()
}

#[test]
fn named_unix_peers_print_their_name() {
    let name = unique_name("peer");
    let listener = listen_with(&Spec::UnixAbstract(name.clone()), &BindOptions::default());
    let client_name = unique_name("client");
    let client = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    client.bind(&abstract_addr(&client_name)).unwrap();
    client.connect(&abstract_addr(&name)).unwrap();

    let (_stream, peer) = accept(&listener);
    let PeerAddr::Unix(address) = &peer else { panic!("a Unix peer") };
    assert_eq!(address.as_abstract_name(), Some(&client_name[..]));
    assert_eq!(peer.to_string(), format!("@{}", String::from_utf8(client_name).unwrap()));
}

#[test]
fn an_empty_abstract_name_is_an_error() {
    let error = bind(&Spec::UnixAbstract(Vec::new()), &BindOptions::default()).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(error.address(), "unix:@");
}

#[test]
fn a_path_too_long_for_sun_path_is_an_error() {
    let dir = TempDir::new("long");
    let path = dir.join(&"x".repeat(200));
    let error = bind(&unix(&path), &BindOptions::default()).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(!path.exists());
}

#[test]
fn accept_on_a_shut_down_listener_fails_instead_of_spinning() {
    let listener = listen_with(&Spec::UnixAbstract(unique_name("shut")), &BindOptions::default());
    socket2::SockRef::from(&listener).shutdown(std::net::Shutdown::Read).unwrap();
    let error = util::within("accept after shutdown", move || listener.accept().map(|_| ()))
        .expect_err("nothing can arrive");
    assert_eq!(error.kind(), io::ErrorKind::NotConnected, "{error}");
    assert!(error.to_string().contains("shut down"), "{error}");
}

/// A socket file is removed only if it is still the file that was recorded: one that another
/// process bound at the path since (a stale file replaced in between) stays.
#[test]
fn only_the_recorded_socket_file_is_removed() {
    let dir = TempDir::new("owned");
    let path = dir.join("owned.sock");
    let first = listen_with(&unix(&path), &BindOptions::default());
    let created = first.socket_file().expect("a path bind records its file");
    assert_eq!(SocketFile::at(&path).unwrap(), created);

    // Another process takes the path over: removes the file, binds its own socket.
    fs::remove_file(&path).unwrap();
    let other = std::os::unix::net::UnixListener::bind(&path).unwrap();
    assert_ne!(SocketFile::at(&path).unwrap(), created);
    assert!(!created.remove_if_at(&path).unwrap(), "not ours: kept");
    let _client = connect(&path);
    other.accept().expect("the other socket is still reachable");
    // Nothing is left beside the path by the attempt.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

    // Its own file, the recorded one, is removed.
    let mine = SocketFile::at(&path).unwrap();
    assert!(mine.remove_if_at(&path).unwrap());
    assert!(fs::symlink_metadata(&path).is_err());
    assert!(!mine.remove_if_at(&path).unwrap(), "gone: nothing to remove");
    drop(first);
}
