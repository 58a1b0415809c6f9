//! The control socket's protocol ([`Cluster::control_socket`](crate::Cluster::control_socket))
//! and a client for it: what `herd status`, `herd reload`, `herd scale` and `herd stop` speak.
//!
//! **JSON lines** over a unix stream socket: the client writes one [`Request`] as one line of
//! JSON (at most [`MAX_REQUEST_BYTES`]), the primary answers with [`Reply`] lines and closes
//! the connection when the request is done. JSON rather than herd's postcard because a person
//! debugging a cluster can speak it by hand (`echo '{"cmd":"status"}' | socat - UNIX:PATH`)
//! and scripts can read it (`herd status --json | jq`); the messages are small and rare, so
//! the cost of text does not matter here.
//!
//! ```text
//! > {"cmd":"status"}
//! < {"status":{"name":"app","worker_count":2,...,"primary_pid":4100,"workers":[{"id":1,"pid":4101,...}],...}}
//! > {"cmd":"reload"}
//! < {"restarting":{"workers":2}}
//! < {"replaced":{"place":0,"old":1,"new":3,"pid":4120,"ready_seconds":1.01}}
//! < {"replaced":{"place":1,"old":2,"new":4,"pid":4131,"ready_seconds":1.02}}
//! < {"restarted":{"replaced":2,"seconds":2.3}}
//! > {"cmd":"scale","workers":4}
//! < {"scaled":{"from":2,"to":4}}
//! > {"cmd":"stop"}
//! < {"stopping":{"workers":4,"now":false}}
//! < "drained"
//! ```
//!
//! Who may connect: the socket file is made mode `0600`, and every connection is checked by
//! the credentials the kernel took at its `connect(2)` (`SO_PEERCRED`, `unix(7)`): only the
//! primary's effective uid and root are served; anyone else gets one [`Reply::Error`] line
//! saying so, and the refusal is logged.
//!
//! The primary's event loop is never held by a client: each connection is read and written
//! by a thread of its own, with [`IO_TIMEOUT`] on every read and write and at most
//! [`MAX_CONNECTIONS`] at once; the loop only takes parsed requests from a queue and posts
//! replies into a bounded one (a client that does not read its replies is dropped).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest request line the primary reads: 4 KiB. A longer one is refused.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// How long the primary waits for a request line after a connection, and for each write of
/// a reply to be taken: 5 s. A client slower than that is disconnected.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The most control connections served at once: 16. Past it, the oldest connection that has
/// not sent its request yet is closed to make room (as idle clients must not lock
/// `herd status` out); if all of them are busy with requests, the new one is refused with an
/// error line (logged at most once a second).
pub const MAX_CONNECTIONS: usize = 16;

/// How the error of a [`request`] or of a [`Replies`] item begins when the primary said
/// nothing within the timeout (`no answer from the cluster at PATH within N s`).
pub const NO_ANSWER: &str = "no answer from the cluster at";

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Request {
    /// The cluster's state: one [`Reply::Status`].
    Status,
    /// A rolling restart ([`Primary::restart_all`](crate::Primary::restart_all), as SIGHUP):
    /// [`Reply::Restarting`], a [`Reply::Replaced`] per place as it is replaced, then
    /// [`Reply::Restarted`], or [`Reply::Error`] if the restart aborted. A request while a
    /// restart runs is merged into it and answered at its end.
    Reload,
    /// As many workers as `workers` (from 1), added (as SIGTTIN) or removed (as SIGTTOU,
    /// highest places first): one [`Reply::Scaled`] once every new worker is online and every
    /// removed one has exited, or [`Reply::Error`] (0 or more than
    /// [`MAX_WORKERS`](crate::MAX_WORKERS) asked, a fork failed, a new worker died, or not
    /// done within the cluster's ready timeout plus its kill timeout).
    Scale {
        /// How many workers the cluster should count.
        workers: usize,
    },
    /// A graceful stop ([`Primary::disconnect_all`](crate::Primary::disconnect_all), as
    /// SIGTERM): [`Reply::Stopping`] at once, then [`Reply::Drained`] once every worker has
    /// exited. A primary that exits at the end of its stop (`herd run`) may close the
    /// connection before `Drained` is written: the end of the stream then means the same.
    ///
    /// While a stop is under way, a `stop` does what a second SIGTERM does: the hard stop
    /// ([`Primary::stop_now`](crate::Primary::stop_now)), every worker left killed at once
    /// (SIGKILL); [`Reply::Stopping`] says so (`now`), and [`Reply::Drained`] follows as
    /// above. Every client of either stop hears the end.
    Stop,
}

