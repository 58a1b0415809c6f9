//! Parsing and printing listen address specs.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::{Path, PathBuf};

use herd_handle::{AddressType, Spec};

fn tcp(s: &str) -> Spec {
    Spec::Tcp(s.parse().unwrap())
}

fn udp(s: &str) -> Spec {
    Spec::Udp(s.parse().unwrap())
}

fn systemd(name: &str, index: usize) -> Spec {
    Spec::Systemd { name: name.to_owned(), index }
}

fn unix(p: &str) -> Spec {
    Spec::Unix(PathBuf::from(p))
}

#[test]
fn every_form_parses_and_round_trips() {
    let scoped = SocketAddrV6::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1), 80, 0, 2);
    // (input, parsed, canonical printed form)
    let cases = [
        ("tcp://127.0.0.1:8080", tcp("127.0.0.1:8080"), "tcp://127.0.0.1:8080"),
        ("tcp://[::1]:0", tcp("[::1]:0"), "tcp://[::1]:0"),
        ("tcp://0.0.0.0:65535", tcp("0.0.0.0:65535"), "tcp://0.0.0.0:65535"),
        ("tcp://[fe80::1%2]:80", Spec::Tcp(SocketAddr::V6(scoped)), "tcp://[fe80::1%2]:80"),
        ("udp://0.0.0.0:5353", udp("0.0.0.0:5353"), "udp://0.0.0.0:5353"),
        ("udp://[::1]:53", udp("[::1]:53"), "udp://[::1]:53"),
        ("unix:///run/app.sock", unix("/run/app.sock"), "unix:///run/app.sock"),
        ("unix:/run/app.sock", unix("/run/app.sock"), "unix:///run/app.sock"),
        ("unix:relative/app.sock", unix("relative/app.sock"), "unix:relative/app.sock"),
        ("unix:app.sock", unix("app.sock"), "unix:app.sock"),
        ("unix:../up/app.sock", unix("../up/app.sock"), "unix:../up/app.sock"),
        ("unix:./@at.sock", unix("./@at.sock"), "unix:./@at.sock"),
        ("unix:@name", Spec::UnixAbstract(b"name".to_vec()), "unix:@name"),
        ("unix:@with space", Spec::UnixAbstract(b"with space".to_vec()), "unix:@with space"),
        ("unix:@@", Spec::UnixAbstract(b"@".to_vec()), "unix:@@"),
        ("fd://3", Spec::Fd(3), "fd://3"),
        ("fd://0", Spec::Fd(0), "fd://0"),
        ("systemd:web", systemd("web", 0), "systemd:web"),
        ("systemd:web:0", systemd("web", 0), "systemd:web"),
        ("systemd:app.socket:2", systemd("app.socket", 2), "systemd:app.socket:2"),
        ("systemd:with space", systemd("with space", 0), "systemd:with space"),
        ("127.0.0.1:8080", tcp("127.0.0.1:8080"), "tcp://127.0.0.1:8080"),
        ("[::1]:8080", tcp("[::1]:8080"), "tcp://[::1]:8080"),
        ("tcp://127.0.0.1:080", tcp("127.0.0.1:80"), "tcp://127.0.0.1:80"),
    ];
    for (input, expected, canonical) in cases {
        let parsed: Spec = input.parse().unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(parsed, expected, "parse {input:?}");
        assert_eq!(parsed.to_string(), canonical, "print {input:?}");
        assert_eq!(canonical.parse::<Spec>().unwrap(), expected, "reparse {canonical:?}");
    }
}

#[test]
fn a_relative_path_starting_with_at_prints_as_a_path() {
    let spec = unix("@odd.sock");
    assert_eq!(spec.to_string(), "unix:./@odd.sock");
    assert_eq!(spec.to_string().parse::<Spec>().unwrap(), unix("./@odd.sock"));
}

