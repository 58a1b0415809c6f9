//! UDP sockets: bound, blocking, receiving.

mod util;

use std::net::UdpSocket;

use herd_handle::{BindOptions, Bound, Spec, bind};
use socket2::SockRef;
use util::{DEADLINE, is_cloexec, is_nonblocking};

/// Binds `spec`, sends one datagram to it from `client_spec`'s address family, receives it.
#[track_caller]
fn round_trip(spec: &str, client: &str, options: &BindOptions) -> UdpSocket {
    let spec: Spec = spec.parse().unwrap();
    let bound = bind(&spec, options).unwrap_or_else(|e| panic!("{e}"));
    let local = bound.local_addr().unwrap();
    assert_eq!(local, spec.with_port(local.port().unwrap()));
    assert_ne!(local.port(), Some(0));
    let Bound::Udp(socket) = bound else { panic!("a UDP socket for {spec}") };
    assert!(is_cloexec(&socket));
    assert!(!is_nonblocking(&socket), "UDP sockets stay blocking");

    let sender = UdpSocket::bind(client).unwrap();
    sender.send_to(b"datagram", local.socket_addr().unwrap()).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0; 16];
    let (len, from) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"datagram");
    assert_eq!(from, sender.local_addr().unwrap());
    socket
}

#[test]
fn udp_v4_binds_and_receives() {
    let socket = round_trip("udp://127.0.0.1:0", "127.0.0.1:0", &BindOptions::default());
    // SO_REUSEADDR is for TCP listeners; on UDP it would let another socket take the port.
    assert!(!SockRef::from(&socket).reuse_address().unwrap());
}

#[test]
fn udp_v6_binds_and_receives() {
    let options = BindOptions { ipv6_only: true, ..Default::default() };
    let socket = round_trip("udp://[::1]:0", "[::1]:0", &options);
    assert!(SockRef::from(&socket).only_v6().unwrap());
}

#[test]
fn udp_port_in_use() {
    let first = bind(&"udp://127.0.0.1:0".parse().unwrap(), &BindOptions::default()).unwrap();
    let spec = first.local_addr().unwrap();
    let error = bind(&spec, &BindOptions::default()).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EADDRINUSE));
    assert!(error.to_string().starts_with(&format!("bind {spec}: ")), "{error}");
}

#[test]
fn udp_reuse_port_shares_a_port() {
    let options = BindOptions { reuse_port: true, ..Default::default() };
    let first = bind(&"udp://127.0.0.1:0".parse().unwrap(), &options).unwrap();
    let spec = first.local_addr().unwrap();
    let second = bind(&spec, &options).unwrap();
    assert_eq!(second.local_addr().unwrap(), spec);
    assert!(second.into_listener().is_none());
}