/// What the primary answers, one JSON line each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Reply {
    /// The answer to [`Request::Status`].
    Status(Box<ClusterStatus>),
    /// A rolling restart began (or, for a request merged into one under way, goes on):
    /// `workers` places will be replaced.
    Restarting {
        /// How many places it will roll from now.
        workers: usize,
    },
    /// The worker of `place` was replaced: its successor is ready and the predecessor is told
    /// to disconnect.
    Replaced {
        /// The place.
        place: usize,
        /// The worker replaced.
        old: crate::WorkerId,
        /// Its successor.
        new: crate::WorkerId,
        /// The successor's process id.
        pid: u32,
        /// From the successor's fork to its readiness, in seconds.
        ready_seconds: f64,
    },
    /// The rolling restart is done.
    Restarted {
        /// How many places it replaced.
        replaced: usize,
        /// How long it took, in seconds.
        seconds: f64,
    },
    /// The answer to [`Request::Scale`].
    Scaled {
        /// Workers before.
        from: usize,
        /// Workers after.
        to: usize,
    },
    /// A stop began: `workers` workers are disconnected; or, with `now`, a stop was under
    /// way and the `workers` still running are killed at once (SIGKILL).
    Stopping {
        /// How many workers the cluster counted (with `now`: how many had not exited).
        workers: usize,
        /// The hard stop: a second `stop` (or SIGTERM) during a stop. Absent in the JSON of
        /// a primary that predates it: `false`.
        #[serde(default)]
        now: bool,
    },
    /// Every worker has exited and every socket is released.
    Drained,
    /// The request failed or was refused, in words (`restart aborted at place 0: ...`,
    /// `uid 65534 may not use this control socket (only uid 0 and root)`).
    Error {
        /// What went wrong.
        message: String,
    },
}

/// The cluster as [`Request::Status`] reports it: [`Primary::stats`]'s snapshot (its fields
/// side by side with these in the JSON object), and what a person asks of a cluster besides.
///
/// [`Primary::stats`]: crate::Primary::stats
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// [`Cluster::name`](crate::Cluster::name), if set.
    pub name: Option<String>,
    /// How many workers the cluster counts ([`Primary::worker_count`]: a place waiting for
    /// its respawn counts).
    ///
    /// [`Primary::worker_count`]: crate::Primary::worker_count
    pub worker_count: usize,
    /// A rolling restart is under way.
    pub restarting: bool,
    /// The open handles' keys, as Node prints them.
    pub handles: Vec<String>,
    /// Every worker, place and listener, with their counters.
    #[serde(flatten)]
    pub stats: crate::stats::ClusterStats,
}

/// Where `herd run` and [`Cluster::control_socket`](crate::Cluster::control_socket) callers
/// put a cluster named `name` by default: `$XDG_RUNTIME_DIR/herd/NAME.sock` when
/// `XDG_RUNTIME_DIR` is set (systemd's per-user runtime directory, mode 0700); else
/// `/run/herd/NAME.sock` for root; else `/tmp/herd-UID/NAME.sock`.
pub fn default_path(name: &str) -> PathBuf {
    default_dir().join(format!("{name}.sock"))
}

/// The directory of [`default_path`].
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("herd");
    }
    let (uid, _) = crate::sys::effective_ids();
    if uid == 0 { PathBuf::from("/run/herd") } else { PathBuf::from(format!("/tmp/herd-{uid}")) }
}

/// A connection to a control socket that has sent its request: [`Replies`] iterates over the
/// answer lines until the primary closes the connection.
pub struct Replies {
    reader: BufReader<UnixStream>,
    path: PathBuf,
    timeout: Option<Duration>,
}

