//! TCP listeners: binding, accepting, options, flags and errors.

mod util;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;

use herd_handle::{BindOptions, Error, PeerAddr, Spec, Stream, bind};
use socket2::SockRef;
use util::{DEADLINE, accept, is_cloexec, is_nonblocking, listen, listen_with, within};

fn connect(listener: &herd_handle::Listener) -> TcpStream {
    let address = listener.local_addr().unwrap().socket_addr().expect("a TCP listener");
    let stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
}

#[test]
fn port_zero_reports_the_real_port_and_data_flows_both_ways() {
    let spec: Spec = "tcp://127.0.0.1:0".parse().unwrap();
    let listener = listen_with(&spec, &BindOptions::default());
    assert!(!listener.is_unix());
    let local = listener.local_addr().unwrap();
    let port = local.port().unwrap();
    assert_ne!(port, 0);
    assert_eq!(local, spec.with_port(port));

    let mut client = connect(&listener);
    let (mut server, peer) = accept(&listener);
    assert!(matches!(&server, Stream::Tcp(_)));
    let PeerAddr::Tcp(peer_address) = peer else { panic!("a TCP peer: {peer}") };
    assert_eq!(peer_address, client.local_addr().unwrap());
    assert_eq!(peer.to_string(), client.local_addr().unwrap().to_string());
    assert_eq!(server.peer_addr().unwrap().to_string(), peer.to_string());

    client.write_all(b"ping").unwrap();
    let mut buf = [0; 4];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    // Through `&Stream` as well.
    (&server).write_all(b"pong").unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");

    server.shutdown(Shutdown::Write).unwrap();
    assert_eq!(client.read(&mut buf).unwrap(), 0, "end of stream after shutdown");
}

#[test]
fn ipv6_only_listener_on_loopback() {
    for ipv6_only in [true, false] {
        let spec: Spec = "tcp://[::1]:0".parse().unwrap();
        let listener = listen_with(&spec, &BindOptions { ipv6_only, ..Default::default() });
        // Linux itself sets IPV6_V6ONLY on a bind to one IPv6 address such as ::1, so only
        // the `true` case can be told apart here (the tests bind nothing but loopback).
        if ipv6_only {
            assert!(SockRef::from(&listener).only_v6().unwrap());
        }
        let local = listener.local_addr().unwrap();
        assert!(matches!(local, Spec::Tcp(SocketAddr::V6(_))), "{local}");

        let mut client = connect(&listener);
        let (mut server, _) = accept(&listener);
        server.write_all(b"six").unwrap();
        let mut buf = [0; 3];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"six");
    }
}

#[test]
fn listener_options_are_set() {
    let listener = listen("tcp://127.0.0.1:0");
    assert!(SockRef::from(&listener).reuse_address().unwrap(), "SO_REUSEADDR by default");
    assert!(!SockRef::from(&listener).reuse_port().unwrap());

    let options = BindOptions { reuse_address: false, ..Default::default() };
    let listener = listen_with(&"tcp://127.0.0.1:0".parse().unwrap(), &options);
    assert!(!SockRef::from(&listener).reuse_address().unwrap());
}

#[test]
fn reuse_port_lets_two_listeners_share_a_port() {
    let options = BindOptions { reuse_port: true, ..Default::default() };
    let first = listen_with(&"tcp://127.0.0.1:0".parse().unwrap(), &options);
    let spec = first.local_addr().unwrap();
    let second = listen_with(&spec, &options);
    assert_eq!(second.local_addr().unwrap(), spec);
    assert!(SockRef::from(&second).reuse_port().unwrap());
}