#[test]
fn bad_specs_are_errors_that_quote_the_input() {
    // (input, part of what was expected)
    let cases = [
        ("", "an address such as"),
        ("tcp://1.2.3:80", "an IP address"),
        ("tcp://localhost:80", "an IP address"),
        ("tcp://:80", "an IP address"),
        ("localhost:80", "an IP address"),
        ("localhost", "a port"),
        ("http://127.0.0.1:80", "a scheme of tcp, udp, unix, fd or systemd"),
        ("TCP://127.0.0.1:80", "a scheme"),
        ("tcp://127.0.0.1", "a port"),
        ("tcp://127.0.0.1:", "a port"),
        ("tcp://127.0.0.1:65536", "a port from 0 to 65535"),
        ("udp://[::1]:99999", "a port from 0 to 65535"),
        ("tcp://127.0.0.1:+80", "a port number"),
        ("tcp://127.0.0.1:http", "a port number"),
        ("tcp://127.0.0.1:-1", "a port number"),
        ("tcp://::1:80", "an IPv6 address in brackets"),
        ("tcp://[::1]", "a port"),
        ("tcp://[::1:80", "a closing ]"),
        ("tcp://[1.2.3.4]:80", "an IPv6 address"),
        ("tcp://[fe80::1%eth0]:80", "a numeric IPv6 scope id"),
        ("unix:", "a socket path"),
        ("unix://", "a socket path"),
        ("unix://host/app.sock", "an absolute path after unix://"),
        ("unix:/a\0b", "without NUL bytes"),
        ("unix:@", "an abstract socket name"),
        ("fd://", "a descriptor number"),
        ("fd://-1", "a descriptor number"),
        ("fd://x", "a descriptor number"),
        ("fd://3x", "a descriptor number"),
        ("fd://99999999999", "a descriptor number"),
        ("systemd:", "a socket name after systemd:"),
        ("systemd::1", "a socket name after systemd:"),
        ("systemd:a\tb", "a socket name after systemd:"),
        ("systemd:caf\u{e9}", "a socket name after systemd:"),
        ("systemd:web:", "a socket index"),
        ("systemd:web:x", "a socket index"),
        ("systemd:web:1:2", "a socket index"),
        ("systemd:web:-1", "a socket index"),
    ];
    for (input, expected) in cases {
        let error = input.parse::<Spec>().expect_err(input);
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("invalid listen address {input:?}: expected ")),
            "{input:?} gave {message:?}"
        );
        assert!(message.contains(expected), "{input:?} gave {message:?}");
        assert_eq!(error.input(), input);
    }
}

#[test]
fn parse_error_message_is_exact() {
    let error = "tcp://1.2.3:80".parse::<Spec>().unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"invalid listen address "tcp://1.2.3:80": expected an IP address"#
    );
    assert_eq!(error.expected(), "an IP address");
}

#[test]
fn address_types_print_as_node() {
    let cases = [
        ("tcp://127.0.0.1:1", Some(AddressType::Tcp4), "4"),
        ("tcp://[::1]:1", Some(AddressType::Tcp6), "6"),
        ("unix:///a.sock", Some(AddressType::Unix), "-1"),
        ("unix:@a", Some(AddressType::Unix), "-1"),
        ("udp://127.0.0.1:1", Some(AddressType::Udp4), "udp4"),
        ("udp://[::1]:1", Some(AddressType::Udp6), "udp6"),
        ("fd://3", None, ""),
    ];
    for (input, expected, printed) in cases {
        let kind = input.parse::<Spec>().unwrap().address_type();
        assert_eq!(kind, expected, "{input}");
        assert_eq!(kind.map(|k| k.to_string()).unwrap_or_default(), printed, "{input}");
    }
}

#[test]
fn ports_datagrams_and_port_replacement() {
    let spec = tcp("127.0.0.1:0");
    assert_eq!(spec.port(), Some(0));
    assert_eq!(spec.with_port(4321), tcp("127.0.0.1:4321"));
    assert_eq!(udp("[::1]:0").with_port(53), udp("[::1]:53"));
    assert_eq!(udp("[::1]:53").port(), Some(53));
    assert!(udp("[::1]:53").is_datagram());
    assert!(!spec.is_datagram());
    for other in [unix("/a"), Spec::UnixAbstract(b"a".to_vec()), Spec::Fd(3)] {
        assert_eq!(other.port(), None);
        assert_eq!(other.socket_addr(), None);
        assert!(!other.is_datagram());
        assert_eq!(other.with_port(80), other);
    }
}

#[test]
fn resolve_makes_relative_unix_paths_absolute() {
    let cwd = Path::new("/srv/app");
    assert_eq!(unix("run/app.sock").resolve(cwd), unix("/srv/app/run/app.sock"));
    assert_eq!(unix("./app.sock").resolve(cwd).to_string(), "unix:///srv/app/app.sock");
    // `..` is kept for the kernel to resolve: through a symbolic link it is not lexical.
    assert_eq!(unix("../x.sock").resolve(cwd).to_string(), "unix:///srv/app/../x.sock");
    for unchanged in [unix("/abs.sock"), tcp("127.0.0.1:1"), Spec::Fd(4)] {
        assert_eq!(unchanged.resolve(cwd), unchanged);
    }
}
