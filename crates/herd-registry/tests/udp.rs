//! UDP is always shared, whatever the policy: every worker gets the one bound socket.

mod util;

use std::net::UdpSocket;

use herd_registry::Mode;
use util::{DEADLINE, Primary, inode, is_cloexec};

#[test]
fn udp_under_rr_is_one_shared_socket() {
    let mut primary = Primary::new("rr", 1);
    let first = primary.query(1, "udp://127.0.0.1:0", 0);
    let second = primary.query(2, "udp://127.0.0.1:0", 0);
    assert_eq!(first.key.to_string(), "127.0.0.1:0:udp4:-1:0");
    assert_eq!(second.key, first.key);
    assert_eq!((first.mode, second.mode), (Mode::Datagram, Mode::Datagram));
    assert_eq!(inode(&first.fd), inode(&second.fd), "both workers hold the same socket");
    assert!(is_cloexec(&first.fd) && is_cloexec(&second.fd));
    assert_eq!(primary.registry.handoff_stats(&first.key), None, "no hand-off for UDP");
    let address = first.address.socket_addr().expect("an IP address");
    assert_ne!(address.port(), 0);
    assert_eq!(second.address, first.address);

    // A datagram sent to the address is there to read on a worker's descriptor.
    let sockets = [first, second].map(|g| UdpSocket::from(g.fd));
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"hello", address).unwrap();
    sockets[1].set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0; 16];
    let (n, from) = sockets[1].recv_from(&mut buf).expect("the datagram arrives");
    assert_eq!((&buf[..n], from), (&b"hello"[..], sender.local_addr().unwrap()));
}
