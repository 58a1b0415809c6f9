//! Listen addresses written as strings: [`Spec`], its parser and its canonical printed form.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

/// Something a cluster can listen on.
///
/// Parsed from (and printed as) one of these forms; printing gives the canonical form, and
/// parsing what was printed gives the same `Spec` back:
///
/// | form | meaning |
/// | --- | --- |
/// | `tcp://127.0.0.1:8080`, `tcp://[::1]:0` | a TCP listener |
/// | `127.0.0.1:8080`, `[::1]:8080` | the same, without the scheme |
/// | `udp://0.0.0.0:5353`, `udp://[::1]:53` | a bound UDP socket |
/// | `unix:///run/app.sock` | a Unix stream listener at an absolute path |
/// | `unix:relative/app.sock` | the same at a path relative to the current directory |
/// | `unix:@name` | a Linux abstract socket name (the bytes after `@`) |
/// | `fd://3` | a socket this process inherited as descriptor 3 |
/// | `systemd:web`, `systemd:web:1` | the first (the second) socket systemd passed under the name `web` |
///
/// Hosts are IP literals only: nothing is resolved. An IPv6 scope may be given as a number
/// (`[fe80::1%2]:80`). A path or abstract name that is not UTF-8 prints lossily, so only such
/// specs do not round-trip; a relative path whose text starts with `@` prints as `unix:./@…`,
/// which names the same file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Spec {
    /// A TCP listener on this address (port 0 asks the kernel for a free port).
    Tcp(SocketAddr),
    /// A UDP socket bound to this address.
    Udp(SocketAddr),
    /// A Unix stream listener at this path, absolute or relative to the current directory.
    Unix(PathBuf),
    /// A Unix stream listener at this Linux abstract name (without the leading NUL byte).
    UnixAbstract(Vec<u8>),
    /// A socket the process inherited at this descriptor number; it is duplicated, never
    /// taken over.
    Fd(RawFd),
    /// A socket systemd passed the process by socket activation (`sd_listen_fds(3)`): the
    /// `index`-th (from 0) of those `LISTEN_FDNAMES` names `name` (`FileDescriptorName=` in
    /// the `.socket` unit, by default the unit's name; `unknown` when no names were passed).
    /// Several sockets share a name when one `.socket` unit has several `Listen…=` lines.
    ///
    /// Only a process that took systemd's sockets can turn the name into a descriptor: a herd
    /// primary does, at its start (see `herd::Cluster`); [`bind`](crate::bind) alone refuses
    /// it. Printed `systemd:NAME`, or `systemd:NAME:INDEX` when `index` is not 0. A name is
    /// what systemd allows in `LISTEN_FDNAMES`: 1 to 255 printable ASCII characters, no `:`.
    Systemd {
        /// The name, as `LISTEN_FDNAMES` spells it.
        name: String,
        /// Which of the sockets of that name, from 0.
        index: usize,
    },
}

/// The kind of an address, spelled as Node's `cluster` module spells `addressType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressType {
    /// TCP over IPv4, printed `4`.
    Tcp4,
    /// TCP over IPv6, printed `6`.
    Tcp6,
    /// A Unix socket (path or abstract name), printed `-1`.
    Unix,
    /// UDP over IPv4, printed `udp4`.
    Udp4,
    /// UDP over IPv6, printed `udp6`.
    Udp6,
}

impl fmt::Display for AddressType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressType::Tcp4 => "4",
            AddressType::Tcp6 => "6",
            AddressType::Unix => "-1",
            AddressType::Udp4 => "udp4",
            AddressType::Udp6 => "udp6",
        })
    }
}

/// A string that is not a listen address; its message quotes the input and says what was
/// expected, e.g. `invalid listen address "tcp://1.2.3:80": expected an IP address`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid listen address {input:?}: expected {expected}")]
pub struct ParseError {
    input: String,
    expected: Cow<'static, str>,
}

impl ParseError {
    /// The string that failed to parse.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What the parser expected instead, e.g. `an IP address`.
    pub fn expected(&self) -> &str {
        &self.expected
    }
}

