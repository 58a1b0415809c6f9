//! The registry key, spelled exactly as Node's `cluster` spells it, and the worker-side rule
//! that picks its `index`.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use herd_handle::Spec;

/// A handle's key: `address:port:addressType:fd:index`, as Node's primary builds it in
/// `queryServer`. Examples: `127.0.0.1:8000:4:undefined:0`, `::1:0:6:undefined:0`,
/// `0.0.0.0:41234:udp4:-1:0`, `/abs/app.sock:-1:-1:undefined:0`, `null:null:null:3:0`.
///
/// Spelling, field by field, with Node's JavaScript values printed as Node prints them:
/// - `address`: the IP as written by `Ipv4Addr`/`Ipv6Addr` (no brackets), the unix path, an
///   abstract name as `@name`, or `null` for an inherited descriptor;
/// - `port`: the port, `-1` for unix sockets, `null` for an inherited descriptor;
/// - `addressType`: `4`, `6`, `-1`, `udp4`, `udp6`, or `null` for an inherited descriptor;
/// - `fd`: **`undefined` when there is no descriptor** (TCP and unix listens, as Node leaves the
///   argument unset), `-1` for UDP (dgram passes -1), the number for `fd://N`;
/// - `index`: see [`Indexes`].
///
/// Bind options (backlog, flags, permissions) are not part of the key: the first requester's
/// options apply to everyone who shares the handle, as in Node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    tuple: String,
    index: u32,
}

impl Key {
    /// The key of `spec` at `index`.
    pub fn new(spec: &Spec, index: u32) -> Key {
        Key { tuple: tuple(spec), index }
    }

    /// `address:port:addressType:fd`, the part shared by every index (Node's `indexesKey`).
    pub fn tuple(&self) -> &str {
        &self.tuple
    }

    /// The index.
    pub fn index(&self) -> u32 {
        self.index
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.tuple, self.index)
    }
}

/// Node's `indexesKey` for a spec: `address:port:addressType:fd`.
pub fn tuple(spec: &Spec) -> String {
    let kind = spec.address_type().map(|t| t.to_string());
    match spec {
        Spec::Tcp(addr) => {
            format!("{}:{}:{}:undefined", addr.ip(), addr.port(), kind.unwrap_or_default())
        }
        Spec::Udp(addr) => format!("{}:{}:{}:-1", addr.ip(), addr.port(), kind.unwrap_or_default()),
        Spec::Unix(path) => format!("{}:-1:-1:undefined", path.display()),
        Spec::UnixAbstract(name) => format!("@{}:-1:-1:undefined", String::from_utf8_lossy(name)),
        Spec::Fd(fd) => format!("null:null:null:{fd}"),
        // Only a worker's own bookkeeping (`Indexes`) sees it: the primary keys the descriptor
        // the name stands for, as `fd://`.
        Spec::Systemd { .. } => format!("null:null:null:{spec}"),
    }
}

/// The worker-side rule that chooses a listen's index (Node's `cluster._getServer`).
///
/// Each tuple keeps the indexes of its live listens. A new listen takes the next index; an
/// index is not reused while any listen on the tuple is alive; when the last one closes the
/// tuple starts again at 0. So the first listen on an address in **every** worker is index 0,
/// and all workers share one handle, while a second concurrent listen on the same address in
/// one worker is index 1: a handle, and a bind, of its own.
#[derive(Debug, Default)]
pub struct Indexes {
    tuples: HashMap<String, TupleIndexes>,
}

#[derive(Debug, Default)]
struct TupleIndexes {
    next: u32,
    live: BTreeSet<u32>,
}

impl Indexes {
    /// The key for a new listen on `spec`, whose index is now live.
    pub fn take(&mut self, spec: &Spec) -> Key {
        let tuple = tuple(spec);
        let entry = self.tuples.entry(tuple.clone()).or_default();
        let index = entry.next;
        entry.next += 1;
        entry.live.insert(index);
        Key { tuple, index }
    }

    /// The listen with `key` has closed (or never succeeded): its index is no longer live.
    pub fn release(&mut self, key: &Key) {
        if let Some(entry) = self.tuples.get_mut(&key.tuple) {
            entry.live.remove(&key.index);
            if entry.live.is_empty() {
                self.tuples.remove(&key.tuple);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_spelled_as_node_spells_them() {
        let cases = [
            ("tcp://127.0.0.1:8000", 0, "127.0.0.1:8000:4:undefined:0"),
            ("tcp://[::1]:0", 0, "::1:0:6:undefined:0"),
            ("0.0.0.0:80", 1, "0.0.0.0:80:4:undefined:1"),
            ("udp://0.0.0.0:41234", 0, "0.0.0.0:41234:udp4:-1:0"),
            ("udp://[::]:53", 0, ":::53:udp6:-1:0"),
            ("unix:///abs/path.sock", 0, "/abs/path.sock:-1:-1:undefined:0"),
            ("unix:@name", 2, "@name:-1:-1:undefined:2"),
            ("fd://3", 0, "null:null:null:3:0"),
        ];
        for (spec, index, expected) in cases {
            let key = Key::new(&spec.parse().unwrap(), index);
            assert_eq!(key.to_string(), expected, "{spec}");
            assert_eq!(key.index(), index);
            assert_eq!(format!("{}:{}", key.tuple(), index), expected);
        }
    }

    #[test]
    fn index_rule_follows_node() {
        let spec: Spec = "tcp://127.0.0.1:8000".parse().unwrap();
        let other: Spec = "tcp://127.0.0.1:8001".parse().unwrap();
        let mut worker = Indexes::default();
        let first = worker.take(&spec);
        let second = worker.take(&spec);
        assert_eq!((first.index(), second.index()), (0, 1));
        // Another address has its own count.
        assert_eq!(worker.take(&other).index(), 0);
        // Index 0 closes while 1 lives: the next listen takes 2, never a live or reused one.
        worker.release(&first);
        assert_eq!(worker.take(&spec).index(), 2);
        // Every listen on the tuple closed: back to 0.
        worker.release(&second);
        worker.release(&Key::new(&spec, 2));
        assert_eq!(worker.take(&spec).index(), 0);
        // Every worker's first listen is index 0, so they share one key.
        let mut another_worker = Indexes::default();
        assert_eq!(another_worker.take(&spec), Key::new(&spec, 0));
    }
}