#[test]
fn address_in_use_names_the_address_and_keeps_the_errno() {
    let first = listen("tcp://127.0.0.1:0");
    let spec = first.local_addr().unwrap();
    let error = bind(&spec, &BindOptions::default()).expect_err("the port is taken");
    assert_eq!(error.op(), "bind");
    assert_eq!(error.raw_os_error(), Some(libc::EADDRINUSE));
    assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    assert_eq!(error.address(), spec.to_string());
    let message = error.to_string();
    assert_eq!(message, format!("bind {spec}: {}", io::Error::from_raw_os_error(libc::EADDRINUSE)));

    let io_error = io::Error::from(error);
    assert_eq!(io_error.kind(), io::ErrorKind::AddrInUse);
    assert_eq!(io_error.to_string(), message);
    let inner = io_error.get_ref().and_then(|e| e.downcast_ref::<Error>()).expect("downcast");
    assert_eq!(inner.raw_os_error(), Some(libc::EADDRINUSE));
}

#[test]
fn try_accept_on_an_empty_listener_would_block() {
    let listener = listen("tcp://127.0.0.1:0");
    let error = listener.try_accept().expect_err("nothing is queued");
    assert_eq!(error.kind(), io::ErrorKind::WouldBlock);

    // Once a connection is queued, the blocking accept takes it.
    let _client = connect(&listener);
    accept(&listener);
    assert_eq!(listener.try_accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn listeners_are_nonblocking_and_accepted_streams_blocking_all_cloexec() {
    let listener = listen("tcp://127.0.0.1:0");
    assert!(is_cloexec(&listener));
    assert!(is_nonblocking(&listener));
    let _client = connect(&listener);
    let (stream, _) = accept(&listener);
    assert!(is_cloexec(&stream));
    assert!(!is_nonblocking(&stream));
    let clone = listener.try_clone().unwrap();
    assert!(is_cloexec(&clone));
    assert!(is_nonblocking(&clone));
}

#[test]
fn accept_waits_for_a_connection_that_comes_later() {
    let listener = Arc::new(listen("tcp://127.0.0.1:0"));
    let address = listener.local_addr().unwrap().socket_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiting = Arc::clone(&listener);
    let result = within("accept a later connection", move || {
        let acceptor = std::thread::spawn(move || {
            tx.send(()).unwrap();
            waiting.accept().map(|(_, peer)| peer.to_string())
        });
        // Connect once the acceptor is about to wait; accept must work either way.
        rx.recv().unwrap();
        let client = TcpStream::connect(address).unwrap();
        let peer = acceptor.join().unwrap().unwrap();
        (peer, client.local_addr().unwrap().to_string())
    });
    assert_eq!(result.0, result.1);
}

#[test]
fn two_handles_accept_on_two_threads() {
    let listener = listen("tcp://127.0.0.1:0");
    let address = listener.local_addr().unwrap().socket_addr().unwrap();
    let handles = [listener.try_clone().unwrap(), listener.try_clone().unwrap()];
    let accepted = within("two accepts", move || {
        let threads = handles.map(|handle| std::thread::spawn(move || handle.accept().map(|_| ())));
        let clients = [TcpStream::connect(address).unwrap(), TcpStream::connect(address).unwrap()];
        let results = threads.map(|t| t.join().unwrap());
        drop(clients);
        results
    });
    for result in accepted {
        result.unwrap();
    }
}

#[test]
fn into_std_listeners() {
    let listener = listen("tcp://127.0.0.1:0");
    let listener = listener.into_unix_listener().expect_err("a TCP listener");
    let std_listener = listener.into_tcp_listener().expect("a TCP listener");
    assert!(is_nonblocking(&std_listener));
    let client = TcpStream::connect(std_listener.local_addr().unwrap()).unwrap();
    let (stream, _) = within("accept", move || {
        // Nonblocking: the connection is normally queued already; yield until it is.
        let stream = loop {
            match std_listener.accept() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                other => break other,
            }
        };
        stream.unwrap()
    });
    assert_eq!(stream.peer_addr().unwrap(), client.local_addr().unwrap());
}

#[test]
fn streams_convert_to_std() {
    let listener = listen("tcp://127.0.0.1:0");
    let _client = connect(&listener);
    let (stream, _) = accept(&listener);
    let stream = Stream::Tcp(stream.into_tcp().expect("TCP"));
    assert!(stream.into_unix().is_none());
}
