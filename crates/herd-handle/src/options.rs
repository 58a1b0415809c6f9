//! How to bind: [`BindOptions`].

/// Options for [`bind`](crate::bind). The fields are public; change the ones you need and
/// take the rest from the defaults, which follow Node and libuv:
///
/// ```
/// let options = herd_handle::BindOptions { backlog: 1024, ..Default::default() };
/// assert!(options.reuse_address && options.remove_stale);
/// ```
///
/// Options that do not apply to a spec are ignored (`ipv6_only` on IPv4, the Unix file options
/// on TCP, everything on an inherited [`Spec::Fd`](crate::Spec::Fd), which is already bound).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindOptions {
    /// The `listen(2)` backlog of stream listeners. Default 511, as Node: the kernel caps it at
    /// `net.core.somaxconn`.
    pub backlog: i32,
    /// `SO_REUSEADDR` on TCP listeners, default `true` as libuv always sets it: a restarted
    /// server can bind while old connections are in `TIME_WAIT`; it never lets two listeners
    /// share a port. UDP sockets do not get it: there it would let a second socket bind the
    /// same port, which Node's `dgram` only does on request.
    pub reuse_address: bool,
    /// `IPV6_V6ONLY` on IPv6 sockets, default `false`: a listener on `[::]` also takes IPv4.
    /// Set explicitly either way, as libuv does, so the `net.ipv6.bindv6only` sysctl does not
    /// decide.
    pub ipv6_only: bool,
    /// `SO_REUSEPORT` on TCP and UDP sockets, default `false`: lets several sockets bind the
    /// same port and the kernel spread connections among them.
    pub reuse_port: bool,
    /// Unix path listeners: make the socket file readable by user, group and others, as
    /// libuv's `uv_pipe_chmod(UV_READABLE)`. Default `false`.
    pub readable_all: bool,
    /// Unix path listeners: make the socket file writable by user, group and others (which is
    /// what lets them connect), as libuv's `uv_pipe_chmod(UV_WRITABLE)`. Default `false`.
    pub writable_all: bool,
    /// Unix path listeners: when the path is taken (`EADDRINUSE`) by a socket file that nobody
    /// listens on any more (a connect is refused), remove it and bind once more. Default
    /// `true`. Never removes anything that is not a socket, nor a socket something listens
    /// on (the probe's connection reaches that listener and closes at once).
    pub remove_stale: bool,
    /// Unix path listeners: bind the path relative to the current directory when that is
    /// shorter (see [`shorten`](crate::shorten)), which keeps long paths under the 108-byte
    /// `sun_path` limit. Default `true`, as Node.
    pub shorten_path: bool,
    /// Unix path listeners: give the socket file to this user and group (`lchown(2)`) right
    /// after the bind, so a process running as them (a worker under another uid) owns it, as
    /// if it had bound the path itself. Default `None`: the binder's own.
    pub owner: Option<(u32, u32)>,
}

impl Default for BindOptions {
    fn default() -> Self {
        BindOptions {
            backlog: 511,
            reuse_address: true,
            ipv6_only: false,
            reuse_port: false,
            readable_all: false,
            writable_all: false,
            remove_stale: true,
            shorten_path: true,
            owner: None,
        }
    }
}