impl Spec {
    /// Node's `addressType` for this spec; `None` for [`Spec::Fd`] and [`Spec::Systemd`],
    /// whose kind is only known once the descriptor is inspected (see
    /// [`Listener::local_addr`](crate::Listener::local_addr)).
    pub fn address_type(&self) -> Option<AddressType> {
        Some(match self {
            Spec::Tcp(SocketAddr::V4(_)) => AddressType::Tcp4,
            Spec::Tcp(SocketAddr::V6(_)) => AddressType::Tcp6,
            Spec::Udp(SocketAddr::V4(_)) => AddressType::Udp4,
            Spec::Udp(SocketAddr::V6(_)) => AddressType::Udp6,
            Spec::Unix(_) | Spec::UnixAbstract(_) => AddressType::Unix,
            Spec::Fd(_) | Spec::Systemd { .. } => return None,
        })
    }

    /// The socket address of a TCP or UDP spec.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Spec::Tcp(address) | Spec::Udp(address) => Some(*address),
            _ => None,
        }
    }

    /// The port of a TCP or UDP spec.
    pub fn port(&self) -> Option<u16> {
        self.socket_addr().map(|address| address.port())
    }

    /// Whether this is a datagram (UDP) spec. An inherited [`Spec::Fd`] or [`Spec::Systemd`]
    /// says `false`: its kind is only known once inspected.
    pub fn is_datagram(&self) -> bool {
        matches!(self, Spec::Udp(_))
    }

    /// The same spec with another port, for reporting the real port after binding port 0.
    /// Specs without a port are returned unchanged.
    pub fn with_port(&self, port: u16) -> Spec {
        match self {
            Spec::Tcp(address) => Spec::Tcp(SocketAddr::new(address.ip(), port)),
            Spec::Udp(address) => Spec::Udp(SocketAddr::new(address.ip(), port)),
            other => other.clone(),
        }
    }

    /// The spec as seen from `cwd`: a relative Unix path becomes `cwd` joined with it, as
    /// Node's `path.resolve` makes it in a worker, so every process names the same file.
    /// Other specs are returned unchanged.
    ///
    /// `..` components are kept rather than folded away: through a symbolic link `a/link/..`
    /// is not `a`, and the kernel will resolve them the same way for every process.
    pub fn resolve(&self, cwd: &Path) -> Spec {
        match self {
            Spec::Unix(path) => Spec::Unix(resolve_path(path, cwd)),
            other => other.clone(),
        }
    }
}

/// `path` if absolute, else `cwd` joined with `path` (leaving out `.` components).
pub(crate) fn resolve_path(path: &Path, cwd: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let mut resolved = cwd.to_path_buf();
    resolved.extend(path.components().filter(|c| *c != Component::CurDir));
    resolved
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Spec::Tcp(address) => write!(f, "tcp://{address}"),
            Spec::Udp(address) => write!(f, "udp://{address}"),
            Spec::Unix(path) if path.is_absolute() => write!(f, "unix://{}", path.display()),
            // `unix:@` means an abstract name, so a relative path that starts with `@` needs
            // the `./` that keeps it a path.
            Spec::Unix(path) if path.as_os_str().as_encoded_bytes().starts_with(b"@") => {
                write!(f, "unix:./{}", path.display())
            }
            Spec::Unix(path) => write!(f, "unix:{}", path.display()),
            Spec::UnixAbstract(name) => write!(f, "unix:@{}", String::from_utf8_lossy(name)),
            Spec::Fd(fd) => write!(f, "fd://{fd}"),
            Spec::Systemd { name, index: 0 } => write!(f, "systemd:{name}"),
            Spec::Systemd { name, index } => write!(f, "systemd:{name}:{index}"),
        }
    }
}

impl FromStr for Spec {
    type Err = ParseError;

    fn from_str(input: &str) -> Result<Spec, ParseError> {
        parse(input).map_err(|expected| ParseError { input: input.to_owned(), expected })
    }
}

/// What the parser expected where it stopped.
type Expected = Cow<'static, str>;