/// Connects to the control socket at `path` and sends `request`. The write, and then each
/// reply line, is awaited for at most `timeout` (`None`: no limit). A primary that is
/// stopped (SIGSTOP) or hung still lets the connect through (the kernel queues it on the
/// listening socket, `listen(2)`), so without a timeout a client would wait for it forever.
///
/// # Errors
/// The server's uid (`SO_PEERCRED`) neither this process's nor root's: refused before
/// anything is sent. A socket file nobody listens on (`ECONNREFUSED`: a primary that died
/// without removing it): `no cluster runs at PATH (stale socket)`. Any other connect error
/// (`ENOENT`: no cluster there; `EACCES`: the file's mode), or the write's, naming the path;
/// the write not taken within `timeout`: `no answer from the cluster at PATH within N s`; or
/// the primary's refusal ([`Reply::Error`]) when it closed the connection before the request
/// was written.
pub fn request(
    path: &Path,
    request: &Request,
    timeout: Option<Duration>,
) -> Result<Replies, String> {
    let shown = path.display();
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("no cluster runs at {shown} (stale socket)")
        }
        _ => format!("connect to {shown}: {e}"),
    })?;
    // Whoever listens there must be us or root: a socket another user put in our place (a
    // directory of theirs on our default path) must not hear our `stop` and answer it.
    let peer = crate::sys::peer_credentials(std::os::fd::AsFd::as_fd(&stream))
        .map_err(|e| format!("{shown}: SO_PEERCRED: {e}"))?;
    let (uid, _) = crate::sys::effective_ids();
    if peer.uid != uid && peer.uid != 0 {
        return Err(format!(
            "{shown}: the process listening there (pid {}) runs as uid {}, neither yours \
             ({uid}) nor root's: not asking it",
            peer.pid, peer.uid
        ));
    }
    stream.set_read_timeout(timeout).map_err(|e| format!("{shown}: {e}"))?;
    stream.set_write_timeout(timeout).map_err(|e| format!("{shown}: {e}"))?;
    let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    line.push('\n');
    let written = stream.write_all(line.as_bytes());
    let mut replies = Replies { reader: BufReader::new(stream), path: path.to_owned(), timeout };
    if let Err(e) = written {
        if let Some(silence) = replies.silence(&e) {
            return Err(silence);
        }
        // A refused client may be closed on before its request is written (`EPIPE`): the
        // refusal waits in its receive queue, and says more than the broken pipe.
        return match replies.next() {
            Some(Ok(Reply::Error { message })) => Err(message),
            _ => Err(format!("write to {shown}: {e}")),
        };
    }
    Ok(replies)
}

impl Iterator for Replies {
    /// A reply; or a line that is no reply, or a read error, in words.
    type Item = Result<Reply, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(
                serde_json::from_str(line.trim_end())
                    .map_err(|e| format!("{}: not a reply ({e}): {line:?}", self.path.display())),
            ),
            Err(e) => Some(Err(self
                .silence(&e)
                .unwrap_or_else(|| format!("read from {}: {e}", self.path.display())))),
        }
    }
}

impl Replies {
    /// `e` is the timeout running out (`EAGAIN`, as `SO_RCVTIMEO` and `SO_SNDTIMEO` end a
    /// call, `socket(7)`): the primary said nothing in time, in words.
    fn silence(&self, e: &std::io::Error) -> Option<String> {
        let timed_out =
            matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
        let timeout = self.timeout.filter(|_| timed_out)?;
        Some(format!("{NO_ANSWER} {} within {} s", self.path.display(), seconds(timeout)))
    }
}

/// `2`, `0.5`, `1.25`: a duration in seconds, as a person writes it.
fn seconds(d: Duration) -> String {
    let text = format!("{:.3}", d.as_secs_f64());
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_the_json_lines_the_docs_show() {
        let line = |r: &Request| serde_json::to_string(r).unwrap();
        assert_eq!(line(&Request::Status), r#"{"cmd":"status"}"#);
        assert_eq!(line(&Request::Scale { workers: 4 }), r#"{"cmd":"scale","workers":4}"#);
        let parsed: Request = serde_json::from_str(r#"{"cmd":"reload"}"#).unwrap();
        assert_eq!(parsed, Request::Reload);
        let reply = Reply::Scaled { from: 2, to: 4 };
        assert_eq!(serde_json::to_string(&reply).unwrap(), r#"{"scaled":{"from":2,"to":4}}"#);
        assert_eq!(serde_json::to_string(&Reply::Drained).unwrap(), r#""drained""#);
    }

    #[test]
    fn timeouts_are_shown_in_seconds_as_a_person_writes_them() {
        assert_eq!(seconds(Duration::from_secs(2)), "2");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5");
        assert_eq!(seconds(Duration::from_millis(1250)), "1.25");
    }
}