fn parse(input: &str) -> Result<Spec, Expected> {
    if input.is_empty() {
        return Err("an address such as tcp://127.0.0.1:8080 or unix:///run/app.sock".into());
    }
    if let Some(rest) = input.strip_prefix("unix:") {
        return parse_unix(rest);
    }
    if let Some(rest) = input.strip_prefix("systemd:") {
        return parse_systemd(rest);
    }
    match input.split_once("://") {
        Some(("tcp", rest)) => parse_socket_addr(rest).map(Spec::Tcp),
        Some(("udp", rest)) => parse_socket_addr(rest).map(Spec::Udp),
        Some(("fd", rest)) => parse_fd(rest).map(Spec::Fd),
        Some((scheme, _)) => {
            Err(format!("a scheme of tcp, udp, unix, fd or systemd, not {scheme:?}").into())
        }
        None => parse_socket_addr(input).map(Spec::Tcp),
    }
}

/// `ip:port` or `[ipv6]:port`, with the error naming the part that is wrong.
fn parse_socket_addr(text: &str) -> Result<SocketAddr, Expected> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("a closing ] after the IPv6 address")?;
        let (host, scope) = match host.split_once('%') {
            Some((host, scope)) => {
                (host, scope.parse::<u32>().map_err(|_| "a numeric IPv6 scope id after %")?)
            }
            None => (host, 0),
        };
        let ip: Ipv6Addr = host.parse().map_err(|_| "an IPv6 address in brackets")?;
        let port = after.strip_prefix(':').ok_or("a port after the address, as [::1]:8080")?;
        return Ok(SocketAddrV6::new(ip, parse_port(port)?, 0, scope).into());
    }
    let (host, port) = text.rsplit_once(':').ok_or("a port after the address, as 127.0.0.1:80")?;
    if host.contains(':') {
        return Err("an IPv6 address in brackets, as [::1]:8080".into());
    }
    let ip: Ipv4Addr = host.parse().map_err(|_| "an IP address")?;
    Ok(SocketAddrV4::new(ip, parse_port(port)?).into())
}

fn parse_port(text: &str) -> Result<u16, Expected> {
    if text.is_empty() {
        return Err("a port after the colon".into());
    }
    // Digits only: `u16::from_str` would also take a leading `+`.
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a port number".into());
    }
    text.parse().map_err(|_| "a port from 0 to 65535".into())
}

fn parse_unix(rest: &str) -> Result<Spec, Expected> {
    if let Some(name) = rest.strip_prefix('@') {
        if name.is_empty() {
            return Err("an abstract socket name after unix:@".into());
        }
        return Ok(Spec::UnixAbstract(name.as_bytes().to_vec()));
    }
    let path = match rest.strip_prefix("//") {
        None => rest,
        Some(path) if path.is_empty() || path.starts_with('/') => path,
        Some(_) => {
            return Err("an absolute path after unix:// (unix:///run/app.sock), \
                        or unix:relative/path"
                .into());
        }
    };
    if path.is_empty() {
        return Err("a socket path after unix:".into());
    }
    if path.contains('\0') {
        return Err("a socket path without NUL bytes".into());
    }
    Ok(Spec::Unix(PathBuf::from(path)))
}

fn parse_fd(text: &str) -> Result<RawFd, Expected> {
    let expected = "a descriptor number (0 or more) after fd://";
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(expected.into());
    }
    text.parse().map_err(|_| expected.into())
}

/// `NAME` or `NAME:INDEX`, NAME as systemd allows it in `LISTEN_FDNAMES` (`sd_listen_fds(3)`,
/// `FileDescriptorName=` in `systemd.socket(5)`): 1 to 255 printable ASCII characters, no `:`.
fn parse_systemd(rest: &str) -> Result<Spec, Expected> {
    let (name, index) = match rest.split_once(':') {
        Some((name, index)) => {
            if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                return Err("a socket index (0 or more) after systemd:NAME:".into());
            }
            let index = index.parse().map_err(|_| "a socket index that fits in a usize")?;
            (name, index)
        }
        None => (rest, 0),
    };
    if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err("a socket name after systemd: (1 to 255 printable ASCII characters, \
                    as LISTEN_FDNAMES carries it)"
            .into());
    }
    Ok(Spec::Systemd { name: name.to_owned(), index })
}
